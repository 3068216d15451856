#pragma once
/// \file kernel_options.hpp
/// The options and result types of the analytic kernels (kernel.hpp).

#include <Eigen/Core>

#include "dual.hpp"
#include "errors.hpp"

namespace ntk {

/// Which Gram matrices to compute.
enum class KernelKind { nngp, ntk, both };

/// Options of the analytic kernels.
struct KernelOptions {
  DualOptions dual{};
  /// Σ^0 = xᵀx'/d (lecture eq. 12, Neural Tangents) when true; xᵀx' (the deep-limit setting of
  /// Radhakrishnan, Belkin & Uhler) when false.
  bool divide_by_dimension = true;
  /// Threads for OpenMP builds; 0 uses the OpenMP default.
  int threads = 0;

  void check(const char* function) const {
    dual.check(function);
    check_at_least(function, "threads", threads, 0);
  }
};

/// Gram matrices; a member is empty when its kind was not requested.
template <class Scalar>
struct Kernels {
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> nngp;
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> ntk;
};

/// Σ^l, Σ̇^l = σ_w² L^φ'(Σ^{l-1}) (0 for the first layer) and Θ^l after affine layer l.
template <class Scalar>
struct LayerKernels {
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> nngp, nngp_dot, ntk;
};

}  // namespace ntk
