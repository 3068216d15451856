#pragma once
// Dense Cholesky factorization and solves: LAPACK (potrf/potrs/trtrs through LAPACKE, e.g. threaded
// OpenBLAS) when NTK_HAVE_LAPACKE is defined and the program links lapacke, Eigen's blocked LLT
// otherwise.  Not public API.

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <type_traits>

#if defined(NTK_HAVE_LAPACKE)
#include <lapacke.h>
#endif

namespace ntk {
namespace detail {

/// True when the factorizations below go through LAPACK.
inline constexpr bool cholesky_uses_lapack =
#if defined(NTK_HAVE_LAPACKE)
    true;
#else
    false;
#endif

/// Overwrites the lower triangle of a (n x n, column-major; the upper triangle is not read) with L,
/// a = L Lᵀ.  Returns false when a is not numerically positive definite (a is then clobbered).
template <class Scalar>
bool cholesky_in_place(Eigen::Ref<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>> a) {
#if defined(NTK_HAVE_LAPACKE)
  if constexpr (std::is_same_v<Scalar, double> || std::is_same_v<Scalar, float>) {
    const lapack_int n = static_cast<lapack_int>(a.rows()), lda = static_cast<lapack_int>(a.outerStride());
    lapack_int info;
    if constexpr (std::is_same_v<Scalar, double>)
      info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', n, a.data(), lda);
    else
      info = LAPACKE_spotrf(LAPACK_COL_MAJOR, 'L', n, a.data(), lda);
    return info == 0;
  }
#endif
  Eigen::LLT<Eigen::Ref<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>>, Eigen::Lower> llt(a);
  return llt.info() == Eigen::Success;
}

/// b ← L⁻¹ b for the lower factor in l.
template <class Scalar>
void lower_solve_in_place(const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>>& l,
                          Eigen::Ref<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>> b) {
#if defined(NTK_HAVE_LAPACKE)
  if constexpr (std::is_same_v<Scalar, double> || std::is_same_v<Scalar, float>) {
    const lapack_int n = static_cast<lapack_int>(l.rows()), k = static_cast<lapack_int>(b.cols());
    if constexpr (std::is_same_v<Scalar, double>)
      LAPACKE_dtrtrs(LAPACK_COL_MAJOR, 'L', 'N', 'N', n, k, l.data(), static_cast<lapack_int>(l.outerStride()),
                     b.data(), static_cast<lapack_int>(b.outerStride()));
    else
      LAPACKE_strtrs(LAPACK_COL_MAJOR, 'L', 'N', 'N', n, k, l.data(), static_cast<lapack_int>(l.outerStride()),
                     b.data(), static_cast<lapack_int>(b.outerStride()));
    return;
  }
#endif
  l.template triangularView<Eigen::Lower>().solveInPlace(b);
}

/// b ← (L Lᵀ)⁻¹ b.
template <class Scalar>
void cholesky_solve_in_place(const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>>& l,
                             Eigen::Ref<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>> b) {
#if defined(NTK_HAVE_LAPACKE)
  if constexpr (std::is_same_v<Scalar, double> || std::is_same_v<Scalar, float>) {
    const lapack_int n = static_cast<lapack_int>(l.rows()), k = static_cast<lapack_int>(b.cols());
    if constexpr (std::is_same_v<Scalar, double>)
      LAPACKE_dpotrs(LAPACK_COL_MAJOR, 'L', n, k, l.data(), static_cast<lapack_int>(l.outerStride()), b.data(),
                     static_cast<lapack_int>(b.outerStride()));
    else
      LAPACKE_spotrs(LAPACK_COL_MAJOR, 'L', n, k, l.data(), static_cast<lapack_int>(l.outerStride()), b.data(),
                     static_cast<lapack_int>(b.outerStride()));
    return;
  }
#endif
  l.template triangularView<Eigen::Lower>().solveInPlace(b);
  l.template triangularView<Eigen::Lower>().transpose().solveInPlace(b);
}

}  // namespace detail
}  // namespace ntk
