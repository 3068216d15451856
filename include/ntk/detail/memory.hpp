#pragma once
/// \file detail/memory.hpp
/// Allocation and copying helpers for large Gram matrices.  Not public API.

#include <Eigen/Core>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <type_traits>

#include "../errors.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace ntk {
namespace detail {

/// The most bytes one request may allocate: the machine's physical memory where the system says
/// (sysconf), else 2^46 bytes (64 TiB).
inline std::size_t allocation_limit() {
  constexpr std::size_t fallback = std::size_t(1) << 46;
#if defined(__linux__) && defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0 &&
      static_cast<std::size_t>(pages) <= std::numeric_limits<std::size_t>::max() / static_cast<std::size_t>(page))
    return std::min(fallback, static_cast<std::size_t>(pages) * static_cast<std::size_t>(page));
#endif
  return fallback;
}

/// count * element_size, or std::length_error naming `function` and `what` when the product
/// overflows std::size_t or exceeds allocation_limit(): refused before anything is allocated.
inline std::size_t check_allocation(const char* function, const char* what, std::size_t count,
                                    std::size_t element_size) {
  const std::size_t limit = allocation_limit();
  if (element_size != 0 && count > limit / element_size)
    fail<std::length_error>(function, what, " needs ",
                            static_cast<long double>(count) * static_cast<long double>(element_size),
                            " bytes, more than this machine can allocate (limit ", limit, " bytes)");
  return count * element_size;
}

/// a * b for non-negative sizes, saturating at the largest std::size_t (so that a product that
/// overflows is refused by check_allocation rather than wrapping around).
inline std::size_t saturating_product(std::size_t a, std::size_t b) {
  if (a != 0 && b > std::numeric_limits<std::size_t>::max() / a) return std::numeric_limits<std::size_t>::max();
  return a * b;
}

/// The size of a transparent huge page on x86-64 and most AArch64 kernels.
inline constexpr std::size_t huge_page_bytes = std::size_t(2) << 20;
/// Buffers from this size on are 2 MiB-aligned and advised into huge pages.
inline constexpr std::size_t huge_page_threshold = 4 * huge_page_bytes;

/// On Linux, asks for transparent huge pages for the 2 MiB-aligned interior of a large buffer that
/// has not been touched yet: fresh 4 KiB page faults dominate on some VMs, and a strided pass over
/// a large matrix misses the TLB on nearly every column with 4 KiB pages.  A no-op elsewhere (and
/// for buffers under 8 MiB).
inline void advise_huge_pages(void* data, std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes >= huge_page_threshold) {
    constexpr std::uintptr_t mask = ~std::uintptr_t(huge_page_bytes - 1);
    const auto begin = (reinterpret_cast<std::uintptr_t>(data) + huge_page_bytes - 1) & mask;
    const auto end = (reinterpret_cast<std::uintptr_t>(data) + bytes) & mask;
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#else
  (void)data;
  (void)bytes;
#endif
}

/// Releases storage from allocate_aligned.
struct AlignedDelete {
  std::size_t alignment = 64;
  void operator()(void* p) const { ::operator delete(p, std::align_val_t(alignment)); }
};

/// Uninitialized storage for `count` values of T aligned to a cache line, or to 2 MiB with
/// advise_huge_pages for 8 MiB and more (so that packets at multiples of 64 bytes from the start do
/// not straddle two lines, and the whole buffer can live in huge pages).  std::bad_alloc when it
/// cannot be had.
template <class T>
std::unique_ptr<T[], AlignedDelete> allocate_aligned(std::size_t count) {
  static_assert(std::is_trivial_v<T>, "allocate_aligned holds trivial types only");
  if (count > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
  const std::size_t bytes = std::max<std::size_t>(1, count) * sizeof(T);
  const std::size_t alignment = bytes >= huge_page_threshold ? huge_page_bytes : 64;
  void* p = ::operator new(bytes, std::align_val_t(alignment));
  advise_huge_pages(p, bytes);
  return std::unique_ptr<T[], AlignedDelete>(static_cast<T*>(p), AlignedDelete{alignment});
}

/// Sizes `m` without initializing it, with advise_huge_pages.
template <class Matrix>
void allocate_large(Matrix& m, Eigen::Index rows, Eigen::Index cols) {
  m.resize(rows, cols);
  advise_huge_pages(m.data(), static_cast<std::size_t>(m.size()) * sizeof(typename Matrix::Scalar));
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
