#pragma once
// Lets the tests build with Catch2 v2.13 (Debian 12) and Catch2 v3.
#if defined(NTK_CATCH3)
#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
using Catch::Approx;
#else
#include <catch2/catch.hpp>
#endif
