#if defined(NTK_CATCH3)
// Catch2 v3 provides main through Catch2::Catch2WithMain.
#else
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#endif
