#pragma once
/// \file dynamics.hpp
/// Closed-form dynamics of the linearized network under the squared loss (lecture eqs. 22–26;
/// Lee et al. 2019), from one symmetric eigendecomposition G0 = V Λ Vᵀ.
///
/// Conventions:
///   - loss: the lecture's sum L = ½ Σ_i ‖f(x_i) − y_i‖², so ḟ = −η G0 (f − Y).  Under a mean loss
///     1/(2N) Σ ‖f − y‖² (Neural Tangents, N = n k = y_train.size) the same trajectory is reached at
///     time t_NT = N t for the same η (equivalently replace η by η / N here);
///   - continuous time (gradient flow): e^{−η G0 t}; discrete time (gradient descent, integer t):
///     (I − η G0)^t, which is exact for the linearized model;
///   - rows are samples; targets Y are n x k.  G0 is either the n x n kernel shared by all k
///     outputs (Θ ⊗ I_k: analytic kernels or the output-averaged empirical NTK) or the full
///     (n k) x (n k) empirical kernel J0 J0ᵀ (rows i k + o, as Network::jacobian).
/// A result beyond the scalar type's range throws std::overflow_error.
/// Every quantity uses the factor G0⁻¹(I − e^{−η G0 t}) = V diag(g(λ, t)) Vᵀ with
/// g = −expm1(−η λ t)/λ (→ η t as λ → 0, never 0/0) or its discrete analogue.  At t = ∞, g = 1/λ on
/// eigenvalues above `pinv_tolerance` and 0 below (a pseudo-inverse); `diag_reg` instead adds a
/// ridge to G0 at every time.
/// With DynamicsOptions::infinite_time_only the eigendecomposition is replaced by one Cholesky
/// factorization of G0 + ridge (n³/3 flops instead of about 9 n³, one n x n factor): only t = ∞
/// can then be asked.  For the iterative solvers of solvers.hpp (no n x n matrix) see there.

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "detail/cholesky.hpp"
#include "errors.hpp"

namespace ntk {

/// Gradient flow (continuous t >= 0) or gradient descent (integer steps t >= 0).
enum class TimeModel { continuous, discrete };

/// Options of LinearizedDynamics.
struct DynamicsOptions {
  double learning_rate = 1;  ///< η > 0
  TimeModel time = TimeModel::continuous;
  double diag_reg = 0;             ///< ridge added to G0 (>= 0)
  bool diag_reg_relative = false;  ///< diag_reg is relative to trace(G0) / N
  /// Eigenvalues at or below this are treated as 0 (pseudo-inverse at t = ∞); negative means
  /// N ε λ_max.
  double pinv_tolerance = -1;
  /// f0(X), the outputs at initialization (n x k); empty means 0 (the mean predictor).
  Eigen::MatrixXd f0;
  /// Only t = ∞ will be asked: factor G0 + ridge by Cholesky (LAPACK potrf when NTK_HAVE_LAPACKE)
  /// instead of an eigendecomposition.  Finite times then throw std::logic_error, eigenvalues()
  /// too.  When G0 + ridge is not numerically positive definite (singular G0 without a ridge) the
  /// eigendecomposition is used after all, so t = ∞ keeps its pseudo-inverse meaning.  In discrete
  /// time the step η < 2/λ_max is checked against a power-iteration estimate of λ_max.
  bool infinite_time_only = false;

  void check(const char* function) const {
    detail::check_positive(function, "learning_rate", learning_rate);
    detail::check_nonnegative(function, "diag_reg", diag_reg);
    detail::check_finite_scalar(function, "pinv_tolerance", pinv_tolerance);
  }
};

/// A batch of test points projected once onto the eigenbasis; predictions at any number of times
/// then cost O(m N k) each.
template <class Scalar>
struct TestProjection {
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> kernel_v;  ///< κ(x, X) V, m x N
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> f0;        ///< f0(x), m x k
};

/// The closed-form linearized dynamics for one kernel G0, targets Y and initial outputs f0(X).
template <class Scalar = double>
class LinearizedDynamics {
 public:
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  /// G0: N x N symmetric PSD (N = n shared, or N = n k full); y: n x k; options.f0: n x k or empty
  /// (0, the mean predictor).  Throws std::invalid_argument for shapes, asymmetry beyond 1e-10
  /// relative, an eigenvalue below −1e-10 λ_max (not PSD) or, in discrete time, η >= 2 / λ_max
  /// (gradient descent diverges); std::domain_error for non-finite input.
  template <class DG, class DY>
  LinearizedDynamics(const Eigen::MatrixBase<DG>& g0, const Eigen::MatrixBase<DY>& y,
                     const DynamicsOptions& options = {})
      : LinearizedDynamics(g0, y, options.f0.cast<Scalar>(), options) {}

  /// The former spelling with f0 beside the options (kept for existing callers; prefer
  /// DynamicsOptions::f0).  A non-empty f0 here overrides options.f0.
  template <class DG, class DY>
  LinearizedDynamics(const Eigen::MatrixBase<DG>& g0, const Eigen::MatrixBase<DY>& y, const Matrix& f0,
                     const DynamicsOptions& options)
      : m_options(options) {
    const char* fn = "LinearizedDynamics";
    options.check(fn);
    detail::check_nonempty(fn, "g0", g0);
    detail::check_nonempty(fn, "y", y);
    detail::check_finite(fn, "g0", g0);
    detail::check_finite(fn, "y", y);
    detail::check_symmetric(fn, "g0", g0);
    m_g0_magnitude = static_cast<Scalar>(g0.cwiseAbs().maxCoeff());
    const Eigen::Index n = y.rows(), k = y.cols(), N = g0.rows();
    if (N == n) {
      m_columns = k;
    } else if (N == n * k) {
      m_columns = 1;
    } else {
      detail::fail<std::invalid_argument>(fn, "g0 must be n x n or (n k) x (n k) for y of shape ", n, " x ", k,
                                          " (got ", N, " x ", N, ")");
    }
    m_n = n;
    m_k = k;
    Matrix start = f0;
    if (start.size() == 0) start = Matrix::Zero(n, k);
    detail::check_rows(fn, "f0", start, n);
    detail::check_cols(fn, "f0", start, k);
    detail::check_finite(fn, "f0", start);
    m_y = y;
    m_f0 = start;

    const Matrix symmetric = (g0 + g0.transpose()) / 2;
    if (options.infinite_time_only && factor_cholesky(symmetric)) return;
    Eigen::SelfAdjointEigenSolver<Matrix> solver(symmetric);
    if (solver.info() != Eigen::Success) detail::fail<std::runtime_error>(fn, "eigendecomposition failed");
    m_v = solver.eigenvectors();
    m_lambda = solver.eigenvalues();
    const Scalar top = std::max(m_lambda.cwiseAbs().maxCoeff(), Scalar(0));
    if (m_lambda.minCoeff() < -Scalar(1e-10) * top)
      detail::fail<std::invalid_argument>(fn, "g0 must be positive semi-definite (got eigenvalue ", m_lambda.minCoeff(),
                                          " with largest ", top, ")");
    m_lambda = m_lambda.cwiseMax(Scalar(0));  // round-off below zero is zero
    Scalar ridge = static_cast<Scalar>(options.diag_reg);
    if (options.diag_reg_relative) ridge *= symmetric.trace() / static_cast<Scalar>(N);
    m_lambda.array() += ridge;
    m_tolerance = options.pinv_tolerance >= 0
                      ? static_cast<Scalar>(options.pinv_tolerance)
                      : static_cast<Scalar>(N) * std::numeric_limits<Scalar>::epsilon() * m_lambda.maxCoeff();
    const Scalar eta = static_cast<Scalar>(options.learning_rate);
    if (options.time == TimeModel::discrete && eta * m_lambda.maxCoeff() >= 2)
      detail::fail<std::invalid_argument>(fn, "learning_rate ", eta, " >= 2 / lambda_max = ", 2 / m_lambda.maxCoeff(),
                                          ": discrete gradient descent diverges");
    m_z0 = m_v.transpose() * flatten(m_f0 - m_y);  // residual in the eigenbasis, N x c
  }

  /// Eigenvalues of G0 (+ ridge), ascending (std::logic_error on the Cholesky path).
  const Vector& eigenvalues() const {
    if (m_cholesky)
      detail::fail<std::logic_error>("LinearizedDynamics::eigenvalues",
                                     "not computed: the dynamics was built with infinite_time_only");
    return m_lambda;
  }
  /// 2 / λ_max: gradient descent on the summed loss diverges at or above this rate (on the
  /// Cholesky path from a power-iteration estimate of λ_max).
  Scalar max_learning_rate() const { return 2 / (m_cholesky ? m_top : m_lambda.maxCoeff()); }
  /// True when built by Cholesky (infinite_time_only and G0 + ridge positive definite).
  bool uses_cholesky() const { return m_cholesky; }

  /// f_t(X) (eq. 25): Y + e^{−η G0 t}(f0(X) − Y); t = +inf allowed.  n x k.
  Matrix train_predictions(double t) const {
    if (m_cholesky) {
      require_infinite("LinearizedDynamics::train_predictions", t);
      return m_y;  // G0 + ridge positive definite: the residual decays completely
    }
    return finite("train_predictions", m_y + unflatten(m_v * (decay(t).asDiagonal() * m_z0)));
  }

  /// ½ ‖f_t(X) − Y‖² for each time.
  std::vector<Scalar> train_loss(const std::vector<double>& times) const {
    std::vector<Scalar> out;
    for (double t : times) {
      if (m_cholesky) {
        require_infinite("LinearizedDynamics::train_loss", t);
        out.push_back(Scalar(0));
        continue;
      }
      out.push_back((decay(t).asDiagonal() * m_z0).squaredNorm() / 2);
    }
    return out;
  }

  /// Projects test points once: kernel_test_train is κ(x, X) (m x n shared, or (m k) x (n k) full);
  /// f0_test is f0(x) (m x k) or empty for 0.  O(m N²).
  template <class D>
  TestProjection<Scalar> project(const Eigen::MatrixBase<D>& kernel_test_train,
                                 const Matrix& f0_test = Matrix()) const {
    const char* fn = "LinearizedDynamics::project";
    detail::check_cols(fn, "kernel_test_train", kernel_test_train, m_columns == 1 ? m_n * m_k : m_n);
    detail::check_finite(fn, "kernel_test_train", kernel_test_train);
    const Eigen::Index m = m_columns == 1 ? kernel_test_train.rows() / m_k : kernel_test_train.rows();
    if (m_columns == 1 && kernel_test_train.rows() % m_k != 0)
      detail::fail<std::invalid_argument>(fn, "kernel_test_train must have a multiple of ", m_k, " rows (got ",
                                          kernel_test_train.rows(), ")");
    TestProjection<Scalar> p;
    if (m_cholesky)
      p.kernel_v = kernel_test_train;  // κ itself: predictions need only κ α, O(m N k)
    else
      p.kernel_v.noalias() = kernel_test_train * m_v;
    p.f0 = f0_test.size() == 0 ? Matrix::Zero(m, m_k) : f0_test;
    detail::check_rows(fn, "f0_test", p.f0, m);
    detail::check_cols(fn, "f0_test", p.f0, m_k);
    detail::check_finite(fn, "f0_test", p.f0);
    return p;
  }

  /// f_t(x) (eq. 26): f0(x) − κ(x, X) G0⁻¹(I − e^{−η G0 t})(f0(X) − Y).  m x k.
  Matrix test_predictions(const TestProjection<Scalar>& p, double t) const {
    if (m_cholesky) require_infinite("LinearizedDynamics::test_predictions", t);
    const Matrix change =
        m_cholesky ? Matrix(p.kernel_v * m_alpha) : Matrix(p.kernel_v * (factor(t).asDiagonal() * m_z0));
    return finite("test_predictions", p.f0 - unflatten(change, p.f0.rows()));
  }
  /// The same for a vector of times (one projection, O(m N k) per time).
  std::vector<Matrix> test_predictions(const TestProjection<Scalar>& p, const std::vector<double>& times) const {
    std::vector<Matrix> out;
    for (double t : times) out.push_back(test_predictions(p, t));
    return out;
  }
  template <class D>
  Matrix test_predictions(const Eigen::MatrixBase<D>& kernel_test_train, double t,
                          const Matrix& f0_test = Matrix()) const {
    return test_predictions(project(kernel_test_train, f0_test), t);
  }

  /// θ_t − θ_0 = −J0ᵀ G0⁻¹(I − e^{−η G0 t})(f0(X) − Y) (eq. 24, with the lecture's transpose
  /// corrected; docs/mathematics.md §2) for the Jacobian J0 ((n k) x p, rows i k + o).
  template <class D>
  Vector parameter_change(const Eigen::MatrixBase<D>& jacobian, double t) const {
    detail::check_rows("LinearizedDynamics::parameter_change", "jacobian", jacobian, m_n * m_k);
    if (m_cholesky) require_infinite("LinearizedDynamics::parameter_change", t);
    const Matrix weighted = m_cholesky ? unflatten(m_alpha) : unflatten(m_v * (factor(t).asDiagonal() * m_z0));
    Vector flat(m_n * m_k);
    for (Eigen::Index i = 0; i < m_n; ++i)
      for (Eigen::Index o = 0; o < m_k; ++o) flat[i * m_k + o] = weighted(i, o);
    const Vector change = -(jacobian.transpose() * flat);
    if (!change.allFinite()) overflow("LinearizedDynamics::parameter_change");
    return change;
  }

  /// NTK-GP covariance of the test outputs at time t (Lee et al. 2019; docs/mathematics.md §2), for a
  /// dynamics built on Θ(X, X) with f0 ~ GP(0, K): with A = Θ(x, X) Θ⁻¹(I − e^{−ηΘt}),
  ///   Σ_t = K(x, x) + A K(X, X) Aᵀ − A K(X, x) − K(x, X) Aᵀ.   (m x m; shared kernel only)
  Matrix ntk_gp_covariance(const TestProjection<Scalar>& theta_test, const Matrix& nngp_train_train,
                           const Matrix& nngp_test_train, const Matrix& nngp_test_test, double t) const {
    const char* fn = "LinearizedDynamics::ntk_gp_covariance";
    require_shared(fn);
    detail::check_rows(fn, "nngp_train_train", nngp_train_train, m_n);
    detail::check_cols(fn, "nngp_train_train", nngp_train_train, m_n);
    detail::check_rows(fn, "nngp_test_train", nngp_test_train, theta_test.kernel_v.rows());
    detail::check_cols(fn, "nngp_test_train", nngp_test_train, m_n);
    detail::check_rows(fn, "nngp_test_test", nngp_test_test, theta_test.kernel_v.rows());
    Matrix a;
    if (m_cholesky) {  // a = κ G0⁻¹ by two triangular solves
      require_infinite(fn, t);
      Matrix at = theta_test.kernel_v.transpose();
      detail::cholesky_solve_in_place<Scalar>(m_l, at);
      a = at.transpose();
    } else {
      a = theta_test.kernel_v * factor(t).asDiagonal() * m_v.transpose();
    }
    const Matrix cross = a * nngp_test_train.transpose();
    return finite("ntk_gp_covariance",
                  nngp_test_test + a * nngp_train_train * a.transpose() - cross - cross.transpose());
  }

  /// NNGP-GP covariance (only the readout trained; dynamics built on K(X, X)):
  ///   Σ_t = K(x, x) − K(x, X) K⁻¹(I − e^{−2ηKt}) K(X, x).  At t = ∞ the GP posterior covariance.
  Matrix nngp_gp_covariance(const TestProjection<Scalar>& nngp_test, const Matrix& nngp_test_test, double t) const {
    const char* fn = "LinearizedDynamics::nngp_gp_covariance";
    require_shared(fn);
    detail::check_rows(fn, "nngp_test_test", nngp_test_test, nngp_test.kernel_v.rows());
    if (m_cholesky) {  // K(x, x) − (L⁻¹ κᵀ)ᵀ (L⁻¹ κᵀ)
      require_infinite(fn, t);
      Matrix b = nngp_test.kernel_v.transpose();
      detail::lower_solve_in_place<Scalar>(m_l, b);
      return finite(fn, nngp_test_test - b.transpose() * b);
    }
    const Vector g = factor(t, 2);
    return finite("nngp_gp_covariance",
                  nngp_test_test - nngp_test.kernel_v * g.asDiagonal() * nngp_test.kernel_v.transpose());
  }

 private:
  /// The Cholesky path: false (and nothing changed) when G0 + ridge is not positive definite.
  bool factor_cholesky(const Matrix& symmetric) {
    const Eigen::Index N = symmetric.rows();
    Scalar ridge = static_cast<Scalar>(m_options.diag_reg);
    if (m_options.diag_reg_relative) ridge *= symmetric.trace() / static_cast<Scalar>(N);
    Matrix l = symmetric;
    l.diagonal().array() += ridge;
    if (!detail::cholesky_in_place<Scalar>(l)) return false;
    // power iteration for λ_max (the discrete step check and max_learning_rate)
    Vector v = Vector::Ones(N) / std::sqrt(static_cast<Scalar>(N)), w;
    Scalar top = 0;
    for (int i = 0; i < 100; ++i) {
      w.noalias() = symmetric.template selfadjointView<Eigen::Lower>() * v;
      top = v.dot(w);
      const Scalar norm = w.norm();
      if (!(norm > 0)) break;
      v = w / norm;
    }
    m_top = top + ridge;
    const Scalar eta = static_cast<Scalar>(m_options.learning_rate);
    if (m_options.time == TimeModel::discrete && eta * m_top >= 2)
      detail::fail<std::invalid_argument>("LinearizedDynamics", "learning_rate ", eta,
                                          " >= 2 / lambda_max = ", 2 / m_top, ": discrete gradient descent diverges");
    m_l = std::move(l);
    m_alpha = flatten(m_f0 - m_y);
    detail::cholesky_solve_in_place<Scalar>(m_l, m_alpha);
    m_cholesky = true;
    return true;
  }

  static void require_infinite(const char* fn, double t) {
    if (!std::isinf(t) || t < 0)
      detail::fail<std::logic_error>(fn,
                                     "only t = inf is available: the dynamics was built with "
                                     "infinite_time_only (got t = ",
                                     t, ")");
  }

  /// Finite input can still produce a result beyond the scalar range (kernel entries and targets
  /// near 1e150 multiply); that is an overflow_error, never inf or NaN.
  /// The message says which way: a g0 so small that its squared scale underflows (subnormal
  /// eigenvalues, whose inverses overflow) is "too small"; otherwise the inputs are too large.
  Matrix finite(const char* function, Matrix m) const {
    if (!m.allFinite()) overflow(function);
    return m;
  }
  [[noreturn]] void overflow(const char* function) const {
    const Scalar tiny = std::sqrt(std::numeric_limits<Scalar>::min());
    if (m_g0_magnitude < tiny)
      detail::fail<std::overflow_error>(function,
                                        "the result exceeds the scalar type's range: g0 is too small "
                                        "(largest |g0| entry ",
                                        m_g0_magnitude, ", its inverse overflows; scale g0 up)");
    detail::fail<std::overflow_error>(function,
                                      "the result exceeds the scalar type's range: the inputs are too "
                                      "large (largest |g0| entry ",
                                      m_g0_magnitude, ")");
  }

  void require_shared(const char* fn) const {
    if (m_columns == 1 && m_k > 1)
      detail::fail<std::invalid_argument>(fn, "needs the shared n x n kernel (got the full kernel)");
  }

  static void check_time(double t, TimeModel model) {
    if (!(t >= 0)) detail::fail<std::invalid_argument>("LinearizedDynamics", "time must be >= 0 (got ", t, ")");
    if (model == TimeModel::discrete && std::isfinite(t) && t != std::floor(t))
      detail::fail<std::invalid_argument>("LinearizedDynamics",
                                          "discrete time must be an integer number of steps (got ", t, ")");
  }

  /// e(λ, t) = e^{−ηλt} or (1 − ηλ)^t; 0 at t = ∞ for λ > tolerance, 1 below it.
  Vector decay(double t) const {
    check_time(t, m_options.time);
    const Scalar eta = static_cast<Scalar>(m_options.learning_rate);
    Vector e(m_lambda.size());
    for (Eigen::Index i = 0; i < e.size(); ++i) {
      const Scalar l = m_lambda[i];
      if (std::isinf(t))
        e[i] = l > m_tolerance ? Scalar(0) : Scalar(1);
      else if (m_options.time == TimeModel::continuous)
        e[i] = l == 0 ? Scalar(1) : std::exp(-(eta * static_cast<Scalar>(t)) * l);  // η t first: t = 0 stays 0
      else
        e[i] = std::pow(1 - eta * l, static_cast<Scalar>(t));
    }
    return e;
  }

  /// g(λ, t) = (1 − e(λ, power t)) / λ, written with expm1/log1p so that g → η t as λ → 0;
  /// at t = ∞, 1/λ above the tolerance and 0 below (pseudo-inverse).
  Vector factor(double t, int power = 1) const {
    check_time(t, m_options.time);
    const Scalar eta = static_cast<Scalar>(m_options.learning_rate);
    const Scalar time = static_cast<Scalar>(t) * static_cast<Scalar>(power);
    Vector g(m_lambda.size());
    for (Eigen::Index i = 0; i < g.size(); ++i) {
      const Scalar l = m_lambda[i];
      if (std::isinf(t)) {
        g[i] = l > m_tolerance ? 1 / l : Scalar(0);
      } else if (l == 0 || time == 0) {
        g[i] = eta * time;
      } else if (m_options.time == TimeModel::continuous) {
        g[i] = -std::expm1(-(eta * time) * l) / l;
      } else if (eta * l < Scalar(0.5)) {
        g[i] = -std::expm1(time * std::log1p(-eta * l)) / l;
      } else {
        g[i] = (1 - std::pow(1 - eta * l, time)) / l;
      }
    }
    return g;
  }

  /// n x k targets as N x c (shared: unchanged; full: sample-major column).
  Matrix flatten(const Matrix& m) const {
    if (m_columns != 1 || m_k == 1) return m;
    Matrix out(m.rows() * m.cols(), 1);
    for (Eigen::Index i = 0; i < m.rows(); ++i)
      for (Eigen::Index o = 0; o < m.cols(); ++o) out(i * m.cols() + o, 0) = m(i, o);
    return out;
  }
  Matrix unflatten(const Matrix& m, Eigen::Index rows = -1) const {
    if (m_columns != 1 || m_k == 1) return m;
    if (rows < 0) rows = m_n;
    Matrix out(rows, m_k);
    for (Eigen::Index i = 0; i < rows; ++i)
      for (Eigen::Index o = 0; o < m_k; ++o) out(i, o) = m(i * m_k + o, 0);
    return out;
  }

  DynamicsOptions m_options;
  Eigen::Index m_n = 0, m_k = 0, m_columns = 0;
  Matrix m_y, m_f0, m_v, m_z0;
  Vector m_lambda;
  Scalar m_tolerance = 0;
  bool m_cholesky = false;
  Matrix m_l, m_alpha;  // Cholesky path: lower factor of G0 + ridge, α = (G0 + ridge)⁻¹ (f0 − Y)
  Scalar m_top = 0;
  Scalar m_g0_magnitude = 0;  // largest |g0| entry, for the direction of an overflow message
};

}  // namespace ntk
