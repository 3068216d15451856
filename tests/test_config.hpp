#pragma once
// Sizes of the expensive tests come from here, so the sanitizer run can shrink them
// (NTK_TEST_SCALE, set by CMake; 1 in the normal suite).
#include <ntk/random.hpp>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

#ifndef NTK_TEST_SCALE
#define NTK_TEST_SCALE 1.0
#endif

namespace ntk_test {
/// `full` scaled by NTK_TEST_SCALE, at least `minimum`.
inline long scaled(long full, long minimum = 1) {
  return std::max(minimum, static_cast<long>(std::lround(static_cast<double>(full) * NTK_TEST_SCALE)));
}
/// Relative error |a - b| / max(|b|, tiny).
inline double relative_error(double a, double b) {
  return std::fabs(a - b) / std::max(std::fabs(b), 1e-300);
}
/// f() with OpenMP's default team size set to `threads` and restored afterwards (f() alone without
/// OpenMP).
template <class F>
inline auto with_threads([[maybe_unused]] int threads, F&& f) {
#if defined(_OPENMP)
  struct Restore {
    int before = omp_get_max_threads();
    ~Restore() { omp_set_num_threads(before); }
  } restore;
  omp_set_num_threads(threads);
#endif
  return f();
}
using ntk::normal_matrix;  // n x d N(0, 1) draws from the library's reproducible generator
}  // namespace ntk_test
