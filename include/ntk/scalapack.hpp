#pragma once
/// \file scalapack.hpp
/// Exact dense dynamics over MPI through ScaLAPACK (include only when linking ntk::scalapack:
/// Debian libscalapack-openmpi-dev).  The Gram matrix lives in ScaLAPACK's 2-D block-cyclic layout
/// on a process grid as square as P allows, each rank filling its own blocks of the upper triangle
/// with the tile engine (kernel_into; 1/P of the triangle's dual evaluations each).  Then
///   - ScalapackDynamics: one distributed eigendecomposition G0 = V Λ Vᵀ (pdsyevd), after which any
///     number of times costs O(n² k / P) each: LinearizedDynamics' formulas (lecture eqs. 25–26)
///     with V distributed;
///   - scalapack_solve: (G0 + λ I) α = Y by Cholesky (pdpotrf + pdpotrs), for t = ∞ alone.
/// Memory per rank: one n²/P block-cyclic matrix for the Cholesky path, two (G0 and V) for the
/// eigendecomposition, plus ScaLAPACK's workspace (O(n²/P) for pdsyevd).
/// Every function is collective over the communicator and raises errors on every rank (mpi.hpp).
/// double only (the pd* routines).

#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <vector>

#include "conv.hpp"
#include "dynamics.hpp"
#include "mpi.hpp"

namespace ntk {
namespace mpi {
namespace detail {
namespace scalapack {
// BLACS and ScaLAPACK, declared here (no header ships with Debian's package).  Fortran routines
// take every argument by reference; character arguments carry a hidden length at the end.
extern "C" {
int Csys2blacs_handle(MPI_Comm comm);
void Cfree_blacs_system_handle(int handle);
void Cblacs_gridinit(int* context, const char* order, int rows, int cols);
void Cblacs_gridinfo(int context, int* rows, int* cols, int* row, int* col);
void Cblacs_gridexit(int context);
int numroc_(const int* n, const int* nb, const int* iproc, const int* isrcproc, const int* nprocs);
void descinit_(int* desc, const int* m, const int* n, const int* mb, const int* nb, const int* irsrc, const int* icsrc,
               const int* context, const int* lld, int* info);
void pdsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* ia, const int* ja,
              const int* desca, double* w, double* z, const int* iz, const int* jz, const int* descz, double* work,
              const int* lwork, int* iwork, const int* liwork, int* info, std::size_t jobz_length,
              std::size_t uplo_length);
void pdpotrf_(const char* uplo, const int* n, double* a, const int* ia, const int* ja, const int* desca, int* info,
              std::size_t uplo_length);
void pdpotrs_(const char* uplo, const int* n, const int* nrhs, const double* a, const int* ia, const int* ja,
              const int* desca, double* b, const int* ib, const int* jb, const int* descb, int* info,
              std::size_t uplo_length);
void pdgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
             const double* a, const int* ia, const int* ja, const int* desca, const double* b, const int* ib,
             const int* jb, const int* descb, const double* beta, double* c, const int* ic, const int* jc,
             const int* descc, std::size_t transa_length, std::size_t transb_length);
void pdsymm_(const char* side, const char* uplo, const int* m, const int* n, const double* alpha, const double* a,
             const int* ia, const int* ja, const int* desca, const double* b, const int* ib, const int* jb,
             const int* descb, const double* beta, double* c, const int* ic, const int* jc, const int* descc,
             std::size_t side_length, std::size_t uplo_length);
}
}  // namespace scalapack

inline int to_int(const char* function, Eigen::Index v) {
  if (v > INT_MAX) ntk::detail::fail<std::overflow_error>(function, "size beyond ScaLAPACK's int range (got ", v, ")");
  return static_cast<int>(v);
}

}  // namespace detail

/// A BLACS process grid over a communicator: prow x pcol with prow the largest divisor of P not
/// above √P (row-major rank order).  Not copyable.
class BlacsGrid {
 public:
  explicit BlacsGrid(MPI_Comm comm) : m_comm(comm) {
    const int p = size(comm);
    m_rows = 1;
    for (int r = 1; r * r <= p; ++r)
      if (p % r == 0) m_rows = r;
    m_cols = p / m_rows;
    m_handle = detail::scalapack::Csys2blacs_handle(comm);
    m_context = m_handle;
    detail::scalapack::Cblacs_gridinit(&m_context, "Row", m_rows, m_cols);
    int rows = 0, cols = 0;
    detail::scalapack::Cblacs_gridinfo(m_context, &rows, &cols, &m_row, &m_col);
  }
  BlacsGrid(const BlacsGrid&) = delete;
  BlacsGrid& operator=(const BlacsGrid&) = delete;
  ~BlacsGrid() {
    detail::scalapack::Cblacs_gridexit(m_context);
    detail::scalapack::Cfree_blacs_system_handle(m_handle);
  }

  MPI_Comm communicator() const { return m_comm; }
  int context() const { return m_context; }
  int rows() const { return m_rows; }
  int cols() const { return m_cols; }
  int row() const { return m_row; }
  int col() const { return m_col; }

 private:
  MPI_Comm m_comm;
  int m_handle = 0, m_context = 0, m_rows = 1, m_cols = 1, m_row = 0, m_col = 0;
};

/// An m x n matrix in ScaLAPACK's block-cyclic layout (square blocks of `block`, first block on
/// process (0, 0)): this rank's local part, column-major, and its descriptor.
class BlockCyclicMatrix {
 public:
  using Matrix = Eigen::MatrixXd;

  BlockCyclicMatrix(const BlacsGrid& grid, Eigen::Index rows, Eigen::Index cols, int block)
      : m_rows(rows),
        m_cols(cols),
        m_block(block),
        m_grid_rows(grid.rows()),
        m_grid_cols(grid.cols()),
        m_row(grid.row()),
        m_col(grid.col()) {
    const char* fn = "BlockCyclicMatrix";
    const int m = detail::to_int(fn, rows), n = detail::to_int(fn, cols), zero = 0;
    const int local_rows = detail::scalapack::numroc_(&m, &block, &m_row, &zero, &m_grid_rows);
    const int local_cols = detail::scalapack::numroc_(&n, &block, &m_col, &zero, &m_grid_cols);
    const int lld = std::max(1, local_rows), context = grid.context();
    int info = 0;
    detail::scalapack::descinit_(m_desc, &m, &n, &block, &block, &zero, &zero, &context, &lld, &info);
    if (info != 0) ntk::detail::fail<std::invalid_argument>(fn, "descinit failed (info ", info, ")");
    m_local = Matrix::Zero(local_rows, local_cols);
  }

  Eigen::Index rows() const { return m_rows; }
  Eigen::Index cols() const { return m_cols; }
  Matrix& local() { return m_local; }
  const Matrix& local() const { return m_local; }
  const int* descriptor() const { return m_desc; }
  /// Global row of local row i (and column of local column j).
  Eigen::Index global_row(Eigen::Index i) const { return global(i, m_row, m_grid_rows); }
  Eigen::Index global_col(Eigen::Index j) const { return global(j, m_col, m_grid_cols); }

 private:
  Eigen::Index global(Eigen::Index local, int coordinate, int count) const {
    const Eigen::Index b = m_block;
    return ((local / b) * count + coordinate) * b + local % b;
  }

  Eigen::Index m_rows, m_cols;
  int m_block, m_grid_rows, m_grid_cols, m_row, m_col;
  int m_desc[9] = {};
  Matrix m_local;
};

namespace detail {

/// Rows `global(i)` of x for this rank's local rows (or columns).
template <class D, class Global>
Eigen::MatrixXd gather_rows(const Eigen::MatrixBase<D>& x, Eigen::Index count, Global global) {
  Eigen::MatrixXd out(count, x.cols());
  for (Eigen::Index i = 0; i < count; ++i) out.row(i) = x.row(global(i));
  return out;
}

/// The image-kernel options matching KernelOptions (threads, dual).
inline ImageKernelOptions image_options(const KernelOptions& options) {
  ImageKernelOptions out;
  out.threads = options.threads;
  out.dual = options.dual;
  return out;
}

/// The checks of a kernel request between x1 and x2: an MLP-style architecture (kernel.hpp) ...
template <class Arch, class D1, class D2>
void check_inputs(const char* function, const Arch& arch, const Eigen::MatrixBase<D1>& x1,
                  const Eigen::MatrixBase<D2>& x2, const KernelOptions& options) {
  ntk::detail::check_request(function, arch, x1, x2, options);
}
/// ... or an image architecture (conv.hpp: rows are images, channels last).
template <class D1, class D2>
void check_inputs(const char* function, const ImageArchitecture& arch, const Eigen::MatrixBase<D1>& x1,
                  const Eigen::MatrixBase<D2>& x2, const KernelOptions& options) {
  image_options(options).check(function);
  arch.check_flat(function);
  ntk::detail::check_images(function, "x1", arch, x1);
  ntk::detail::check_images(function, "x2", arch, x2);
}

/// K(x1, x2) of one kind (nngp or ntk) into `out`: the tile engine (kernel_into) ...
template <class Arch, class D1, class D2, class Out>
void fill_kernel(const Arch& arch, const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2, KernelKind kind,
                 Out&& out, const KernelOptions& options) {
  kernel_into(arch, x1, x2, kind, out, options);
}
/// ... or image_kernel between the two sets of images.
template <class D1, class D2, class Out>
void fill_kernel(const ImageArchitecture& arch, const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2,
                 KernelKind kind, Out&& out, const KernelOptions& options) {
  Kernels<double> k = image_kernel(arch, x1, x2, kind, image_options(options));
  out = kind == KernelKind::ntk ? k.ntk : k.nngp;
}

/// Both kernels between x1 and x2 (one pass): kernel() or image_kernel().
template <class Arch, class D1, class D2>
Kernels<double> both_kernels(const Arch& arch, const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2,
                             const KernelOptions& options) {
  return kernel(arch, x1, x2, KernelKind::both, options);
}
template <class D1, class D2>
Kernels<double> both_kernels(const ImageArchitecture& arch, const Eigen::MatrixBase<D1>& x1,
                             const Eigen::MatrixBase<D2>& x2, const KernelOptions& options) {
  return image_kernel(arch, x1, x2, KernelKind::both, image_options(options));
}

/// Σ(x, x) for each row of x (n): kernel_diagonal() ...
template <class Arch, class D>
Eigen::VectorXd nngp_diagonal(const Arch& arch, const Eigen::MatrixBase<D>& x, const KernelOptions& options) {
  return kernel_diagonal(arch, x, options).nngp.col(0);
}
/// ... or each image's own 1 x 1 image_kernel (the diagonal of the symmetric image_kernel).
template <class D>
Eigen::VectorXd nngp_diagonal(const ImageArchitecture& arch, const Eigen::MatrixBase<D>& x,
                              const KernelOptions& options) {
  Eigen::VectorXd out(x.rows());
  for (Eigen::Index i = 0; i < x.rows(); ++i)
    out[i] = image_kernel(arch, x.row(i), KernelKind::nngp, image_options(options)).nngp(0, 0);
  return out;
}

/// This rank's blocks of the upper triangle of K(x, x) (+ ridge on the diagonal): for each local
/// column panel, the local rows up to the panel's last global column, one kernel_into call each.
/// Entries below the diagonal are left as they are (ScaLAPACK reads the upper triangle).  Arch: an
/// MLP-style architecture (the tile engine) or an ImageArchitecture (image_kernel per panel).
template <class Arch, class D>
void fill_upper(const Arch& arch, const Eigen::MatrixBase<D>& x, KernelKind kind, const KernelOptions& options,
                double ridge, int block, BlockCyclicMatrix& a) {
  Eigen::MatrixXd& local = a.local();
  const Eigen::Index lr = local.rows(), lc = local.cols();
  const Eigen::MatrixXd rows = gather_rows(x, lr, [&](Eigen::Index i) { return a.global_row(i); });
  const Eigen::MatrixXd cols = gather_rows(x, lc, [&](Eigen::Index j) { return a.global_col(j); });
  for (Eigen::Index c0 = 0; c0 < lc; c0 += block) {
    const Eigen::Index width = std::min<Eigen::Index>(block, lc - c0);
    const Eigen::Index last = a.global_col(c0 + width - 1);
    Eigen::Index r = 0;  // local rows are in increasing global order
    while (r < lr && a.global_row(r) <= last) ++r;
    if (r == 0) continue;
    auto target = local.block(0, c0, r, width);
    fill_kernel(arch, rows.topRows(r), cols.middleRows(c0, width), kind, target, options);
  }
  if (ridge != 0)
    for (Eigen::Index j = 0; j < lc; ++j)
      for (Eigen::Index i = 0; i < lr; ++i)
        if (a.global_row(i) == a.global_col(j)) local(i, j) += ridge;
}

/// The spectral functions of LinearizedDynamics (dynamics.hpp): e(λ, t) = e^{−ηλt} or (1 − ηλ)^t,
/// and g(λ, t) = (1 − e(λ, t))/λ (→ η t as λ → 0), with the pseudo-inverse rule at t = ∞.
inline double spectral_decay(double l, double t, double eta, TimeModel model, double tolerance) {
  if (std::isinf(t)) return l > tolerance ? 0.0 : 1.0;
  if (model == TimeModel::continuous) return l == 0 ? 1.0 : std::exp(-(eta * t) * l);
  return std::pow(1 - eta * l, t);
}
inline double spectral_factor(double l, double t, double eta, TimeModel model, double tolerance) {
  if (std::isinf(t)) return l > tolerance ? 1 / l : 0.0;
  if (l == 0 || t == 0) return eta * t;
  if (model == TimeModel::continuous) return -std::expm1(-(eta * t) * l) / l;
  if (eta * l < 0.5) return -std::expm1(t * std::log1p(-eta * l)) / l;
  return (1 - std::pow(1 - eta * l, t)) / l;
}

inline void check_time(const char* function, double t, TimeModel model) {
  if (!(t >= 0)) ntk::detail::fail<std::invalid_argument>(function, "time must be >= 0 (got ", t, ")");
  if (model == TimeModel::discrete && std::isfinite(t) && t != std::floor(t))
    ntk::detail::fail<std::invalid_argument>(function,
                                             "discrete time must be an integer number of "
                                             "steps (got ",
                                             t, ")");
}

}  // namespace detail

/// Collective: mpi::cross_kernel_times (mpi.hpp) for an image architecture: κ(x_test, X) C with
/// each rank taking n/P training images and the test images in blocks of `block` (image_kernel
/// between the two sets), the partial products summed.  Identical on every rank.
template <class DT, class DX, class DC>
Eigen::MatrixXd cross_kernel_times(MPI_Comm comm, const ImageArchitecture& arch, const Eigen::MatrixBase<DT>& x_test,
                                   const Eigen::MatrixBase<DX>& x_train, KernelKind kind,
                                   const Eigen::MatrixBase<DC>& alpha, const KernelOptions& kernel_options = {},
                                   Eigen::Index block = 1024) {
  const char* fn = "mpi::cross_kernel_times";
  return detail::blocked_cross_times(
      comm, fn, x_test, x_train, kind, alpha, block,
      [&] { detail::check_inputs(fn, arch, x_test, x_train, kernel_options); },
      [&](const auto& test, const auto& train, auto& target) {
        detail::fill_kernel(arch, test, train, kind, target, kernel_options);
      });
}

/// Options of the ScaLAPACK paths.
struct ScalapackOptions {
  int block = 64;  ///< block-cyclic block size (ScaLAPACK's usual 32–128)

  void check(const char* function) const { ntk::detail::check_at_least(function, "block", block, 1); }
};

/// The closed-form linearized dynamics of LinearizedDynamics (shared n x n kernel) with the
/// eigendecomposition distributed: G0 = Θ(X, X) or Σ(X, X) is computed into a block-cyclic matrix
/// and decomposed by pdsyevd.  Eigenvalues are replicated; V stays distributed.  Same conventions,
/// tolerances and exceptions as LinearizedDynamics; every member is collective.  Arch: an MLP-style
/// architecture (kernel.hpp) or an ImageArchitecture (conv.hpp: each rank's blocks by image_kernel).
class ScalapackDynamics {
 public:
  using Matrix = Eigen::MatrixXd;
  using Vector = Eigen::VectorXd;

  /// x: training inputs (n x d), y: targets (n x k), options.f0: f0(X) (n x k) or empty for 0;
  /// all identical on every rank.
  template <class Arch, class D, class DY>
  ScalapackDynamics(MPI_Comm comm, const Arch& arch, const Eigen::MatrixBase<D>& x, const Eigen::MatrixBase<DY>& y,
                    KernelKind kind, const DynamicsOptions& options = {}, const KernelOptions& kernel_options = {},
                    const ScalapackOptions& scalapack_options = {})
      : m_comm(comm), m_grid(comm), m_options(options), m_n(x.rows()), m_k(y.cols()) {
    static_assert(std::is_same_v<typename DY::Scalar, double>, "ntk::ScalapackDynamics: double only");
    static_assert(std::is_same_v<typename D::Scalar, double>, "ntk::ScalapackDynamics: double only");
    const char* fn = "ScalapackDynamics";
    // pdsyevd mis-sizes its workspace when a block is larger than a process's share of the rows:
    // blocks no larger than n / (grid side).
    const int side = std::max(m_grid.rows(), m_grid.cols());
    const int block = static_cast<int>(
        std::max<Eigen::Index>(1, std::min<Eigen::Index>(scalapack_options.block, (x.rows() + side - 1) / side)));
    m_block = block;
    std::unique_ptr<BlockCyclicMatrix> a;
    collective(comm, [&] {
      options.check(fn);
      scalapack_options.check(fn);
      if (kind == KernelKind::both) ntk::detail::fail<std::invalid_argument>(fn, "kind must be nngp or ntk (got both)");
      detail::check_inputs(fn, arch, x, x, kernel_options);
      ntk::detail::check_nonempty(fn, "y", y);
      ntk::detail::check_rows(fn, "y", y, m_n);
      ntk::detail::check_finite(fn, "y", y);
      m_residual = options.f0.size() == 0 ? Matrix::Zero(m_n, m_k) : options.f0;
      ntk::detail::check_rows(fn, "f0", m_residual, m_n);
      ntk::detail::check_cols(fn, "f0", m_residual, m_k);
      ntk::detail::check_finite(fn, "f0", m_residual);
      m_y = y;
      m_residual -= m_y;
      a = std::make_unique<BlockCyclicMatrix>(m_grid, m_n, m_n, block);
      m_v = std::make_unique<BlockCyclicMatrix>(m_grid, m_n, m_n, block);
      const auto start = std::chrono::steady_clock::now();
      detail::fill_upper(arch, x, kind, kernel_options, 0, block, *a);
      m_kernel_seconds = seconds_since(start);
    });
    // The trace for a relative ridge: the diagonal entries of the filled matrix, summed over ranks.
    double trace = 0;
    if (options.diag_reg_relative) {
      const Matrix& local = a->local();
      for (Eigen::Index j = 0; j < local.cols(); ++j)
        for (Eigen::Index i = 0; i < local.rows(); ++i)
          if (a->global_row(i) == a->global_col(j)) trace += local(i, j);
      detail::sum_replicated(comm, &trace, 1, detail::Failure{});
    }
    const auto start = std::chrono::steady_clock::now();
    const int n = detail::to_int(fn, m_n), one = 1;
    m_lambda.resize(m_n);
    int info = 0, lwork = -1, liwork = -1, iwork_size = 0;
    double work_size = 0;
    detail::scalapack::pdsyevd_("V", "U", &n, a->local().data(), &one, &one, a->descriptor(), m_lambda.data(),
                                m_v->local().data(), &one, &one, m_v->descriptor(), &work_size, &lwork, &iwork_size,
                                &liwork, &info, 1, 1);
    // Some ScaLAPACK versions under-report pdsyevd's workspace: a margin.
    lwork = static_cast<int>(work_size * 1.2) + 4096;
    liwork = std::max(iwork_size, 1) + 64;
    std::vector<double> work(static_cast<std::size_t>(lwork));
    std::vector<int> iwork(static_cast<std::size_t>(liwork));
    detail::scalapack::pdsyevd_("V", "U", &n, a->local().data(), &one, &one, a->descriptor(), m_lambda.data(),
                                m_v->local().data(), &one, &one, m_v->descriptor(), work.data(), &lwork, iwork.data(),
                                &liwork, &info, 1, 1);
    m_solve_seconds = seconds_since(start);
    a.reset();
    collective(comm, [&] {
      if (info != 0) ntk::detail::fail<std::runtime_error>(fn, "pdsyevd failed (info ", info, ")");
      const double top = std::max(m_lambda.cwiseAbs().maxCoeff(), 0.0);
      if (m_lambda.minCoeff() < -1e-10 * top)
        ntk::detail::fail<std::invalid_argument>(fn,
                                                 "g0 must be positive semi-definite (got "
                                                 "eigenvalue ",
                                                 m_lambda.minCoeff(), " with largest ", top, ")");
      m_lambda = m_lambda.cwiseMax(0.0);
      double ridge = options.diag_reg;
      if (options.diag_reg_relative) ridge *= trace / static_cast<double>(m_n);
      m_lambda.array() += ridge;
      m_tolerance = options.pinv_tolerance >= 0
                        ? options.pinv_tolerance
                        : static_cast<double>(m_n) * std::numeric_limits<double>::epsilon() * m_lambda.maxCoeff();
      const double eta = options.learning_rate;
      if (options.time == TimeModel::discrete && eta * m_lambda.maxCoeff() >= 2)
        ntk::detail::fail<std::invalid_argument>(fn, "learning_rate ", eta,
                                                 " >= 2 / lambda_max = ", 2 / m_lambda.maxCoeff(),
                                                 ": discrete gradient descent diverges");
    });
    // z0 = Vᵀ (f0 − Y): each rank's V entries against the replicated residual, then summed.
    m_z0 = transpose_product(m_residual);
  }

  /// Eigenvalues of G0 (+ ridge), ascending (replicated).
  const Vector& eigenvalues() const { return m_lambda; }

  /// α_t = G0⁻¹(I − e^{−η G0 t})(Y − f0(X)) = −V diag(g(λ, t)) z0 (n x k): f_t(x) = f0(x) + κ(x, X) α_t.
  Matrix coefficients(double t) const {
    detail::check_time("ScalapackDynamics::coefficients", t, m_options.time);
    Vector g(m_n);
    for (Eigen::Index i = 0; i < m_n; ++i)
      g[i] = -detail::spectral_factor(m_lambda[i], t, m_options.learning_rate, m_options.time, m_tolerance);
    return product(g);
  }

  /// f_t(X) (eq. 25): Y + e^{−η G0 t}(f0(X) − Y), n x k.
  Matrix train_predictions(double t) const {
    detail::check_time("ScalapackDynamics::train_predictions", t, m_options.time);
    Vector e(m_n);
    for (Eigen::Index i = 0; i < m_n; ++i)
      e[i] = detail::spectral_decay(m_lambda[i], t, m_options.learning_rate, m_options.time, m_tolerance);
    return m_y + product(e);
  }

  /// f_t(x_test) for every time (eq. 26), m x k each, from one pass of the test kernel (each rank
  /// n/P training rows; blocks of test points).  f0_test: m x k or empty for 0.
  template <class Arch, class DT, class DX>
  std::vector<Matrix> test_predictions(const Arch& arch, const Eigen::MatrixBase<DT>& x_test,
                                       const Eigen::MatrixBase<DX>& x_train, KernelKind kind,
                                       const std::vector<double>& times, const Matrix& f0_test = Matrix(),
                                       const KernelOptions& kernel_options = {}) const {
    Matrix stacked(m_n, m_k * static_cast<Eigen::Index>(times.size()));
    for (std::size_t i = 0; i < times.size(); ++i)
      stacked.middleCols(m_k * static_cast<Eigen::Index>(i), m_k) = coefficients(times[i]);
    const Matrix change = cross_kernel_times(m_comm, arch, x_test, x_train, kind, stacked, kernel_options);
    std::vector<Matrix> out;
    for (std::size_t i = 0; i < times.size(); ++i) {
      Matrix f = change.middleCols(m_k * static_cast<Eigen::Index>(i), m_k);
      if (f0_test.size() != 0) f += f0_test;
      out.push_back(std::move(f));
    }
    return out;
  }

  /// The diagonal of the test covariance at each time (m x 1 each; an m x m matrix never exists):
  /// kind ntk, the NTK-GP covariance LinearizedDynamics::ntk_gp_covariance gives for dynamics built
  /// on Θ(X, X) with f0 ~ GP(0, K):
  ///   Σ_t(x_i, x_i) = K(x_i, x_i) + a_iᵀ K(X, X) a_i − 2 a_iᵀ K(X, x_i),  a_i = V diag(g(λ, t)) Vᵀ Θ(X, x_i);
  /// kind nngp (dynamics built on K(X, X)), nngp_gp_covariance's
  ///   Σ_t(x_i, x_i) = K(x_i, x_i) − Σ_j g(λ_j, 2t) (Vᵀ K(X, x_i))_j².
  /// kind must be the dynamics' kernel.  The cross kernels (and for ntk K(X, X) again) are filled
  /// block-cyclic; products by pdgemm/pdsymm.  Memory per rank: O(n²/P + n m/P) (one more n x n
  /// matrix for ntk, four n x m ones).  Not clamped at 0 (round-off may leave −ε).
  template <class Arch, class DT, class DX>
  std::vector<Vector> test_variances(const Arch& arch, const Eigen::MatrixBase<DT>& x_test,
                                     const Eigen::MatrixBase<DX>& x_train, KernelKind kind,
                                     const std::vector<double>& times, const KernelOptions& kernel_options = {}) const {
    const char* fn = "ScalapackDynamics::test_variances";
    const Eigen::Index m = x_test.rows();
    const bool ntk_gp = kind == KernelKind::ntk;
    std::unique_ptr<BlockCyclicMatrix> cross, cross_nngp, train_nngp, w, scaled, at;
    Vector self = Vector::Zero(m);
    collective(m_comm, [&] {
      if (kind == KernelKind::both) ntk::detail::fail<std::invalid_argument>(fn, "kind must be nngp or ntk (got both)");
      detail::check_inputs(fn, arch, x_test, x_train, kernel_options);
      ntk::detail::check_rows(fn, "x_train", x_train, m_n);
      for (double t : times) detail::check_time(fn, t, m_options.time);
      cross = std::make_unique<BlockCyclicMatrix>(m_grid, m_n, m, m_block);  // κ(X, x), n x m
      w = std::make_unique<BlockCyclicMatrix>(m_grid, m_n, m, m_block);
      Matrix& local = cross->local();
      const Matrix rows =
          detail::gather_rows(x_train, local.rows(), [&](Eigen::Index i) { return cross->global_row(i); });
      const Matrix cols =
          detail::gather_rows(x_test, local.cols(), [&](Eigen::Index j) { return cross->global_col(j); });
      if (ntk_gp) {
        cross_nngp = std::make_unique<BlockCyclicMatrix>(m_grid, m_n, m, m_block);
        scaled = std::make_unique<BlockCyclicMatrix>(m_grid, m_n, m, m_block);
        at = std::make_unique<BlockCyclicMatrix>(m_grid, m_n, m, m_block);
        train_nngp = std::make_unique<BlockCyclicMatrix>(m_grid, m_n, m_n, m_block);
        detail::fill_upper(arch, x_train, KernelKind::nngp, kernel_options, 0, m_block, *train_nngp);
        if (local.size() != 0) {
          Kernels<double> both = detail::both_kernels(arch, rows, cols, kernel_options);
          local = std::move(both.ntk);
          cross_nngp->local() = std::move(both.nngp);
        }
      } else if (local.size() != 0) {
        detail::fill_kernel(arch, rows, cols, kind, local, kernel_options);
      }
      // K(x_i, x_i): each rank an even share of the test points, summed below.
      const auto [t0, t1] = detail::even_range(m, size(m_comm), rank(m_comm));
      if (t1 > t0)
        self.segment(t0, t1 - t0) = detail::nngp_diagonal(arch, x_test.middleRows(t0, t1 - t0), kernel_options);
    });
    detail::sum_replicated(m_comm, self.data(), self.size(), detail::Failure{});
    const int n = detail::to_int(fn, m_n), mm = detail::to_int(fn, m), one = 1;
    const double unit = 1, zero = 0;
    // W = Vᵀ κ(X, x) (n x m), once for every time.
    detail::scalapack::pdgemm_("T", "N", &n, &mm, &n, &unit, m_v->local().data(), &one, &one, m_v->descriptor(),
                               cross->local().data(), &one, &one, cross->descriptor(), &zero, w->local().data(), &one,
                               &one, w->descriptor(), 1, 1);
    cross.reset();
    const Matrix& wl = w->local();
    std::vector<Vector> out;
    for (double t : times) {
      Vector sum = Vector::Zero(m);
      const double time = ntk_gp ? t : 2 * t;
      Vector g(m_n);
      for (Eigen::Index j = 0; j < m_n; ++j)
        g[j] = detail::spectral_factor(m_lambda[j], time, m_options.learning_rate, m_options.time, m_tolerance);
      if (!ntk_gp) {
        for (Eigen::Index c = 0; c < wl.cols(); ++c) {
          double s = 0;
          for (Eigen::Index r = 0; r < wl.rows(); ++r) s += g[w->global_row(r)] * wl(r, c) * wl(r, c);
          sum[w->global_col(c)] = -s;
        }
      } else {
        // Aᵀ = V diag(g) W, then K(X, X) Aᵀ (into the scaled buffer).
        Matrix& sl = scaled->local();
        for (Eigen::Index r = 0; r < wl.rows(); ++r) sl.row(r) = g[w->global_row(r)] * wl.row(r);
        detail::scalapack::pdgemm_("N", "N", &n, &mm, &n, &unit, m_v->local().data(), &one, &one, m_v->descriptor(),
                                   sl.data(), &one, &one, scaled->descriptor(), &zero, at->local().data(), &one, &one,
                                   at->descriptor(), 1, 1);
        detail::scalapack::pdsymm_("L", "U", &n, &mm, &unit, train_nngp->local().data(), &one, &one,
                                   train_nngp->descriptor(), at->local().data(), &one, &one, at->descriptor(), &zero,
                                   sl.data(), &one, &one, scaled->descriptor(), 1, 1);
        const Matrix& al = at->local();
        const Matrix& kl = cross_nngp->local();
        for (Eigen::Index c = 0; c < al.cols(); ++c)
          sum[at->global_col(c)] = al.col(c).dot(sl.col(c)) - 2 * al.col(c).dot(kl.col(c));
      }
      detail::Failure local;
      if (!sum.allFinite())
        local = {detail::Failure::overflow_error,
                 "ntk::ScalapackDynamics::test_variances: the result exceeds the scalar type's range"};
      detail::sum_replicated(m_comm, sum.data(), sum.size(), local);
      out.push_back(self + sum);
    }
    return out;
  }

  /// Wall time of this rank's kernel phase and of pdsyevd.
  double kernel_seconds() const { return m_kernel_seconds; }
  double solve_seconds() const { return m_solve_seconds; }
  const BlacsGrid& grid() const { return m_grid; }

 private:
  static double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  /// Vᵀ r for replicated r (n x k).
  Matrix transpose_product(const Matrix& r) const {
    const Matrix& v = m_v->local();
    Matrix rows(v.rows(), m_k);
    for (Eigen::Index i = 0; i < v.rows(); ++i) rows.row(i) = r.row(m_v->global_row(i));
    const Matrix part = v.transpose() * rows;
    Matrix out = Matrix::Zero(m_n, m_k);
    for (Eigen::Index j = 0; j < v.cols(); ++j) out.row(m_v->global_col(j)) = part.row(j);
    detail::sum_replicated(m_comm, out.data(), out.size(), detail::Failure{});
    return out;
  }

  /// V diag(s) z0 (n x k), replicated.
  Matrix product(const Vector& s) const {
    const Matrix& v = m_v->local();
    Matrix scaled(v.cols(), m_k);
    for (Eigen::Index j = 0; j < v.cols(); ++j) {
      const Eigen::Index g = m_v->global_col(j);
      scaled.row(j) = s[g] * m_z0.row(g);
    }
    const Matrix part = v * scaled;
    Matrix out = Matrix::Zero(m_n, m_k);
    for (Eigen::Index i = 0; i < v.rows(); ++i) out.row(m_v->global_row(i)) = part.row(i);
    detail::Failure local;
    if (!out.allFinite())
      local = {detail::Failure::overflow_error, "ntk::ScalapackDynamics: the result exceeds the scalar type's range"};
    detail::sum_replicated(m_comm, out.data(), out.size(), local);
    return out;
  }

  MPI_Comm m_comm;
  BlacsGrid m_grid;
  DynamicsOptions m_options;
  Eigen::Index m_n, m_k;
  Matrix m_y, m_residual, m_z0;
  Vector m_lambda;
  double m_tolerance = 0;
  int m_block = 1;
  std::unique_ptr<BlockCyclicMatrix> m_v;
  double m_kernel_seconds = 0, m_solve_seconds = 0;
};

/// Result of scalapack_solve.
struct ScalapackSolution {
  Eigen::MatrixXd coefficients;  ///< α = (G0 + λ I)⁻¹ (Y − f0(X)), n x k, replicated
  double kernel_seconds = 0, solve_seconds = 0;
};

/// t = ∞ by Cholesky: α = (G0 + λ I)⁻¹ R with R = y − f0 (n x k, replicated), G0 = Θ(X, X) or
/// Σ(X, X) filled block-cyclic, pdpotrf + pdpotrs; predictions f0(x) + κ(x, X) α
/// (cross_kernel_times).  λ = ridge (absolute).  Throws std::domain_error on every rank when
/// G0 + λ I is not numerically positive definite (use a ridge or ScalapackDynamics' pseudo-inverse).
template <class Arch, class D, class DR>
ScalapackSolution scalapack_solve(MPI_Comm comm, const Arch& arch, const Eigen::MatrixBase<D>& x,
                                  const Eigen::MatrixBase<DR>& r, KernelKind kind, double ridge,
                                  const KernelOptions& kernel_options = {},
                                  const ScalapackOptions& scalapack_options = {}) {
  static_assert(std::is_same_v<typename D::Scalar, double>, "ntk::scalapack_solve: double only");
  const char* fn = "scalapack_solve";
  const BlacsGrid grid(comm);
  const int block = scalapack_options.block;
  std::unique_ptr<BlockCyclicMatrix> a, b;
  ScalapackSolution out;
  collective(comm, [&] {
    scalapack_options.check(fn);
    ntk::detail::check_nonnegative(fn, "ridge", ridge);
    if (kind == KernelKind::both) ntk::detail::fail<std::invalid_argument>(fn, "kind must be nngp or ntk (got both)");
    detail::check_inputs(fn, arch, x, x, kernel_options);
    ntk::detail::check_nonempty(fn, "r", r);
    ntk::detail::check_rows(fn, "r", r, x.rows());
    ntk::detail::check_finite(fn, "r", r);
    a = std::make_unique<BlockCyclicMatrix>(grid, x.rows(), x.rows(), block);
    b = std::make_unique<BlockCyclicMatrix>(grid, x.rows(), r.cols(), block);
    const auto start = std::chrono::steady_clock::now();
    detail::fill_upper(arch, x, kind, kernel_options, ridge, block, *a);
    out.kernel_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    Eigen::MatrixXd& local = b->local();
    for (Eigen::Index j = 0; j < local.cols(); ++j)
      for (Eigen::Index i = 0; i < local.rows(); ++i) local(i, j) = r(b->global_row(i), b->global_col(j));
  });
  const auto start = std::chrono::steady_clock::now();
  const int n = detail::to_int(fn, x.rows()), k = detail::to_int(fn, r.cols()), one = 1;
  int info = 0;
  detail::scalapack::pdpotrf_("U", &n, a->local().data(), &one, &one, a->descriptor(), &info, 1);
  int worst = 0;
  MPI_Allreduce(&info, &worst, 1, MPI_INT, MPI_MAX, comm);
  if (worst == 0)
    detail::scalapack::pdpotrs_("U", &n, &k, a->local().data(), &one, &one, a->descriptor(), b->local().data(), &one,
                                &one, b->descriptor(), &info, 1);
  out.solve_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  detail::Failure local;
  if (worst > 0)
    local = {detail::Failure::domain_error,
             "ntk::scalapack_solve: G0 + ridge I is not positive definite (leading minor " + std::to_string(worst) +
                 "); add a ridge or use ScalapackDynamics"};
  else if (worst < 0 || info != 0)
    local = {detail::Failure::runtime_error,
             "ntk::scalapack_solve: pdpotrf/pdpotrs failed (info " + std::to_string(worst ? worst : info) + ")"};
  Eigen::MatrixXd alpha = Eigen::MatrixXd::Zero(x.rows(), r.cols());
  if (!local.failed()) {
    const Eigen::MatrixXd& part = b->local();
    for (Eigen::Index j = 0; j < part.cols(); ++j)
      for (Eigen::Index i = 0; i < part.rows(); ++i) alpha(b->global_row(i), b->global_col(j)) = part(i, j);
  }
  detail::sum_replicated(comm, alpha.data(), alpha.size(), local);
  out.coefficients = std::move(alpha);
  return out;
}

}  // namespace mpi
}  // namespace ntk
