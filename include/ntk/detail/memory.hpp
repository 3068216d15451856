#pragma once
/// \file detail/memory.hpp
/// Allocation and copying helpers for large Gram matrices.  Not public API.

#include <Eigen/Core>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace ntk {
namespace detail {

/// Sizes `m` without initializing it and, on Linux, asks for transparent huge pages for large
/// buffers before they are first touched (fresh 4 KiB page faults dominate on some VMs).
template <class Matrix>
void allocate_large(Matrix& m, Eigen::Index rows, Eigen::Index cols) {
  m.resize(rows, cols);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::size_t huge = std::size_t(2) << 20;
  const std::size_t bytes = static_cast<std::size_t>(m.size()) * sizeof(typename Matrix::Scalar);
  if (bytes >= 4 * huge) {
    const auto begin = (reinterpret_cast<std::uintptr_t>(m.data()) + huge - 1) & ~(huge - 1);
    const auto end = (reinterpret_cast<std::uintptr_t>(m.data()) + bytes) & ~(huge - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#endif
}

/// Copies the strict upper triangle of a square matrix into the lower one, in cache-sized blocks.
template <class Matrix>
void mirror_upper(Matrix& m, int threads) {
  (void)threads;
  constexpr Eigen::Index B = 64;
  const Eigen::Index n = m.rows();
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic) num_threads(threads > 0 ? threads : omp_get_max_threads())
#endif
  for (Eigen::Index jb = 0; jb < n; jb += B)  // block column of the lower triangle
    for (Eigen::Index ib = jb; ib < n; ib += B)
      for (Eigen::Index j = jb; j < std::min(jb + B, n); ++j)
        for (Eigen::Index i = std::max(ib, j + 1); i < std::min(ib + B, n); ++i) m(i, j) = m(j, i);
}
}  // namespace detail
}  // namespace ntk
