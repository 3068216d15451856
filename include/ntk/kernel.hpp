#pragma once
/// \file kernel.hpp
/// Infinite-width NNGP Σ^L and NTK Θ^L Gram matrices (lecture eqs. 9–16; docs/mathematics.md §1a):
///   Σ^1 = σ_w² xᵀx'/d + σ_b²,  Σ^{l+1} = σ_w² L^φ(Σ^l) + σ_b²,  Θ^1 = Σ^1,
///   Θ^{l+1} = Σ^{l+1} + σ_w² L^φ'(Σ^l) Θ^l.
/// Data matrices hold one sample per row (n x d).  The output for a k-output network is
/// Σ^L ⊗ I_k and Θ^L ⊗ I_k; these functions return the n1 x n2 factor.
///
/// Entry points: kernel (both or one Gram matrix, allocated), kernel_into (one, into caller
/// storage), ntk_kernel and nngp_kernel (shorthands), kernel_block (a tile of the matrix),
/// kernel_diagonal (the diagonal alone, O(n L)) and kernel_layers (every layer's matrices).
/// Options and result types: kernel_options.hpp.  Every entry point makes the same checks
/// before anything is computed or written.
///
/// Evaluation (detail/kernel_engine.hpp): every entry runs the whole depth recursion in registers;
/// the symmetric case computes one triangle.  Duals come from the activation's closed form where it
/// has one (exact), otherwise from Gauss–Hermite quadrature, tabulated or expanded in a Hermite
/// series per layer (detail/layer_dual.hpp describes the modes and their error).  With OpenMP the
/// work is shared among threads with identical results whatever the thread count.

#include <Eigen/Core>

#include <vector>

#include "detail/kernel_engine.hpp"
#include "kernel_options.hpp"
#include "layers.hpp"

namespace ntk {

/// NNGP Σ^L and/or NTK Θ^L between the rows of x1 (n1 x d) and x2 (n2 x d): n1 x n2 matrices.
/// Cost O(n1 n2 L) dual evaluations, extra memory O((n1 + n2) L).
/// Throws std::invalid_argument (empty inputs, feature counts that differ, bad layers or options),
/// std::domain_error (non-finite entries), std::overflow_error (result out of range).
template <class Arch, class D1, class D2>
Kernels<typename D1::Scalar> kernel(const Arch& arch, const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2,
                                    KernelKind kind = KernelKind::both, const KernelOptions& options = {}) {
  return detail::compute_block("kernel", arch, x1, x2, false, kind, options);
}

/// The symmetric case x2 = x1: one triangle is computed.
template <class Arch, class D>
Kernels<typename D::Scalar> kernel(const Arch& arch, const Eigen::MatrixBase<D>& x, KernelKind kind = KernelKind::both,
                                   const KernelOptions& options = {}) {
  return detail::compute_block("kernel", arch, x, x, true, kind, options);
}

/// Σ^L or Θ^L (kind nngp or ntk) between the rows of x1 and x2, written into `out` (n1 x n2,
/// column-major: a Matrix, or an Eigen::Map over storage the caller owns such as a memory-mapped
/// file), so ntk never allocates the Gram matrix.  kernel()'s exceptions, plus
/// std::invalid_argument for kind both or an `out` of another size (then `out` is untouched);
/// after std::overflow_error the contents of `out` are unspecified.
template <class Arch, class D1, class D2>
void kernel_into(const Arch& arch, const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2, KernelKind kind,
                 detail::OutputRef<typename D1::Scalar> out, const KernelOptions& options = {}) {
  detail::compute_into_checked("kernel_into", arch, x1, x2, false, kind, out, options);
}

/// The symmetric case x2 = x1 (one triangle computed, then mirrored).
template <class Arch, class D>
void kernel_into(const Arch& arch, const Eigen::MatrixBase<D>& x, KernelKind kind,
                 detail::OutputRef<typename D::Scalar> out, const KernelOptions& options = {}) {
  detail::compute_into_checked("kernel_into", arch, x, x, true, kind, out, options);
}

/// Θ^L(x1, x2) (n1 x n2); see kernel().
template <class Arch, class D1, class D2>
auto ntk_kernel(const Arch& arch, const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2,
                const KernelOptions& options = {}) {
  return kernel(arch, x1, x2, KernelKind::ntk, options).ntk;
}
template <class Arch, class D>
auto ntk_kernel(const Arch& arch, const Eigen::MatrixBase<D>& x, const KernelOptions& options = {}) {
  return kernel(arch, x, KernelKind::ntk, options).ntk;
}
/// Σ^L(x1, x2) (n1 x n2); see kernel().
template <class Arch, class D1, class D2>
auto nngp_kernel(const Arch& arch, const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2,
                 const KernelOptions& options = {}) {
  return kernel(arch, x1, x2, KernelKind::nngp, options).nngp;
}
template <class Arch, class D>
auto nngp_kernel(const Arch& arch, const Eigen::MatrixBase<D>& x, const KernelOptions& options = {}) {
  return kernel(arch, x, KernelKind::nngp, options).nngp;
}

/// The tile [r0, r1) x [c0, c1) of kernel(arch, x1, x2): rows of x1 and rows of x2 in those ranges,
/// so callers can spread a Gram matrix over threads, processes or machines.  Entries equal those
/// of the full computation except where a generic activation's table/quadrature choice depends on
/// the inputs present (then they agree to the quadrature tolerance, <= 1e-12); otherwise they agree
/// to rounding (the tile's inner products come from a GEMM of another shape).
/// Throws std::invalid_argument for ranges outside the inputs, plus kernel()'s exceptions.
template <class Arch, class D1, class D2>
Kernels<typename D1::Scalar> kernel_block(const Arch& arch, const Eigen::MatrixBase<D1>& x1,
                                          const Eigen::MatrixBase<D2>& x2, Eigen::Index r0, Eigen::Index r1,
                                          Eigen::Index c0, Eigen::Index c1, KernelKind kind = KernelKind::both,
                                          const KernelOptions& options = {}) {
  if (r0 < 0 || r1 > x1.rows() || r0 >= r1 || c0 < 0 || c1 > x2.rows() || c0 >= c1)
    detail::fail<std::invalid_argument>("kernel_block",
                                        "ranges must be non-empty and inside the "
                                        "inputs (got rows [",
                                        r0, ", ", r1, ") of ", x1.rows(), ", columns [", c0, ", ", c1, ") of ",
                                        x2.rows(), ")");
  return detail::compute_block("kernel_block", arch, x1.middleRows(r0, r1 - r0), x2.middleRows(c0, c1 - c0), false,
                               kind, options);
}

/// Half-open ranges of rows of x1 and of x2 (the block's columns), for kernel_block.
struct RowRange {
  Eigen::Index begin, end;
};
struct ColumnRange {
  Eigen::Index begin, end;
};

/// kernel_block with named ranges: kernel_block(arch, x1, x2, ntk::RowRange{0, 100},
/// ntk::ColumnRange{200, 300}).
template <class Arch, class D1, class D2>
Kernels<typename D1::Scalar> kernel_block(const Arch& arch, const Eigen::MatrixBase<D1>& x1,
                                          const Eigen::MatrixBase<D2>& x2, RowRange rows, ColumnRange columns,
                                          KernelKind kind = KernelKind::both, const KernelOptions& options = {}) {
  return kernel_block(arch, x1, x2, rows.begin, rows.end, columns.begin, columns.end, kind, options);
}

/// Diagonals Σ^L(x, x) and Θ^L(x, x) only, as n x 1 matrices: O(n L).  kernel()'s exceptions.
template <class Arch, class D>
Kernels<typename D::Scalar> kernel_diagonal(const Arch& arch, const Eigen::MatrixBase<D>& x,
                                            const KernelOptions& options = {}) {
  return detail::compute_diagonal("kernel_diagonal", arch, x, options);
}

/// Σ^l, Σ̇^l and Θ^l after every affine layer l = 1..L (n1 x n2 each; O(n1 n2 L) memory).
/// kernel()'s exceptions, except that entries are not checked for overflow.
template <class Arch, class D1, class D2>
std::vector<LayerKernels<typename D1::Scalar>> kernel_layers(const Arch& arch, const Eigen::MatrixBase<D1>& x1,
                                                             const Eigen::MatrixBase<D2>& x2,
                                                             const KernelOptions& options = {}) {
  return detail::compute_layers("kernel_layers", arch, x1, x2, options);
}

}  // namespace ntk
