#pragma once
/// \file solvers.hpp
/// Solvers for kernel regression and the linearized dynamics at sizes where one dense
/// eigendecomposition of G0 is too slow or does not fit.  Every solver takes a Gram operator
/// (gram.hpp: dense, packed, file-backed, matrix-free or distributed).  Rows are samples; targets
/// Y are n x k and every solver handles the k columns in one pass over the operator.
///
///   - cholesky_solve: (G0 + λI)⁻¹ Y by a dense Cholesky factorization (LAPACK potrf/potrs when
///     NTK_HAVE_LAPACKE is defined, Eigen's LLT otherwise), in place;
///   - cg_solve: preconditioned conjugate gradients for (G0 + λI) α = Y with a randomly pivoted
///     Cholesky (RPCholesky) Nyström preconditioner;
///   - dynamics_factor: G⁻¹(I − e^{−η G t}) Z (continuous) or G⁻¹(I − (I − η G)^t) Z (discrete)
///     for a list of finite times from one Chebyshev expansion (lecture eq. 26), with an error
///     estimate;
///   - kernel_times: κ(x, X) C for test points in blocks (no m x n matrix);
///   - plan_solver: the cheapest correct path for n, k, the times asked and a memory limit.
/// docs/large_scale.md says which results are exact and which approximate, with what error.

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "detail/cholesky.hpp"
#include "dynamics.hpp"
#include "errors.hpp"
#include "gram.hpp"

#if __has_include(<Spectra/SymEigsSolver.h>)
#include <Spectra/SymEigsSolver.h>
#define NTK_HAVE_SPECTRA 1
#endif

namespace ntk {

/// What an iterative solver did.
struct SolverInfo {
  bool converged = false;
  /// CG iterations, or the Chebyshev degree (operator applications) of dynamics_factor.
  Eigen::Index iterations = 0;
  /// cg_solve: max over columns of ‖y_j − (G + λI) α_j‖ / ‖y_j‖, recomputed from the solution.
  /// dynamics_factor: the estimated relative error (see there).
  double residual = 0;
  Eigen::Index preconditioner_rank = 0;
  double preconditioner_seconds = 0;  ///< building the preconditioner (columns + factorization)
  double solve_seconds = 0;           ///< the iterations
  double largest_eigenvalue = 0;      ///< dynamics_factor: the spectrum bound used
};

/// Thrown by cg_solve when the tolerance is not reached within max_iterations (unless
/// CgOptions::throw_on_failure is false); info() holds the iterations and the residual reached.
class NotConverged : public std::runtime_error {
 public:
  NotConverged(const std::string& what, const SolverInfo& info) : std::runtime_error(what), m_info(info) {}
  const SolverInfo& info() const { return m_info; }

 private:
  SolverInfo m_info;
};

/// Called after every iteration with its number and the current relative residual.
using IterationProgress = std::function<void(Eigen::Index iteration, double residual)>;

/// Options of cg_solve.
struct CgOptions {
  /// Stop when every column's relative residual ‖y_j − (G + λI) α_j‖ / ‖y_j‖ is at most this.
  double tolerance = 1e-10;
  Eigen::Index max_iterations = 1000;
  /// Rank of the RPCholesky Nyström preconditioner; 0 = plain CG; capped at n.
  Eigen::Index preconditioner_rank = 1000;
  /// Pivots drawn per RPCholesky round (columns requested from the operator at once).
  Eigen::Index preconditioner_block = 100;
  std::uint64_t seed = 1;
  /// false: return the last iterate with info.converged = false instead of throwing.
  bool throw_on_failure = true;
  IterationProgress progress;

  void check(const char* function) const {
    detail::check_positive(function, "tolerance", tolerance);
    detail::check_at_least<Eigen::Index>(function, "max_iterations", max_iterations, 1);
    detail::check_at_least<Eigen::Index>(function, "preconditioner_rank", preconditioner_rank, 0);
    detail::check_at_least<Eigen::Index>(function, "preconditioner_block", preconditioner_block, 1);
  }
};

/// (G + λI)⁻¹ Y by Cholesky, overwriting g with its factor (g: n x n symmetric, lower triangle
/// read).  λ = ridge >= 0.  Returns false, leaving g clobbered and y unchanged, when G + λI is not
/// numerically positive definite (singular G with λ = 0: use LinearizedDynamics, whose
/// eigendecomposition gives the pseudo-inverse).  O(n³ / 3) flops, no extra n x n memory.
template <class Scalar>
bool cholesky_solve_in_place(Eigen::Ref<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>> g, Scalar ridge,
                             Eigen::Ref<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>> y) {
  const char* fn = "cholesky_solve_in_place";
  if (g.rows() != g.cols())
    detail::fail<std::invalid_argument>(fn, "g must be square (got ", g.rows(), " x ", g.cols(), ")");
  detail::check_rows(fn, "y", y, g.rows());
  detail::check_nonnegative(fn, "ridge", ridge);
  g.diagonal().array() += ridge;
  if (!detail::cholesky_in_place<Scalar>(g)) return false;
  detail::cholesky_solve_in_place<Scalar>(g, y);
  return true;
}

/// (G + λI)⁻¹ Y by Cholesky on a copy of g (n² extra memory); throws std::invalid_argument when
/// G + λI is not positive definite.
template <class DG, class DY>
Eigen::Matrix<typename DG::Scalar, Eigen::Dynamic, Eigen::Dynamic> cholesky_solve(const Eigen::MatrixBase<DG>& g,
                                                                                  const Eigen::MatrixBase<DY>& y,
                                                                                  double ridge = 0) {
  using Scalar = typename DG::Scalar;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  Matrix factor = g, solution = y;
  if (!cholesky_solve_in_place<Scalar>(factor, static_cast<Scalar>(ridge), solution))
    detail::fail<std::invalid_argument>("cholesky_solve", "g + ridge I is not positive definite (ridge ", ridge,
                                        "); add a ridge or use LinearizedDynamics for the pseudo-inverse");
  return solution;
}

namespace detail {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// Rows per block in row_blocked_product and NystromPreconditioner::apply.
inline constexpr Eigen::Index product_block_rows = 512;

/// dst = alpha · lhs · rhs (accumulate: dst += alpha · lhs · rhs) for a tall lhs (n x r, n ≫ r) and a
/// small rhs, by blocks of 512 rows of lhs and dst shared among Eigen::nbThreads() threads, each
/// writing its own rows of dst.  One Eigen product over the whole tall lhs spends most of its time
/// packing lhs (n = 60,000, r = 1,000: 4.4x slower for 100 columns of rhs, 6x for 10;
/// docs/large_scale.md).  Each row of dst is one block's product: the result does not depend on
/// the number of threads.  dst must not overlap lhs or rhs.
template <class Scalar>
void row_blocked_product(Eigen::Ref<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>> dst,
                         const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>>& lhs,
                         const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>>& rhs,
                         Scalar alpha, bool accumulate) {
  eigen_assert(dst.rows() == lhs.rows() && dst.cols() == rhs.cols() && lhs.cols() == rhs.rows());
  const Eigen::Index n = lhs.rows(), blocks = (n + product_block_rows - 1) / product_block_rows;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(Eigen::nbThreads())
#endif
  for (Eigen::Index b = 0; b < blocks; ++b) {
    const Eigen::Index i = b * product_block_rows, h = std::min(product_block_rows, n - i);
    if (accumulate)
      dst.middleRows(i, h).noalias() += alpha * (lhs.middleRows(i, h) * rhs);
    else
      dst.middleRows(i, h).noalias() = alpha * (lhs.middleRows(i, h) * rhs);
  }
}

/// Spectra's MatOp over a Gram operator (one vector at a time).
template <class Op>
struct SpectraAdapter {
  using Scalar = typename Op::Scalar;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  const Op* op;
  Eigen::Index rows() const { return op->rows(); }
  Eigen::Index cols() const { return op->rows(); }
  void perform_op(const Scalar* x_in, Scalar* y_out) const {
    const Eigen::Map<const Matrix> x(x_in, op->rows(), 1);
    Eigen::Map<Matrix> y(y_out, op->rows(), 1);
    op->apply(x, y);
  }
};

}  // namespace detail

/// A factor F (n x r) of the RPCholesky approximation G ≈ F Fᵀ (Chen, Epperly, Tropp & Webber
/// 2022, block variant): pivots are drawn in rounds with probability proportional to the diagonal
/// of the residual G − F Fᵀ; each round asks the operator for `block` columns.  Stops early when
/// the residual trace falls below 1e-14 trace(G) (G of lower rank).  O(n r²) flops and r columns.
template <class Op>
Eigen::Matrix<typename Op::Scalar, Eigen::Dynamic, Eigen::Dynamic> rp_cholesky(const Op& op, Eigen::Index rank,
                                                                               Eigen::Index block, std::uint64_t seed) {
  detail::require_gram_operator<Op>();
  using Scalar = typename Op::Scalar;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  const Eigen::Index n = op.rows();
  rank = std::min(rank, n);
  Vector d = op.diagonal();
  const Scalar trace = d.sum();
  Matrix f(n, rank);
  Eigen::Index r = 0;
  std::mt19937_64 rng(seed);
  std::vector<char> taken(static_cast<std::size_t>(n), 0);
  while (r < rank) {
    const Scalar left = d.sum();
    if (!(left > Scalar(1e-14) * trace)) break;
    std::discrete_distribution<Eigen::Index> draw(d.data(), d.data() + n);
    std::vector<Eigen::Index> pivots;
    const Eigen::Index want = std::min(block, rank - r);
    for (Eigen::Index tries = 0; static_cast<Eigen::Index>(pivots.size()) < want && tries < 4 * want; ++tries) {
      const Eigen::Index s = draw(rng);
      if (!taken[static_cast<std::size_t>(s)]) {
        taken[static_cast<std::size_t>(s)] = 1;
        pivots.push_back(s);
      }
    }
    if (pivots.empty()) break;
    const Eigen::Index b = static_cast<Eigen::Index>(pivots.size());
    Matrix g(n, b);
    op.columns(pivots, g);
    Matrix fs(r, b);  // F(pivots, :)ᵀ
    for (Eigen::Index c = 0; c < b; ++c)
      fs.col(c) = f.topLeftCorner(n, r).row(pivots[static_cast<std::size_t>(c)]).transpose();
    detail::row_blocked_product<Scalar>(g, f.leftCols(r), fs, Scalar(-1), true);
    Matrix h(b, b);
    for (Eigen::Index c = 0; c < b; ++c)
      for (Eigen::Index a = 0; a < b; ++a) h(a, c) = g(pivots[static_cast<std::size_t>(a)], c);
    h = (h + h.transpose()).eval() / 2;
    // G_S H⁻¹ G_Sᵀ through the eigenvectors of H, dropping directions below rounding.
    Eigen::SelfAdjointEigenSolver<Matrix> eig(h);
    const Vector& e = eig.eigenvalues();
    const Scalar cut = std::max(e.maxCoeff(), Scalar(0)) * Scalar(b) * std::numeric_limits<Scalar>::epsilon() * 10;
    Eigen::Index keep = 0;
    for (Eigen::Index i = 0; i < b; ++i) keep += e[i] > cut;
    if (keep == 0) break;
    const Matrix w = eig.eigenvectors().rightCols(keep) * e.tail(keep).cwiseSqrt().cwiseInverse().asDiagonal();
    detail::row_blocked_product<Scalar>(f.middleCols(r, keep), g, w, Scalar(1), false);
    d -= f.middleCols(r, keep).rowwise().squaredNorm();
    d = d.cwiseMax(Scalar(0));
    for (Eigen::Index c = 0; c < b; ++c) d[pivots[static_cast<std::size_t>(c)]] = 0;
    r += keep;
  }
  return f.leftCols(r);
}

/// The Nyström preconditioner of Frangella, Tropp & Udell (2023) from G ≈ U Λ Uᵀ:
/// P⁻¹ = (λ_r + μ) U (Λ + μ I)⁻¹ Uᵀ + (I − U Uᵀ), for (G + μ I) with μ > 0.
template <class Scalar>
class NystromPreconditioner {
 public:
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  NystromPreconditioner() = default;
  /// From an RPCholesky factor F (n x r) and the ridge μ.
  NystromPreconditioner(const Matrix& f, Scalar mu) {
    if (f.cols() == 0) return;
    Eigen::SelfAdjointEigenSolver<Matrix> eig(f.transpose() * f);
    const Vector& e = eig.eigenvalues();
    const Scalar cut = e.maxCoeff() * Scalar(f.cols()) * std::numeric_limits<Scalar>::epsilon() * 10;
    Eigen::Index keep = 0;
    for (Eigen::Index i = 0; i < e.size(); ++i) keep += e[i] > cut;
    if (keep == 0) return;
    m_lambda = e.tail(keep);
    m_u.resize(f.rows(), keep);
    detail::row_blocked_product<Scalar>(
        m_u, f, eig.eigenvectors().rightCols(keep) * m_lambda.cwiseSqrt().cwiseInverse().asDiagonal(), Scalar(1),
        false);
    const Scalar smallest = m_lambda[0];
    m_scale = ((smallest + mu) / (m_lambda.array() + mu) - 1).matrix();
  }
  Eigen::Index rank() const { return m_u.cols(); }
  /// z = P⁻¹ r = r + U diag(scale) Uᵀ r.  Both products with the tall U go by blocks of 512 rows
  /// shared among Eigen::nbThreads() threads (see detail::row_blocked_product).  Uᵀ r is summed
  /// in at most 16 fixed parts of consecutive blocks, so the result does not depend on the number
  /// of threads.
  void apply(const Matrix& r, Matrix& z) const {
    z = r;
    if (m_u.cols() == 0) return;
    constexpr Eigen::Index rows = detail::product_block_rows, max_parts = 16;
    const Eigen::Index n = m_u.rows(), blocks = (n + rows - 1) / rows, parts = std::min(blocks, max_parts);
    std::vector<Matrix> partial(static_cast<std::size_t>(parts), Matrix::Zero(m_u.cols(), r.cols()));
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) num_threads(Eigen::nbThreads())
#endif
    for (Eigen::Index p = 0; p < parts; ++p)
      for (Eigen::Index b = p * blocks / parts; b < (p + 1) * blocks / parts; ++b) {
        const Eigen::Index i = b * rows, h = std::min(rows, n - i);
        partial[static_cast<std::size_t>(p)].noalias() += m_u.middleRows(i, h).transpose() * r.middleRows(i, h);
      }
    Matrix t = std::move(partial[0]);
    for (std::size_t p = 1; p < partial.size(); ++p) t += partial[p];
    t = m_scale.asDiagonal() * t;  // diag(scale) Uᵀ r
    detail::row_blocked_product<Scalar>(z, m_u, t, Scalar(1), true);
  }

 private:
  Matrix m_u;
  Vector m_lambda, m_scale;
};

/// Solves (G + λI) α = Y (n x k) by preconditioned conjugate gradients, all k columns per operator
/// application (each column keeps its own CG coefficients; a converged column stops changing).
/// λ = ridge must be > 0: for λ = 0 a singular G has no unique solution and CG would drift
/// (std::invalid_argument; the dense paths give the pseudo-inverse).  The preconditioner is the
/// RPCholesky Nyström one of rank options.preconditioner_rank.  Throws NotConverged (with the
/// residual reached) when the tolerance is not met within max_iterations, unless
/// throw_on_failure is false; info (optional) receives iterations, residual and timings.
template <class Op, class DY>
Eigen::Matrix<typename Op::Scalar, Eigen::Dynamic, Eigen::Dynamic> cg_solve(const Op& op,
                                                                            const Eigen::MatrixBase<DY>& y,
                                                                            double ridge, const CgOptions& options = {},
                                                                            SolverInfo* info = nullptr) {
  detail::require_gram_operator<Op>();
  using Scalar = typename Op::Scalar;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  const char* fn = "cg_solve";
  options.check(fn);
  detail::check_nonempty(fn, "y", y);
  detail::check_rows(fn, "y", y, op.rows());
  detail::check_finite(fn, "y", y);
  if (!(ridge > 0) || !std::isfinite(ridge))
    detail::fail<std::invalid_argument>(fn,
                                        "ridge must be positive and finite: with ridge 0 a singular "
                                        "Gram matrix has no unique solution (use the dense pseudo-inverse "
                                        "of LinearizedDynamics) (got ",
                                        ridge, ")");
  const Scalar mu = static_cast<Scalar>(ridge);
  const Eigen::Index n = op.rows(), k = y.cols();
  SolverInfo result;
  auto start = std::chrono::steady_clock::now();
  NystromPreconditioner<Scalar> precond;
  if (options.preconditioner_rank > 0)
    precond = NystromPreconditioner<Scalar>(
        rp_cholesky(op, options.preconditioner_rank, options.preconditioner_block, options.seed), mu);
  result.preconditioner_rank = precond.rank();
  result.preconditioner_seconds = detail::seconds_since(start);
  start = std::chrono::steady_clock::now();

  const Matrix b = y;
  Vector norms = b.colwise().norm().transpose();
  for (Eigen::Index j = 0; j < k; ++j)
    if (norms[j] == 0) norms[j] = 1;  // a zero column has the zero solution
  Matrix x = Matrix::Zero(n, k), r = b, z, p, q(n, k);
  precond.apply(r, z);
  p = z;
  Vector rz = (r.array() * z.array()).colwise().sum().transpose();
  std::vector<char> active(static_cast<std::size_t>(k), 1);
  auto relative = [&](const Matrix& res) {
    return (res.colwise().norm().transpose().array() / norms.array()).matrix();
  };
  Vector rel = relative(r);
  Eigen::Index it = 0;
  const Scalar tol = static_cast<Scalar>(options.tolerance);
  while (rel.maxCoeff() > tol && it < options.max_iterations) {
    op.apply(p, q);
    q.noalias() += mu * p;
    ++it;
    for (Eigen::Index j = 0; j < k; ++j) {
      if (!active[static_cast<std::size_t>(j)]) continue;
      const Scalar pq = p.col(j).dot(q.col(j));
      const Scalar alpha = pq > 0 ? rz[j] / pq : Scalar(0);
      x.col(j).noalias() += alpha * p.col(j);
      r.col(j).noalias() -= alpha * q.col(j);
    }
    rel = relative(r);
    precond.apply(r, z);
    for (Eigen::Index j = 0; j < k; ++j) {
      if (!active[static_cast<std::size_t>(j)]) continue;
      if (rel[j] <= tol) {  // converged: freeze this column
        active[static_cast<std::size_t>(j)] = 0;
        p.col(j).setZero();
        continue;
      }
      const Scalar rz_new = r.col(j).dot(z.col(j));
      const Scalar beta = rz[j] > 0 ? rz_new / rz[j] : Scalar(0);
      rz[j] = rz_new;
      p.col(j) = z.col(j) + beta * p.col(j);
    }
    if (options.progress) options.progress(it, static_cast<double>(rel.maxCoeff()));
  }
  // The true residual of the solution returned (the recurrence drifts at the level of rounding).
  op.apply(x, q);
  q.noalias() += mu * x;
  result.residual = static_cast<double>(relative(b - q).maxCoeff());
  result.iterations = it;
  result.solve_seconds = detail::seconds_since(start);
  result.converged = result.residual <= options.tolerance * 10 && rel.maxCoeff() <= tol;
  if (info) *info = result;
  if (!x.allFinite()) detail::fail<std::overflow_error>(fn, "the solution exceeds the scalar type's range");
  if (!result.converged && options.throw_on_failure)
    throw NotConverged("ntk::cg_solve: no convergence within " + std::to_string(it) +
                           " iterations (relative residual " + std::to_string(result.residual) + " > tolerance " +
                           std::to_string(options.tolerance) + ")",
                       result);
  return x;
}

/// λ_max(G) for a Gram operator: Lanczos (Spectra's SymEigsSolver, relative accuracy 1e-10) when
/// Spectra is available, else 200 power iterations (a lower estimate, then raised by 5%).
template <class Op>
double largest_eigenvalue(const Op& op) {
  detail::require_gram_operator<Op>();
  using Scalar = typename Op::Scalar;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  const Eigen::Index n = op.rows();
  if (n == 1) return static_cast<double>(op.diagonal()[0]);
#if defined(NTK_HAVE_SPECTRA)
  if (n >= 3) {
    detail::SpectraAdapter<Op> adapter{&op};
    Spectra::SymEigsSolver<detail::SpectraAdapter<Op>> eigs(adapter, 1, std::min<Eigen::Index>(n, 20));
    eigs.init();
    eigs.compute(Spectra::SortRule::LargestAlge, 1000, Scalar(1e-10));
    if (eigs.info() == Spectra::CompInfo::Successful) return static_cast<double>(eigs.eigenvalues()[0]);
  }
#endif
  Matrix v = Matrix::Ones(n, 1) / std::sqrt(Scalar(n)), w(n, 1);
  Scalar estimate = 0;
  for (int i = 0; i < 200; ++i) {
    op.apply(v, w);
    estimate = v.col(0).dot(w.col(0));
    const Scalar norm = w.norm();
    if (!(norm > 0)) break;
    v = w / norm;
  }
  return static_cast<double>(estimate) * 1.05;
}

/// Options of dynamics_factor.
struct ChebyshevOptions {
  /// Target relative error of g_t on the spectrum interval (sup norm over max |g_t|).
  double tolerance = 1e-10;
  Eigen::Index max_degree = 20000;
  /// An upper bound on λ_max(G) if known (> 0); else largest_eigenvalue() with a 1e-3 margin.
  double largest_eigenvalue = 0;
  IterationProgress progress;

  void check(const char* function) const {
    detail::check_positive(function, "tolerance", tolerance);
    detail::check_at_least<Eigen::Index>(function, "max_degree", max_degree, 1);
    detail::check_nonnegative(function, "largest_eigenvalue", largest_eigenvalue);
  }
};

/// g_t(G + ρI) Z for each finite time t (lecture eq. 26): g_t(λ) = (1 − e^{−ηλt}) / λ in continuous
/// time, (1 − (1 − ηλ)^t) / λ for t steps of gradient descent (η t at λ = 0), ρ = ridge >= 0.
/// One Chebyshev expansion on [ρ, ρ + λ_max] serves every time: the degree is the largest any time
/// needs (about sqrt(η t λ_max · ln(1/tolerance)) in continuous time, t − 1 in discrete time), one
/// operator application per degree, memory (3 + times) n x k.  The error estimate in
/// info.residual is the largest, over times, of Σ of the dropped coefficients |c_j| divided by
/// max |g_t| (a bound on the relative error of g_t on the interval, up to aliasing at the fitting
/// degree).  Throws std::invalid_argument for negative or infinite times (t = ∞ is cg_solve),
/// discrete η >= 2 / λ_max, and NotConverged when max_degree is not enough for the tolerance.
template <class Op, class DZ>
std::vector<Eigen::Matrix<typename Op::Scalar, Eigen::Dynamic, Eigen::Dynamic>> dynamics_factor(
    const Op& op, const Eigen::MatrixBase<DZ>& z, const std::vector<double>& times, double learning_rate,
    TimeModel model, double ridge = 0, const ChebyshevOptions& options = {}, SolverInfo* info = nullptr) {
  detail::require_gram_operator<Op>();
  using Scalar = typename Op::Scalar;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  const char* fn = "dynamics_factor";
  options.check(fn);
  detail::check_positive(fn, "learning_rate", learning_rate);
  detail::check_nonnegative(fn, "ridge", ridge);
  detail::check_rows(fn, "z", z, op.rows());
  detail::check_finite(fn, "z", z);
  for (double t : times) {
    if (!(t >= 0) || !std::isfinite(t))
      detail::fail<std::invalid_argument>(fn, "times must be finite and >= 0 (t = inf is cg_solve) (got ", t, ")");
    if (model == TimeModel::discrete && t != std::floor(t))
      detail::fail<std::invalid_argument>(fn, "discrete time must be an integer number of steps (got ", t, ")");
  }
  SolverInfo result;
  const auto start = std::chrono::steady_clock::now();
  const double top = options.largest_eigenvalue > 0 ? options.largest_eigenvalue : largest_eigenvalue(op) * (1 + 1e-3);
  result.largest_eigenvalue = top;
  const double a = ridge, b = ridge + std::max(top, 1e-300);
  if (model == TimeModel::discrete && learning_rate * b >= 2)
    detail::fail<std::invalid_argument>(fn, "learning_rate ", learning_rate, " >= 2 / lambda_max = ", 2 / b,
                                        ": discrete gradient descent diverges");
  const double eta = learning_rate;
  auto g = [&](double lambda, double t) {
    if (t == 0) return 0.0;
    if (lambda <= 0) return eta * t;
    if (model == TimeModel::continuous) return -std::expm1(-eta * t * lambda) / lambda;
    if (eta * lambda < 0.5) return -std::expm1(t * std::log1p(-eta * lambda)) / lambda;
    return (1 - std::pow(1 - eta * lambda, t)) / lambda;
  };
  // Chebyshev coefficients of every g_t by interpolation at N Chebyshev points, N doubled until the
  // last quarter of the coefficients is negligible.
  const std::size_t T = times.size();
  std::vector<std::vector<double>> coefficients(T);
  std::vector<Eigen::Index> degree(T, 0);
  double worst = 0;
  for (std::size_t ti = 0; ti < T; ++ti) {
    const double t = times[ti];
    double scale = 0, previous_floor = std::numeric_limits<double>::infinity();
    for (Eigen::Index N = 32;; N *= 2) {
      std::vector<double> values(static_cast<std::size_t>(N)), c(static_cast<std::size_t>(N), 0.0);
      const double pi = std::acos(-1.0);
      for (Eigen::Index m = 0; m < N; ++m) {
        const double theta = pi * (static_cast<double>(m) + 0.5) / static_cast<double>(N);
        values[static_cast<std::size_t>(m)] = g(a + (b - a) * (std::cos(theta) + 1) / 2, t);
      }
      scale = 0;
      for (double v : values) scale = std::max(scale, std::fabs(v));
      for (Eigen::Index m = 0; m < N; ++m) {  // c_j += v_m cos(j θ_m) by the three-term recurrence
        const double v = values[static_cast<std::size_t>(m)];
        const double x = std::cos(pi * (static_cast<double>(m) + 0.5) / static_cast<double>(N));
        double previous = 1, current = x;
        c[0] += v;
        for (Eigen::Index j = 1; j < N; ++j) {
          c[static_cast<std::size_t>(j)] += v * current;
          const double next = 2 * x * current - previous;
          previous = current;
          current = next;
        }
      }
      for (double& coefficient : c) coefficient *= 2 / static_cast<double>(N);
      c[0] /= 2;
      double floor = 0;  // the unresolved (or rounding) level: the largest of the last quarter
      for (Eigen::Index j = 3 * N / 4; j < N; ++j) floor = std::max(floor, std::fabs(c[static_cast<std::size_t>(j)]));
      if (!std::isfinite(floor))
        detail::fail<std::overflow_error>(fn, "g_t is not finite on the spectrum interval (t = ", t, ")");
      const bool resolved = scale == 0 || floor <= options.tolerance * scale * 1e-2;
      // Rounding level reached: the tail stops shrinking *and* sits at the level of rounding errors
      // in the interpolated values.  (A tail that stops shrinking above that level only means N is
      // still below the degree g_t needs, e.g. for large η t λ_max: keep doubling.)
      const double rounding = 64 * std::numeric_limits<double>::epsilon() * std::sqrt(static_cast<double>(N)) * scale;
      const bool stalled = N > 32 && floor > previous_floor / 2 && floor <= rounding;
      previous_floor = floor;
      if (resolved || stalled || N >= 2 * options.max_degree) {
        // degree m: every later coefficient below tolerance / 8; the error estimate sums the
        // dropped coefficients over the next m + 8 (their decay is faster than geometric)
        Eigen::Index m = N;
        while (m > 1 && std::fabs(c[static_cast<std::size_t>(m - 1)]) <= options.tolerance * scale / 8) --m;
        double dropped = 0;
        for (Eigen::Index j = m; j < std::min(N, 2 * m + 8); ++j) dropped += std::fabs(c[static_cast<std::size_t>(j)]);
        c.resize(static_cast<std::size_t>(m));
        coefficients[ti] = c;
        degree[ti] = m - 1;
        const double estimate = scale > 0 ? dropped / scale : 0;
        worst = std::max(worst, estimate);
        if (m - 1 > options.max_degree || (!resolved && !stalled)) {
          result.iterations = m - 1;
          result.residual = estimate;
          if (info) *info = result;
          throw NotConverged("ntk::dynamics_factor: t = " + std::to_string(t) +
                                 " needs a Chebyshev degree above max_degree " + std::to_string(options.max_degree) +
                                 " (estimated error " + std::to_string(estimate) + ")",
                             result);
        }
        break;
      }
    }
  }
  const Eigen::Index top_degree = T == 0 ? 0 : *std::max_element(degree.begin(), degree.end());
  // Three-term recurrence W_{j+1} = 2 Ã W_j − W_{j−1} with Ã = (2 (G + ρ) − (a + b)) / (b − a).
  const Matrix z0 = z;
  const Eigen::Index n = op.rows(), k = z0.cols();
  std::vector<Matrix> out(T, Matrix::Zero(n, k));
  const Scalar s1 = static_cast<Scalar>(2 / (b - a)), s0 = static_cast<Scalar>((2 * ridge - a - b) / (b - a));
  Matrix prev = z0, cur(n, k), next(n, k);
  auto accumulate = [&](Eigen::Index j, const Matrix& w) {
    for (std::size_t ti = 0; ti < T; ++ti)
      if (j <= degree[ti]) out[ti].noalias() += static_cast<Scalar>(coefficients[ti][static_cast<std::size_t>(j)]) * w;
  };
  accumulate(0, prev);
  if (top_degree >= 1) {
    op.apply(prev, cur);
    cur = s1 * cur + s0 * prev;
    accumulate(1, cur);
  }
  for (Eigen::Index j = 2; j <= top_degree; ++j) {
    op.apply(cur, next);
    next = 2 * (s1 * next + s0 * cur) - prev;
    std::swap(prev, cur);
    std::swap(cur, next);
    accumulate(j, cur);
    if (options.progress) options.progress(j, worst);
  }
  result.iterations = top_degree;
  result.residual = worst;
  result.converged = true;
  result.solve_seconds = detail::seconds_since(start);
  if (info) *info = result;
  for (const Matrix& m : out)
    if (!m.allFinite()) detail::fail<std::overflow_error>(fn, "the result exceeds the scalar type's range");
  return out;
}

/// κ(x, X) C for m test points without the m x n matrix: tile(r0, r1, out) writes κ(x[r0:r1], X)
/// ((r1 − r0) x n) into out; rows go in blocks of `block`, memory O(block · n).  progress (optional)
/// gets test rows done and m.
template <class Scalar, class Tile>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> kernel_times(
    Eigen::Index m, const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>>& c, Tile&& tile,
    Eigen::Index block = 1024, const GramProgress& progress = {}) {
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  detail::check_at_least<Eigen::Index>("kernel_times", "block", block, 1);
  Matrix out(m, c.cols()), buffer;
  for (Eigen::Index r0 = 0; r0 < m; r0 += block) {
    const Eigen::Index r1 = std::min(m, r0 + block);
    buffer.resize(r1 - r0, c.rows());
    tile(r0, r1, Eigen::Ref<Matrix>(buffer));
    out.middleRows(r0, r1 - r0).noalias() = buffer * c;
    if (progress) progress(static_cast<double>(r1), static_cast<double>(m));
  }
  return out;
}

/// Σ^L or Θ^L (kind) between test rows x_test (m x d) and training rows x (n x d) times C (n x c),
/// by blocks of test points (kernel_times with the kernel engine).
template <class Arch, class DT, class DX, class DC>
Eigen::Matrix<typename DX::Scalar, Eigen::Dynamic, Eigen::Dynamic> cross_kernel_times(
    const Arch& arch, const Eigen::MatrixBase<DT>& x_test, const Eigen::MatrixBase<DX>& x, KernelKind kind,
    const Eigen::MatrixBase<DC>& c, const KernelOptions& kernel_options = {}, Eigen::Index block = 1024,
    const GramProgress& progress = {}) {
  using Scalar = typename DX::Scalar;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  const char* fn = "cross_kernel_times";
  detail::check_request(fn, arch, x_test, x, kernel_options);
  if (kind == KernelKind::both) detail::fail<std::invalid_argument>(fn, "kind must be nngp or ntk (got both)");
  detail::check_rows(fn, "c", c, x.rows());
  const Matrix points = x_test;
  const Matrix coefficients = c;
  return kernel_times<Scalar>(
      x_test.rows(), coefficients,
      [&](Eigen::Index r0, Eigen::Index r1, Eigen::Ref<Matrix> out) {
        detail::compute_into(fn, arch, points.middleRows(r0, r1 - r0), x, false, kind, out, out, kernel_options);
      },
      block, progress);
}

/// The paths plan_solver chooses among.
enum class SolverMethod {
  automatic,    ///< plan_solver picks
  eigen,        ///< dense eigendecomposition (LinearizedDynamics): any times, covariances
  cholesky,     ///< dense Cholesky, t = ∞ only
  packed,       ///< PackedGram + cg_solve (t = ∞) / dynamics_factor (finite t)
  matrix_free,  ///< MatrixFreeGram + the same iterative solvers
};

/// What plan_solver is asked.
struct SolverRequest {
  Eigen::Index n = 0;             ///< training points
  Eigen::Index k = 1;             ///< target columns
  Eigen::Index test_points = 0;   ///< m
  Eigen::Index finite_times = 0;  ///< number of finite times asked
  bool infinite_time = true;      ///< t = ∞ asked
  double ridge = 0;               ///< λ
  std::size_t memory_limit = 0;   ///< bytes; 0 = no limit
  bool covariance = false;        ///< NTK-GP / NNGP covariances asked (eigen only)
  Eigen::Index preconditioner_rank = 1000;
  Eigen::Index block = 1024;                      ///< test-point block and tile width
  SolverMethod method = SolverMethod::automatic;  ///< force a path
  std::size_t scalar_bytes = sizeof(double);
  /// Bytes per stored entry of the packed triangle: sizeof(double), or sizeof(float) for
  /// PackedGram<double, float> (half the memory; every entry rounded to 2⁻²⁴ relative).
  std::size_t storage_bytes = sizeof(double);
  /// Processes sharing the n x n matrices (the distributed solvers of ntk/mpi.hpp and
  /// ntk/scalapack.hpp): the estimate is then per process, with 1/ranks of the Gram matrix, its
  /// eigenvectors or triangle and the cross kernel, and the vectors replicated.
  int ranks = 1;
};

/// The path chosen, its memory estimate and the reason.
struct SolverPlan {
  SolverMethod method = SolverMethod::eigen;
  std::size_t bytes = 0;
  std::string reason;
};

/// Name of a method ("auto", "eigen", "cholesky", "packed", "matrix-free").
inline const char* method_name(SolverMethod m) {
  switch (m) {
    case SolverMethod::automatic:
      return "auto";
    case SolverMethod::eigen:
      return "eigen";
    case SolverMethod::cholesky:
      return "cholesky";
    case SolverMethod::packed:
      return "packed";
    case SolverMethod::matrix_free:
      return "matrix-free";
  }
  return "?";
}

/// Peak memory estimate of a path (bytes), the model plan_solver uses: eigen 4 n² (the Gram matrix,
/// its symmetrized copy, the eigenvectors and Eigen's workspace) + 2 m n (cross kernel and its
/// projection); cholesky n² (factored in place) + block · n (test blocks); packed the stored
/// triangle + 2 n r (preconditioner) + block · n; matrix-free 2 n r + 2 block · n; all + 8 n k.
/// With ranks = P the first terms (n², the m n cross kernel and the triangle) are divided by P.
inline std::size_t method_bytes(SolverMethod method, const SolverRequest& q) {
  const double s = static_cast<double>(q.scalar_bytes), n = static_cast<double>(q.n),
               m = static_cast<double>(q.test_points), k = static_cast<double>(q.k),
               r = static_cast<double>(std::min(q.preconditioner_rank, q.n)), b = static_cast<double>(q.block);
  const double vectors = 8 * n * k * s * static_cast<double>(1 + q.finite_times);
  const double p = static_cast<double>(std::max(q.ranks, 1));
  double bytes = 0;
  switch (method) {
    case SolverMethod::eigen:
      bytes = (4 * n * n * s + 2 * m * n * s) / p;
      break;
    case SolverMethod::cholesky:
      bytes = n * n * s / p + b * n * s;
      break;
    case SolverMethod::packed:
      bytes = static_cast<double>(PackedGram<double>::storage_bytes(q.n, PackedGramOptions{})) / 8 *
                  static_cast<double>(q.storage_bytes) / p +
              2 * n * r * s + b * n * s;
      break;
    case SolverMethod::matrix_free:
      bytes = 2 * n * r * s + 2 * b * n * s;
      break;
    case SolverMethod::automatic:
      break;
  }
  return static_cast<std::size_t>(bytes + vectors);
}

/// Picks the cheapest correct path: covariances → eigen; finite times → eigen when it fits and
/// n <= 20,000 (O(n³) once, then every time is cheap), else packed, else matrix-free (Chebyshev);
/// t = ∞ only → cholesky when it fits and n <= 40,000, else (λ > 0 needed) packed, else
/// matrix-free; λ = 0 at t = ∞ without a dense path that fits is an error (no unique solution for
/// CG).  A forced method (request.method) is checked the same way.  Throws std::invalid_argument
/// naming the path and the bytes it needs when the memory limit cannot hold it, before anything
/// is allocated.
inline SolverPlan plan_solver(const SolverRequest& q) {
  const char* fn = "plan_solver";
  detail::check_at_least<Eigen::Index>(fn, "n", q.n, 1);
  detail::check_at_least<Eigen::Index>(fn, "k", q.k, 1);
  detail::check_nonnegative(fn, "ridge", q.ridge);
  detail::check_at_least(fn, "ranks", q.ranks, 1);
  if (q.storage_bytes != sizeof(double) && q.storage_bytes != sizeof(float))
    detail::fail<std::invalid_argument>(fn, "storage_bytes must be 8 (double) or 4 (float) (got ", q.storage_bytes,
                                        ")");
  const std::size_t limit = q.memory_limit == 0 ? std::numeric_limits<std::size_t>::max() : q.memory_limit;
  auto fits = [&](SolverMethod m) { return method_bytes(m, q) <= limit; };
  auto make = [&](SolverMethod m, std::string why) { return SolverPlan{m, method_bytes(m, q), std::move(why)}; };
  const bool finite = q.finite_times > 0;
  auto usable = [&](SolverMethod m) -> std::string {  // empty when m answers the request
    if (m == SolverMethod::cholesky && (finite || q.covariance))
      return "cholesky answers t = inf only (finite times or covariances asked)";
    if ((m == SolverMethod::packed || m == SolverMethod::matrix_free) && q.covariance)
      return "covariances need the eigendecomposition";
    if ((m == SolverMethod::packed || m == SolverMethod::matrix_free) && q.infinite_time && !(q.ridge > 0))
      return "the iterative solvers need a ridge > 0 at t = inf (a singular Gram matrix has no unique solution)";
    return {};
  };
  auto megabytes = [](std::size_t b) { return std::to_string(b / (1u << 20)) + " MiB"; };
  if (q.method != SolverMethod::automatic) {
    const std::string why = usable(q.method);
    if (!why.empty()) detail::fail<std::invalid_argument>(fn, "method ", method_name(q.method), ": ", why);
    if (!fits(q.method))
      detail::fail<std::invalid_argument>(fn, "memory limit ", megabytes(limit), " cannot hold method ",
                                          method_name(q.method), " for n = ", q.n, " (needs ",
                                          megabytes(method_bytes(q.method, q)), ")");
    return make(q.method, "forced");
  }
  std::vector<std::pair<SolverMethod, std::string>> order;
  if (q.covariance) {
    order = {{SolverMethod::eigen, "covariances need the eigendecomposition"}};
  } else if (finite) {
    if (q.n <= 20000) order.push_back({SolverMethod::eigen, "finite times: one eigendecomposition serves every time"});
    order.push_back(
        {SolverMethod::packed, "finite times, n large or dense eigen too big: Chebyshev on the stored triangle"});
    order.push_back(
        {SolverMethod::matrix_free, "finite times, the triangle does not fit: Chebyshev recomputing tiles"});
  } else {
    if (q.n <= 40000 || !(q.ridge > 0))
      order.push_back({SolverMethod::cholesky, "t = inf only: one Cholesky factorization (n^3/3 flops)"});
    order.push_back({SolverMethod::packed,
                     "t = inf, the dense matrix does not fit or n > 40000: preconditioned CG on the stored triangle"});
    order.push_back(
        {SolverMethod::matrix_free, "t = inf, the triangle does not fit: preconditioned CG recomputing tiles"});
  }
  std::string refused;
  for (const auto& [m, why] : order) {
    const std::string not_usable = usable(m);
    if (!not_usable.empty()) {
      refused += std::string(" ") + method_name(m) + ": " + not_usable + ";";
      continue;
    }
    if (fits(m)) return make(m, why);
    refused += std::string(" ") + method_name(m) + " needs " + megabytes(method_bytes(m, q)) + ";";
  }
  detail::fail<std::invalid_argument>(fn, "no path fits the memory limit ", megabytes(limit), " for n = ", q.n, " (",
                                      refused.empty() ? std::string("none usable") : refused.substr(1), ")");
}

}  // namespace ntk
