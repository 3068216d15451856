#pragma once
/// \file ntk.hpp
/// The one include users need.

#include "activation_names.hpp"
#include "activations.hpp"
#include "conv.hpp"
#include "deep_limit.hpp"
#include "dual.hpp"
#include "dynamics.hpp"
#include "errors.hpp"
#include "gram.hpp"
#include "kernel.hpp"
#include "kernel_options.hpp"
#include "layers.hpp"
#include "network.hpp"
#include "quadrature.hpp"
#include "random.hpp"
#include "solvers.hpp"
#include "spec.hpp"
#include "version.hpp"
