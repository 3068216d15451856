#pragma once
/// \file kernel_options.hpp
/// The options and result types of the analytic kernels (kernel.hpp).

#include <Eigen/Core>
#include <algorithm>
#include <thread>

#include "dual.hpp"
#include "errors.hpp"

namespace ntk {

/// The most OpenMP threads a request may ask for: 1024, and never more than 8 per processor the
/// system reports (std::thread::hardware_concurrency; 8 when it reports none).  Far more threads
/// than processors only costs memory (each has a stack), and OpenMP runtimes abort or crash when
/// thread creation fails.
inline int max_threads() {
  const unsigned processors = std::thread::hardware_concurrency();
  const long bound = 8L * static_cast<long>(processors == 0 ? 1 : processors);
  return static_cast<int>(std::min(1024L, bound));
}

namespace detail {
/// Throws std::invalid_argument unless 0 <= threads <= max_threads().
inline void check_threads(const char* function, int threads) {
  detail::check_at_least(function, "threads", threads, 0);
  if (threads > max_threads())
    fail<std::invalid_argument>(function, "threads must be at most ", max_threads(),
                                " (8 per processor, at most 1024; 0 uses the OpenMP default) (got ", threads, ")");
}
}  // namespace detail

/// Which Gram matrices to compute.
enum class KernelKind { nngp, ntk, both };

/// Options of the analytic kernels.
struct KernelOptions {
  DualOptions dual{};
  /// Σ^0 = xᵀx'/d (lecture eq. 12, Neural Tangents) when true; xᵀx' (the deep-limit setting of
  /// Radhakrishnan, Belkin & Uhler) when false.
  bool divide_by_dimension = true;
  /// Threads for OpenMP builds; 0 uses the OpenMP default; at most max_threads().
  int threads = 0;

  void check(const char* function) const {
    dual.check(function);
    detail::check_threads(function, threads);
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
