#pragma once
/// \file ntk.hpp
/// The one include users need.

#include "activations.hpp"
#include "dual.hpp"
#include "errors.hpp"
#include "kernel.hpp"
#include "layers.hpp"
#include "quadrature.hpp"
#include "version.hpp"
