#pragma once
/// \file deep_limit.hpp
/// The deep limit L → ∞ for classification (Radhakrishnan, Belkin & Uhler; lecture, last part).
///
/// The theorems' setting, applied throughout this header (docs/mathematics.md §3):
///   - inputs on the unit sphere (rows are projected: x / ‖x‖);
///   - φ normalized to E[φ(Z)²] = 1 (φ̃ = φ / sqrt(E[φ²]));
///   - no bias, σ_w = 1, and the first layer's covariance xᵀx' (no 1/d);
/// so every layer has Σ^l(x, x) = 1 and, with ψ(ρ) = E[φ̃(u)φ̃(v)] at unit variances and
/// correlation ρ, the recursion over depth L (counting nonlinear layers) is
///   ρ_0 = K_0 = xᵀx',  ρ_{l+1} = ψ(ρ_l),  K_{l+1} = ψ(ρ_l) + K_l ψ'(ρ_l)   (NNGP ρ_L, NTK K_L).
/// Constants of the normalized φ: A = E[φ̃], A' = E[φ̃'], B = E[φ̃'²] = ψ'(1).
/// Regimes: majority vote (A ≠ 0, B >= 1), 1-nearest neighbour (A = A' = 0), singular kernel
/// (A = 0, A' ≠ 0, B > 1) with α = −4 log|A'| / log B; anything else is `undetermined` (A ≠ 0 with
/// B < 1 such as cos or softplus, where both K(x, x) and K(x, x') tend to 1/(1 − B); or a linear φ,
/// B = 1).  The lecture's table puts the centered sigmoid under 1-NN; its constants (A = 0,
/// A' = 0.992) put it in the singular-kernel regime with α ≈ 0.966, and this library follows the
/// constants.  The sphere dimension d is the ambient dimension − 1 (φ^opt for data in R^3 is d = 2).

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "activations.hpp"
#include "detail/batch_values.hpp"
#include "detail/memory.hpp"
#include "dual.hpp"
#include "errors.hpp"
#include "quadrature.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ntk {

/// Which deep-limit theorem applies.
enum class Regime { majority_vote, nearest_neighbor, singular_kernel, undetermined };

inline const char* to_string(Regime r) {
  switch (r) {
    case Regime::majority_vote:
      return "majority_vote";
    case Regime::nearest_neighbor:
      return "nearest_neighbor";
    case Regime::singular_kernel:
      return "singular_kernel";
    default:
      return "undetermined";
  }
}

/// Gaussian moments of φ (raw) and the constants of the normalized φ̃ = φ / sqrt(E[φ²]).
struct LimitConstants {
  double E_phi = 0, E_dphi = 0, E_dphi2 = 0, E_phi2 = 0;    ///< E[φ], E[φ'], E[φ'²], E[φ²], Z ~ N(0,1)
  double A = 0, A_prime = 0, B = 0;                         ///< of φ̃
  double alpha = std::numeric_limits<double>::quiet_NaN();  ///< singular regime only
  Regime regime = Regime::undetermined;
};

namespace detail {

/// Order of the 1-D rules for Gaussian moments of activations without closed forms.
inline constexpr int moment_order = 512;

}  // namespace detail

/// Tolerance below which a normalized constant counts as zero.
inline constexpr double limit_zero_tolerance = 1e-10;

/// The moments and constants of φ.  Exact where the type has closed forms (means(), dual()),
/// else Gauss–Hermite of order 512 (error <= 1e-13 for smooth activations).
/// Throws std::domain_error if E[φ²] = 0 (φ = 0 a.s. cannot be normalized).
template <class Phi>
LimitConstants limit_constants(const Phi& phi) {
  detail::check_activation_parameters("limit_constants", phi);
  LimitConstants c;
  const auto& rule = gauss_hermite<double>(detail::moment_order);
  if constexpr (has_means<Phi, double>::value) {
    const auto m = phi.template means<double>();
    c.E_phi = m.first;
    c.E_dphi = m.second;
  } else {
    c.E_phi = rule.expect([&](double z) { return static_cast<double>(phi.value(z)); });
    c.E_dphi = rule.expect([&](double z) { return static_cast<double>(phi.derivative(z)); });
  }
  if constexpr (has_closed_form_dual_v<Phi, double>) {
    const Dual<double> d = phi.dual(1.0, 1.0, 1.0);
    c.E_phi2 = d.t;
    c.E_dphi2 = d.t_dot;
  } else {
    c.E_phi2 = rule.expect([&](double z) {
      const double v = phi.value(z);
      return v * v;
    });
    c.E_dphi2 = rule.expect([&](double z) {
      const double v = phi.derivative(z);
      return v * v;
    });
  }
  if constexpr (is_batch_only_v<Phi>) {
    // A callable (Python) has no closed forms to fall back on, and Gauss–Hermite converges only
    // algebraically at a kink (a Python ReLU's E[φ] is 8e-4 off at order 512): the moments must
    // agree with half the order, or the deep-limit results would be silently wrong.
    const auto& coarse = gauss_hermite<double>(detail::moment_order / 2);
    const auto moment = [&](const auto& r, int which) {
      return r.expect([&](double z) {
        const double v = which % 2 == 0 ? static_cast<double>(phi.value(z)) : static_cast<double>(phi.derivative(z));
        return which < 2 ? v : v * v;
      });
    };
    const double fine[4] = {c.E_phi, c.E_dphi, c.E_phi2, c.E_dphi2};
    for (int which = 0; which < 4; ++which) {
      const double difference = std::fabs(moment(coarse, which) - fine[which]);
      if (!(difference <= 1e-10 * std::max(1.0, std::fabs(fine[which]))))
        detail::fail<std::invalid_argument>(
            "limit_constants",
            "the Gaussian moments of this activation callable do not converge (orders 256 and 512 differ by ",
            difference,
            "): a kink or a discontinuity, whose quadrature error would pass silently into every deep-limit "
            "result; use the built-in activation name");
    }
  }
  if (!std::isfinite(c.E_phi) || !std::isfinite(c.E_dphi) || !std::isfinite(c.E_phi2) || !std::isfinite(c.E_dphi2))
    detail::fail<std::overflow_error>(
        "limit_constants", "the Gaussian moments of phi are too large for double (got E[phi] = ", c.E_phi,
        ", E[phi'] = ", c.E_dphi, ", E[phi^2] = ", c.E_phi2, ", E[phi'^2] = ", c.E_dphi2, ")");
  if (!(c.E_phi2 > 0))
    detail::fail<std::domain_error>("limit_constants", "E[phi^2] must be positive (got ", c.E_phi2, ")");
  const double scale = std::sqrt(c.E_phi2);
  c.A = c.E_phi / scale;
  c.A_prime = c.E_dphi / scale;
  c.B = c.E_dphi2 / c.E_phi2;
  if (!std::isfinite(c.B))
    detail::fail<std::overflow_error>("limit_constants",
                                      "B = E[phi'^2] / E[phi^2] is too large for double (got E[phi'^2] = ", c.E_dphi2,
                                      ", E[phi^2] = ", c.E_phi2, ")");
  const bool a_zero = std::fabs(c.A) <= limit_zero_tolerance;
  const bool a_prime_zero = std::fabs(c.A_prime) <= limit_zero_tolerance;
  if (!a_zero && c.B >= 1 - limit_zero_tolerance) {
    c.regime = Regime::majority_vote;
  } else if (a_zero && a_prime_zero) {
    c.regime = Regime::nearest_neighbor;
  } else if (a_zero && c.B > 1 + limit_zero_tolerance) {
    c.regime = Regime::singular_kernel;
    c.alpha = -4 * std::log(std::fabs(c.A_prime)) / std::log(c.B);
  }
  return c;
}

/// Rows of x scaled to unit norm.  Throws std::invalid_argument for a zero row,
/// std::domain_error for non-finite entries.
template <class D>
Eigen::MatrixXd project_to_sphere(const Eigen::MatrixBase<D>& x) {
  detail::check_nonempty("project_to_sphere", "x", x);
  detail::check_finite("project_to_sphere", "x", x);
  Eigen::MatrixXd out = x.template cast<double>();
  for (Eigen::Index i = 0; i < out.rows(); ++i) {
    const double norm = out.row(i).stableNorm();  // scaled: rows of norm 1e200 or 1e-200 do not over/underflow
    if (!(norm > 0))
      detail::fail<std::invalid_argument>("project_to_sphere", "row ", i,
                                          " of x is zero and has no direction (got norm 0)");
    out.row(i) /= norm;
  }
  return out;
}

/// A number kept as sign · exp(log_abs), so that values far outside double's range survive.
struct LogNumber {
  double sign = 0;  ///< -1, 0 or +1
  double log_abs = -std::numeric_limits<double>::infinity();

  static LogNumber of(double v) { return v == 0 ? LogNumber{} : LogNumber{v > 0 ? 1.0 : -1.0, std::log(std::fabs(v))}; }
  double value() const { return sign * std::exp(log_abs); }
  /// Zero is sign 0 (log_abs −∞); a magnitude whose logarithm underflowed to −∞ is zero too, so
  /// no −∞ − (−∞) = NaN reaches log_abs (deep nearest-neighbour kernels, ρ^(2^L) for L = 10⁴).
  friend LogNumber operator*(LogNumber a, LogNumber b) {
    if (a.sign == 0 || b.sign == 0) return {};
    const double log_abs = a.log_abs + b.log_abs;
    if (std::isnan(log_abs) || log_abs == -std::numeric_limits<double>::infinity()) return {};
    return {a.sign * b.sign, log_abs};
  }
  friend LogNumber operator+(LogNumber a, LogNumber b) {
    constexpr double minus_infinity = -std::numeric_limits<double>::infinity();
    if (a.sign == 0 || a.log_abs == minus_infinity) return b.log_abs == minus_infinity ? LogNumber{} : b;
    if (b.sign == 0 || b.log_abs == minus_infinity) return a;
    if (a.log_abs < b.log_abs) std::swap(a, b);
    const double ratio = std::exp(b.log_abs - a.log_abs);  // <= 1
    const double factor = a.sign == b.sign ? std::log1p(ratio) : std::log1p(-ratio);
    if (a.sign != b.sign && ratio == 1) return {};
    return {a.sign, a.log_abs + factor};
  }
};

/// ψ and ψ' of the normalized activation, at unit variances, for any correlation, in log form:
/// for |ρ| >= 1e-3 from the closed form (or a Chebyshev table of the quadrature dual, <= 1e-12);
/// below, from the leading terms of the Mehler series Σ a_k² ρ^k, so values never underflow.
template <class Phi>
class NormalizedDual {
 public:
  explicit NormalizedDual(const Phi& phi) : m_phi(phi) {
    m_constants = limit_constants(phi);
    if constexpr (!has_closed_form_dual_v<Phi, double>) {
      m_table = detail::DualTable<double>([&](double rho) {
        return detail::quadrature_dual(m_phi, detail::Covariance2<double>{1.0, rho, 1.0},
                                       gauss_hermite<double>(adaptive_quadrature_order(1.0)));
      });
    }
    // Normalized Hermite coefficients a_k = E[φ̃(Z) h_k(Z)] for the small-ρ series.
    const auto& rule = gauss_hermite<double>(detail::moment_order);
    const double scale = 1 / std::sqrt(m_constants.E_phi2);
    std::vector<double> h(series_terms + 1);
    m_a.assign(series_terms + 1, 0.0);
    for (int i = 0; i < rule.order(); ++i) {
      const double z = rule.nodes()[static_cast<std::size_t>(i)];
      detail::hermite_values(z, series_terms, h.data());
      const double f = rule.weights()[static_cast<std::size_t>(i)] * phi.value(z) * scale;
      for (int k = 0; k <= series_terms; ++k) m_a[static_cast<std::size_t>(k)] += f * h[static_cast<std::size_t>(k)];
    }
    m_a[0] = m_constants.A;  // exact values where known
    m_a[1] = m_constants.A_prime;
    for (auto& a : m_a)
      if (std::fabs(a) <= limit_zero_tolerance) a = 0;
  }

  const LimitConstants& constants() const { return m_constants; }

  /// (ψ(ρ), ψ'(ρ)) as plain doubles, for |ρ| not tiny.
  Dual<double> plain(double rho) const {
    Dual<double> d;
    if constexpr (has_closed_form_dual_v<Phi, double>) {
      d = m_phi.dual(1.0, rho, 1.0);
    } else {
      d = m_table(rho);
    }
    return {d.t / m_constants.E_phi2, d.t_dot / m_constants.E_phi2};
  }

  /// plain() for T correlations at once, with the same arithmetic per lane: a fixed-trip loop
  /// over a closed form (vectorized where the form is branch-free, e.g. ReLU's unit_dual), or the
  /// table's T-wide evaluation.
  template <int T>
  void plain_tile(const double* rho, double* t, double* t_dot) const {
    if constexpr (has_closed_form_dual_v<Phi, double>) {
      const Phi phi = m_phi;
      const double e2 = m_constants.E_phi2;
      for (int k = 0; k < T; ++k) {
        Dual<double> d;
        if constexpr (has_unit_dual_v<Phi, double>) {
          d = phi.unit_dual(rho[k]);  // = dual(1, ρ, 1) exactly: sqrt(1 · 1) = 1
        } else {
          d = phi.dual(1.0, rho[k], 1.0);
        }
        t[k] = d.t / e2;
        t_dot[k] = d.t_dot / e2;
      }
    } else {
      m_table.template evaluate<T>(rho, t, t_dot);
      for (int k = 0; k < T; ++k) {
        t[k] /= m_constants.E_phi2;
        t_dot[k] /= m_constants.E_phi2;
      }
    }
  }

  /// (ψ(ρ), ψ'(ρ)) for ρ given in log form.
  std::pair<LogNumber, LogNumber> operator()(LogNumber rho) const {
    if (rho.sign != 0 && rho.log_abs >= small_log) {
      const Dual<double> d = plain(std::min(std::max(rho.value(), -1.0), 1.0));
      return {LogNumber::of(d.t), LogNumber::of(d.t_dot)};
    }
    // ψ = Σ a_k² ρ^k, ψ' = Σ (k+1) a_{k+1}² ρ^k, summed in log form.
    LogNumber psi, dpsi, power = LogNumber{1, 0};
    for (int k = 0; k <= series_terms; ++k) {
      const double a = m_a[static_cast<std::size_t>(k)];
      psi = psi + LogNumber::of(a * a) * power;
      if (k + 1 <= series_terms) {
        const double b = m_a[static_cast<std::size_t>(k + 1)];
        dpsi = dpsi + LogNumber::of((k + 1) * b * b) * power;
      }
      power = power * rho;
    }
    return {psi, dpsi};
  }

 private:
  static constexpr int series_terms = 12;
  static constexpr double small_log = -6.907755278982137;  // log(1e-3)
  Phi m_phi;
  LimitConstants m_constants;
  detail::DualTable<double> m_table;
  std::vector<double> m_a;
};

/// Deep-limit Gram matrices in the theorems' setting, stable at any depth: every entry is kept
/// as sign and log|value|.  For the NTK, `log_diagonal` is log K_L(x, x) (the same for every x on
/// the sphere: K_{l+1}(x, x) = 1 + B K_l(x, x)), and ratio(i, j) = K_L(x_i, x_j) / K_L(x, x); for
/// the NNGP the diagonal is 1 and ratio = ρ_L.
struct DeepGram {
  Eigen::MatrixXd sign, log_abs;
  double log_diagonal = 0;
  /// K / K(x, x) entrywise (may underflow to 0 where the ratio is below 1e-308).
  Eigen::MatrixXd ratio() const { return (sign.array() * (log_abs.array() - log_diagonal).exp()).matrix(); }
};

/// Which deep kernel.
enum class DeepKind { ntk, nngp };

/// The deep kernel of `depth` nonlinear layers of φ in the theorems' setting.
template <class Phi>
class DeepKernel {
 public:
  /// Throws std::invalid_argument for depth < 1, std::domain_error if E[φ²] = 0.
  DeepKernel(const Phi& phi, long depth, DeepKind kind = DeepKind::ntk) : m_dual(phi), m_depth(depth), m_kind(kind) {
    detail::check_at_least("DeepKernel", "depth", depth, 1L);
    detail::check_allocation("DeepKernel", "the per-layer factors (3 (depth + 1) doubles)",
                             detail::saturating_product(static_cast<std::size_t>(depth) + 1, 3), sizeof(double));
    // log D_l = log K_l(x, x): D_0 = 1, D_{l+1} = 1 + B D_l; the per-layer factors of the
    // normalized recursion r_{l+1} = ψ/D_{l+1} + r_l ψ' D_l/D_{l+1} are precomputed.
    const double b = m_dual.constants().B;
    m_log_d.assign(static_cast<std::size_t>(depth) + 1, 0.0);
    m_inverse.resize(static_cast<std::size_t>(depth));
    m_shrink.resize(static_cast<std::size_t>(depth));
    double inverse = 1;  // 1 / D_l, by products so that no large logarithms are differenced
    for (std::size_t l = 0; l < static_cast<std::size_t>(depth); ++l) {
      m_shrink[l] = 1 / (b + inverse);  // D_l / D_{l+1}
      inverse *= m_shrink[l];
      m_inverse[l] = inverse;  // 1 / D_{l+1}
      m_log_d[l + 1] = m_log_d[l] - std::log(m_shrink[l]);
    }
    m_log_diagonal = kind == DeepKind::ntk ? m_log_d.back() : 0.0;
    const double a1 = m_dual.constants().A_prime;
    m_linear_log = a1 != 0 ? std::log(a1 * a1) : 0.0;
  }

  long depth() const { return m_depth; }
  const LimitConstants& constants() const { return m_dual.constants(); }
  double log_diagonal() const { return m_log_diagonal; }

  /// One entry from the cosine ρ_0 = xᵀx' of two unit vectors: the NNGP ρ_L and the normalized NTK
  /// r_L = K_L / K_L(x, x), in log form.  Plain doubles while |ρ| >= 1e-3 and |r| >= 1e-250 (the
  /// usual case, e.g. ReLU at any depth); then the log-form Mehler series; and once ψ(ρ) = A'² ρ to
  /// double precision (singular regime), the remaining layers in closed form:
  ///   ρ_L = A'^{2m} ρ,  K_L = A'^{2m} (K + m ρ)  after m more layers.
  std::pair<LogNumber, LogNumber> entry(double rho0) const {
    const double rho = std::min(std::max(rho0, -1.0), 1.0);
    return resume(rho, rho, 0);
  }

  /// Entries a tile at a time: the number of cosines one call of entries() takes.
  static constexpr int tile = 16;

  /// entry() for `count` <= tile cosines at once, with the same results: all lanes advance
  /// together in plain doubles (a fixed-trip loop the compiler vectorizes, so independent entries
  /// overlap instead of each waiting on its own chain of dependent layers) while every lane stays
  /// in the plain range; from the first layer where one does not, each lane resumes alone.
  void entries(const double* rho0, int count, LogNumber* rho_out, LogNumber* r_out) const {
    constexpr int T = tile;
    double rho[T], r[T], t[T], t_dot[T];
    for (int k = 0; k < T; ++k) {  // padding lanes repeat lane 0, so they never stop the tile
      rho[k] = std::min(std::max(rho0[k < count ? k : 0], -1.0), 1.0);
      r[k] = rho[k];
    }
    long l = 0;
    for (; l < m_depth; ++l) {
      bool plain = true;
      for (int k = 0; k < T; ++k) plain = plain & (std::fabs(rho[k]) >= 1e-3) & (std::fabs(r[k]) >= 1e-250);
      if (!plain) break;
      m_dual.template plain_tile<T>(rho, t, t_dot);
      const double inverse = m_inverse[static_cast<std::size_t>(l)], shrink = m_shrink[static_cast<std::size_t>(l)];
      for (int k = 0; k < T; ++k) {
        r[k] = t[k] * inverse + r[k] * t_dot[k] * shrink;
        rho[k] = t[k];
      }
    }
    for (int k = 0; k < count; ++k) {
      if (l == m_depth) {
        rho_out[k] = LogNumber::of(rho[k]);
        r_out[k] = LogNumber::of(r[k]);
      } else {
        const auto [lrho, lr] = resume(rho[k], r[k], l);
        rho_out[k] = lrho;
        r_out[k] = lr;
      }
    }
  }

 private:
  /// The recursion of entry() from layer l, where ρ_l = rho and K_l / D_l = r.
  std::pair<LogNumber, LogNumber> resume(double rho, double r, long l) const {
    const bool linear_tail = m_dual.constants().A == 0 && m_dual.constants().A_prime != 0;
    while (true) {
      for (; l < m_depth; ++l) {  // plain doubles
        if (std::fabs(rho) < 1e-3 || std::fabs(r) < 1e-250) break;
        const auto d = m_dual.plain(rho);
        r = d.t * m_inverse[static_cast<std::size_t>(l)] + r * d.t_dot * m_shrink[static_cast<std::size_t>(l)];
        rho = d.t;
      }
      if (l == m_depth) return {LogNumber::of(rho), LogNumber::of(r)};
      LogNumber lrho = LogNumber::of(rho);
      bool back = false;
      LogNumber k = LogNumber::of(r) * LogNumber{1, m_log_d[static_cast<std::size_t>(l)]};  // K_l
      for (; l < m_depth; ++l) {                                                            // log form
        if (linear_tail && lrho.log_abs < -40 + m_linear_log) {
          // |ρ| < 4e-18 A'²: ψ(ρ) = A'² ρ and ψ'(ρ) = A'² to double precision from here on.
          const double m = static_cast<double>(m_depth - l);
          const LogNumber scale{1, m * m_linear_log};
          k = scale * (k + LogNumber{1, std::log(m)} * lrho);
          lrho = scale * lrho;
          l = m_depth;
          break;
        }
        const auto [psi, dpsi] = m_dual(lrho);
        k = psi + k * dpsi;
        lrho = psi;
        const LogNumber ratio = k * LogNumber{1, -m_log_d[static_cast<std::size_t>(l + 1)]};
        if (lrho.log_abs >= std::log(1e-3) && ratio.log_abs >= std::log(1e-250)) {
          ++l;  // back to plain doubles
          rho = lrho.value();
          r = ratio.value();
          back = true;
          break;
        }
      }
      if (!back) return {lrho, k * LogNumber{1, -m_log_d.back()}};
    }
  }

 public:
  /// Gram matrix between the rows of a and b (projected onto the sphere).  O(n_a n_b L).
  template <class D1, class D2>
  DeepGram gram(const Eigen::MatrixBase<D1>& a, const Eigen::MatrixBase<D2>& b) const {
    if (a.cols() != b.cols())
      detail::fail<std::invalid_argument>("DeepKernel::gram",
                                          "a and b must have the same number of "
                                          "features (got ",
                                          a.cols(), " and ", b.cols(), ")");
    const Eigen::MatrixXd ua = project_to_sphere(a), ub = project_to_sphere(b);
    // Cosines within a few ulp of ±1 are round-off of an exact ±1 (a point with itself): snap them,
    // since for B > 1 the recursion amplifies 1 − ρ by B per layer.
    const double snap = 1 - 8 * std::numeric_limits<double>::epsilon();
    const Eigen::MatrixXd cosines =
        (ua * ub.transpose()).unaryExpr([snap](double c) { return c >= snap ? 1.0 : (c <= -snap ? -1.0 : c); });
    DeepGram g;
    g.sign.resize(ua.rows(), ub.rows());
    g.log_abs.resize(ua.rows(), ub.rows());
    g.log_diagonal = m_log_diagonal;
    const Eigen::Index n1 = ua.rows(), n2 = ub.rows();
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic)
#endif
    for (Eigen::Index j = 0; j < n2; ++j)
      for (Eigen::Index i0 = 0; i0 < n1; i0 += tile) {  // tiles of rows down column j
        const int count = static_cast<int>(std::min<Eigen::Index>(tile, n1 - i0));
        LogNumber rho[tile], r[tile];
        entries(&cosines(i0, j), count, rho, r);
        for (int k = 0; k < count; ++k) {
          const LogNumber& v = m_kind == DeepKind::ntk ? r[k] : rho[k];
          g.sign(i0 + k, j) = v.sign;
          g.log_abs(i0 + k, j) = v.log_abs + m_log_diagonal;
        }
      }
    return g;
  }

 private:
  NormalizedDual<Phi> m_dual;
  long m_depth;
  DeepKind m_kind;
  double m_log_diagonal = 0, m_linear_log = 0;
  std::vector<double> m_log_d, m_inverse, m_shrink;
};

namespace detail {

/// Labels as a target matrix: ±1 labels give one column, class ids 0..k−1 give one-hot columns.
struct LabelCoding {
  bool binary = true;
  int classes = 2;
  static LabelCoding of(const std::vector<int>& labels, const char* function) {
    if (labels.empty()) fail<std::invalid_argument>(function, "labels must not be empty (got 0)");
    LabelCoding c;
    c.binary = std::all_of(labels.begin(), labels.end(), [](int y) { return y == 1 || y == -1; });
    if (!c.binary) {
      const int lo = *std::min_element(labels.begin(), labels.end());
      if (lo < 0) fail<std::invalid_argument>(function, "labels must be all ±1 or class ids >= 0 (got ", lo, ")");
      c.classes = *std::max_element(labels.begin(), labels.end()) + 1;
    }
    return c;
  }
  Eigen::MatrixXd targets(const std::vector<int>& labels) const {
    if (binary) {
      Eigen::MatrixXd y(static_cast<Eigen::Index>(labels.size()), 1);
      for (std::size_t i = 0; i < labels.size(); ++i) y(static_cast<Eigen::Index>(i), 0) = labels[i];
      return y;
    }
    Eigen::MatrixXd y = Eigen::MatrixXd::Zero(static_cast<Eigen::Index>(labels.size()), classes);
    for (std::size_t i = 0; i < labels.size(); ++i) y(static_cast<Eigen::Index>(i), labels[i]) = 1;
    return y;
  }
  /// sgn of a binary score (ties to +1), or argmax of class scores.
  int decide(const Eigen::RowVectorXd& score) const {
    if (binary) return score(0) >= 0 ? 1 : -1;
    Eigen::Index best;
    score.maxCoeff(&best);
    return static_cast<int>(best);
  }
};

template <class D>
void check_classification(const char* function, const Eigen::MatrixBase<D>& x, const std::vector<int>& labels) {
  detail::check_nonempty(function, "x", x);
  detail::check_finite(function, "x", x);
  if (static_cast<std::size_t>(x.rows()) != labels.size())
    fail<std::invalid_argument>(function, "labels must have one entry per row of x (got ", labels.size(), " for ",
                                x.rows(), " rows)");
}

}  // namespace detail

/// The deep-kernel classifier f(x) = sgn(Yᵀ G⁻¹ κ^L(X, x)) (lecture), binary (±1 labels) or k-class
/// (class ids, argmax of one-hot scores), in the theorems' setting.  Any depth: G and κ are
/// rescaled by positive factors (the diagonal, and each test column's largest entry) before the
/// solve, which leaves the decision unchanged.  A test point equal to a training point (same
/// direction) gets that point's label.
template <class Phi>
class DeepKernelClassifier {
 public:
  DeepKernelClassifier(const Phi& phi, long depth, DeepKind kind = DeepKind::ntk) : m_kernel(phi, depth, kind) {}

  /// Throws std::invalid_argument for shapes or labels.  A numerically singular G is inverted by its
  /// pseudo-inverse (eigenvalues below 1e-13 λ_max dropped).
  template <class D>
  void fit(const Eigen::MatrixBase<D>& x, const std::vector<int>& labels) {
    detail::check_classification("DeepKernelClassifier::fit", x, labels);
    m_coding = detail::LabelCoding::of(labels, "DeepKernelClassifier::fit");
    m_x = project_to_sphere(x);
    m_labels = labels;
    const Eigen::MatrixXd g = m_kernel.gram(m_x, m_x).ratio();  // diagonal 1
    // Deep Gram matrices can be numerically singular (e.g. the ReLU NNGP, whose correlations all
    // tend to 1): use the pseudo-inverse, dropping eigenvalues below 1e-13 λ_max.
    const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(g);
    const Eigen::VectorXd& lambda = eigen.eigenvalues();
    const double cutoff = 1e-13 * lambda.cwiseAbs().maxCoeff();
    const Eigen::VectorXd inverse = lambda.unaryExpr([cutoff](double v) { return v > cutoff ? 1 / v : 0.0; });
    const Eigen::MatrixXd& v = eigen.eigenvectors();
    m_weights = (v * inverse.asDiagonal() * (v.transpose() * m_coding.targets(labels))).transpose();
  }

  /// Predicted labels for the rows of x.  Throws std::logic_error before fit().
  template <class D>
  std::vector<int> predict(const Eigen::MatrixBase<D>& x) const {
    if (m_x.size() == 0) detail::fail<std::logic_error>("DeepKernelClassifier::predict", "call fit() first");
    if (x.cols() != m_x.cols())
      detail::fail<std::invalid_argument>("DeepKernelClassifier::predict", "x must have ", m_x.cols(),
                                          " features (got ", x.cols(), ")");
    const Eigen::MatrixXd u = project_to_sphere(x);
    const DeepGram k = m_kernel.gram(m_x, u);
    std::vector<int> out(static_cast<std::size_t>(u.rows()));
    for (Eigen::Index j = 0; j < u.rows(); ++j) {
      Eigen::Index same = -1;
      for (Eigen::Index i = 0; i < m_x.rows() && same < 0; ++i)
        if ((m_x.row(i) - u.row(j)).squaredNorm() == 0) same = i;
      if (same >= 0) {
        out[static_cast<std::size_t>(j)] = m_labels[static_cast<std::size_t>(same)];
        continue;
      }
      const double top = k.log_abs.col(j).maxCoeff();
      Eigen::VectorXd column(m_x.rows());
      for (Eigen::Index i = 0; i < m_x.rows(); ++i) column[i] = k.sign(i, j) * std::exp(k.log_abs(i, j) - top);
      out[static_cast<std::size_t>(j)] = m_coding.decide((m_weights * column).transpose());
    }
    return out;
  }

  const DeepKernel<Phi>& kernel() const { return m_kernel; }

 private:
  DeepKernel<Phi> m_kernel;
  detail::LabelCoding m_coding;
  Eigen::MatrixXd m_x, m_weights;
  std::vector<int> m_labels;
};

/// Majority vote: every test point gets the most frequent training label (ties: +1 / lowest id).
inline std::vector<int> majority_vote(const std::vector<int>& labels, Eigen::Index test_count) {
  const auto coding = detail::LabelCoding::of(labels, "majority_vote");
  const Eigen::RowVectorXd score = coding.targets(labels).colwise().sum();
  return std::vector<int>(static_cast<std::size_t>(test_count), coding.decide(score));
}

/// 1-nearest neighbour on the sphere: the label of the training point with the largest cosine.
template <class D1, class D2>
std::vector<int> nearest_neighbor(const Eigen::MatrixBase<D1>& x, const std::vector<int>& labels,
                                  const Eigen::MatrixBase<D2>& test) {
  detail::check_classification("nearest_neighbor", x, labels);
  const Eigen::MatrixXd cosines = project_to_sphere(test) * project_to_sphere(x).transpose();
  std::vector<int> out(static_cast<std::size_t>(test.rows()));
  for (Eigen::Index j = 0; j < test.rows(); ++j) {
    Eigen::Index best;
    cosines.row(j).maxCoeff(&best);
    out[static_cast<std::size_t>(j)] = labels[static_cast<std::size_t>(best)];
  }
  return out;
}

/// The singular-kernel (Hilbert-type) estimate on the sphere: sgn Σ_i y_i ‖x − x_i‖^{−α} (argmax
/// of class sums for class ids); a test point equal to a training point gets its label.
template <class D1, class D2>
std::vector<int> singular_kernel(const Eigen::MatrixBase<D1>& x, const std::vector<int>& labels,
                                 const Eigen::MatrixBase<D2>& test, double alpha) {
  detail::check_classification("singular_kernel", x, labels);
  detail::check_positive("singular_kernel", "alpha", alpha);
  const auto coding = detail::LabelCoding::of(labels, "singular_kernel");
  const Eigen::MatrixXd y = coding.targets(labels);
  const Eigen::MatrixXd u = project_to_sphere(x), v = project_to_sphere(test);
  std::vector<int> out(static_cast<std::size_t>(v.rows()));
  for (Eigen::Index j = 0; j < v.rows(); ++j) {
    // Weights ‖x − x_i‖^{−α} in log form, scaled by the largest, so huge α cannot overflow.
    Eigen::VectorXd logw(u.rows());
    Eigen::Index same = -1;
    for (Eigen::Index i = 0; i < u.rows(); ++i) {
      const double dist = (u.row(i) - v.row(j)).norm();
      if (dist == 0) same = i;
      logw[i] = -alpha * std::log(dist);
    }
    if (same >= 0) {
      out[static_cast<std::size_t>(j)] = labels[static_cast<std::size_t>(same)];
      continue;
    }
    const Eigen::VectorXd w = (logw.array() - logw.maxCoeff()).exp().matrix();
    out[static_cast<std::size_t>(j)] = coding.decide(w.transpose() * y);
  }
  return out;
}

/// Fraction of equal entries.
inline double accuracy(const std::vector<int>& predicted, const std::vector<int>& truth) {
  if (predicted.size() != truth.size() || truth.empty())
    detail::fail<std::invalid_argument>("accuracy",
                                        "label vectors must be non-empty and of equal "
                                        "length (got ",
                                        predicted.size(), " and ", truth.size(), ")");
  std::size_t hits = 0;
  for (std::size_t i = 0; i < truth.size(); ++i) hits += predicted[i] == truth[i];
  return static_cast<double>(hits) / static_cast<double>(truth.size());
}

}  // namespace ntk
