#pragma once
/// \file dual.hpp
/// The 2-D Gaussian expectations L^φ and L^φ' of a 2x2 covariance (lecture eq. 16):
///   t     = E[φ(u) φ(v)],   t_dot = E[φ'(u) φ'(v)],   (u, v) ~ N(0, [[s11, s12], [s12, s22]]).
/// From the activation's closed form where it has one (exact), else by a product Gauss–Hermite
/// rule (an approximation; see adaptive_quadrature_order for its error).

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "activations.hpp"
#include "errors.hpp"
#include "quadrature.hpp"

namespace ntk {

/// How a dual is evaluated.
struct DualOptions {
  /// Gauss–Hermite order per dimension; 0 chooses adaptive_quadrature_order(max(s11, s22)).
  int quadrature_order = 0;
  /// Use quadrature even where the activation has a closed form.
  bool force_quadrature = false;

  /// Throws std::invalid_argument for a negative order or one above max_quadrature_order.
  void check(const char* function) const {
    if (quadrature_order < 0 || quadrature_order > max_quadrature_order)
      detail::fail<std::invalid_argument>(function, "quadrature order must be in [1, ",
                                          max_quadrature_order, "], or 0 for adaptive (got ",
                                          quadrature_order, ")");
  }
};

/// The default Gauss–Hermite order for variances up to q: 64 + 130 q nodes per dimension, at most
/// 512.  For tanh (poles at distance π/2, the slowest common smooth case) the error of E[φφ] is
/// about 45 exp(-π sqrt(n / q)) and that of E[φ'φ'] ten times larger (REFERENCE.md T6), so this
/// order gives <= 1e-12 relative for q <= 3.4 (and <= 1e-10 at q = 4, REFERENCE.md T3 C5); entire
/// activations (erf, GELU, sin) are at the 1e-15 floor.  Beyond that the cap (which bounds the cost
/// at 512² evaluations per dual) makes the result a looser approximation, still finite: about
/// 450 exp(−π sqrt(512 / q)) relative for tanh's E[φ'φ'].
inline int adaptive_quadrature_order(double q_max) {
  if (!(q_max > 0)) return 64;
  const double n = 64 + 130 * q_max;
  return n >= 512 ? 512 : static_cast<int>(std::ceil(n));
}

namespace detail {

/// φ and φ' at one point, sharing work where the activation allows (tanh, sigmoid).
template <class Phi, class S>
void value_and_derivative(const Phi& phi, S z, S& value, S& derivative) {
  if constexpr (std::is_same_v<Phi, Tanh>) {
    value = std::tanh(z);
    derivative = (1 - value) * (1 + value);
  } else {
    value = phi.value(z);
    derivative = phi.derivative(z);
  }
}

/// Both expectations by one pass of a product Gauss–Hermite rule (covariance already validated).
template <class Phi, class S>
Dual<S> quadrature_dual(const Phi& phi, const Covariance2<S>& cov, const GaussHermiteRule<S>& rule) {
  const auto& z = rule.nodes();
  const auto& w = rule.weights();
  const std::size_t n = z.size();
  S v = 0, d = 0;
  if (cov.s11 == 0 || cov.s22 == 0) {  // one coordinate is identically 0
    const S sd = std::sqrt(std::max(cov.s11, cov.s22));
    S v0, d0;
    value_and_derivative(phi, S(0), v0, d0);
    S ev = 0, ed = 0;
    for (std::size_t i = 0; i < n; ++i) {
      S vi, di;
      value_and_derivative(phi, sd * z[i], vi, di);
      ev += w[i] * vi;
      ed += w[i] * di;
    }
    return {v0 * ev, d0 * ed};
  }
  const S root11 = std::sqrt(cov.s11);
  const S slope = cov.s12 / root11;
  const S s = std::sqrt(std::max(cov.s11 * cov.s22 - cov.s12 * cov.s12, S(0)) / cov.s11);
  for (std::size_t i = 0; i < n; ++i) {
    S fi, gi;
    value_and_derivative(phi, root11 * z[i], fi, gi);
    const S shift = slope * z[i];
    S inner_v = 0, inner_d = 0;
    for (std::size_t j = 0; j < n; ++j) {
      S fj, gj;
      value_and_derivative(phi, shift + s * z[j], fj, gj);
      inner_v += w[j] * fj;
      inner_d += w[j] * gj;
    }
    v += w[i] * fi * inner_v;
    d += w[i] * gi * inner_d;
  }
  return {v, d};
}

/// Closed form if present and allowed, else quadrature; the covariance is already validated.
template <class Phi, class S>
Dual<S> dual_unchecked(const Phi& phi, const Covariance2<S>& cov, const DualOptions& options) {
  if constexpr (has_closed_form_dual_v<Phi, S>) {
    if (!options.force_quadrature) return phi.dual(cov.s11, cov.s12, cov.s22);
  }
  const int order = options.quadrature_order > 0
                        ? options.quadrature_order
                        : adaptive_quadrature_order(static_cast<double>(std::max(cov.s11, cov.s22)));
  return quadrature_dual(phi, cov, gauss_hermite<S>(order));
}

}  // namespace detail

/// (L^φ, L^φ') of the covariance [[s11, s12], [s12, s22]]: exact from the activation's closed form
/// unless options.force_quadrature, else Gauss–Hermite quadrature (approximate).
/// Throws std::invalid_argument for negative variances, s12^2 > s11 s22 (1 + 1e-12) or a bad
/// order, std::domain_error for non-finite arguments, std::overflow_error when the expectation
/// itself exceeds the scalar type (e.g. a cubic φ at variance 1e140).  Within the tolerance the correlation is
/// clamped into [-1, 1].
template <class Phi, class Scalar>
Dual<Scalar> dual(const Phi& phi, Scalar s11, Scalar s12, Scalar s22,
                  const DualOptions& options = {}) {
  static_assert(is_activation<Phi, Scalar>::value,
                "ntk::dual: Phi must provide value(z) and derivative(z)");
  options.check("dual");
  const Dual<Scalar> d =
      detail::dual_unchecked(phi, detail::checked_covariance("dual", s11, s12, s22), options);
  if (!std::isfinite(d.t) || !std::isfinite(d.t_dot))
    detail::fail<std::overflow_error>("dual", "the expectation is out of the scalar type's range (got ",
                                      d.t, ", ", d.t_dot, " at variances ", s11, ", ", s22, ")");
  return d;
}

namespace detail {

/// The dual at fixed variances q1 = q2 = q as a function of the correlation ρ ∈ [-1, 1],
/// tabulated as piecewise Chebyshev series (uniform panels); used for Gram matrices of inputs
/// with a common norm, where every entry of a layer shares one variance.
template <class Scalar>
class DualTable {
 public:
  static constexpr int panels = 16;
  static constexpr int degree = 16;

  DualTable() = default;

  /// Samples `f(rho) -> Dual<Scalar>` at Chebyshev points of every panel.
  template <class F>
  explicit DualTable(F&& f) {
    m_t.resize(panels * (degree + 1));
    m_t_dot.resize(panels * (degree + 1));
    const int m = degree + 1;
    const Scalar pi = pi_v<Scalar>;
    std::vector<Scalar> values(static_cast<std::size_t>(panels * m) * 2);
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic)
#endif
    for (int index = 0; index < panels * m; ++index) {
      const int p = index / m, k = index % m;
      const Scalar x = std::cos(pi * (static_cast<Scalar>(k) + Scalar(0.5)) / static_cast<Scalar>(m));  // Chebyshev point on [-1, 1]
      const Scalar a = -1 + Scalar(2) * static_cast<Scalar>(p) / static_cast<Scalar>(panels),
                   b = -1 + Scalar(2) * static_cast<Scalar>(p + 1) / static_cast<Scalar>(panels);
      const Dual<Scalar> value = f((a + b) / 2 + (b - a) / 2 * x);
      values[static_cast<std::size_t>(2 * index)] = value.t;
      values[static_cast<std::size_t>(2 * index + 1)] = value.t_dot;
    }
    for (int p = 0; p < panels; ++p)
      for (int j = 0; j < m; ++j) {
        Scalar ct = 0, cd = 0;
        for (int k = 0; k < m; ++k) {
          const Scalar basis = std::cos(pi * static_cast<Scalar>(j) * (static_cast<Scalar>(k) + Scalar(0.5)) /
                                        static_cast<Scalar>(m));
          ct += values[static_cast<std::size_t>(2 * (p * m + k))] * basis;
          cd += values[static_cast<std::size_t>(2 * (p * m + k) + 1)] * basis;
        }
        const Scalar scale = (j == 0 ? Scalar(1) : Scalar(2)) / static_cast<Scalar>(m);
        m_t[static_cast<std::size_t>(p * m + j)] = ct * scale;
        m_t_dot[static_cast<std::size_t>(p * m + j)] = cd * scale;
      }
  }

  /// The interpolated dual at ρ (clamped into [-1, 1]); NaN in, NaN out (an overflow upstream
  /// must reach the caller's finiteness check, not an out-of-range panel index).
  Dual<Scalar> operator()(Scalar rho) const {
    if (std::isnan(rho)) return {rho, rho};
    rho = rho > 1 ? Scalar(1) : (rho < -1 ? Scalar(-1) : rho);
    int p = static_cast<int>((rho + 1) * (static_cast<Scalar>(panels) / 2));
    p = p >= panels ? panels - 1 : p;
    const Scalar x = (rho + 1) * static_cast<Scalar>(panels) - static_cast<Scalar>(2 * p + 1);  // local coordinate in [-1, 1]
    const Scalar* ct = m_t.data() + p * (degree + 1);
    const Scalar* cd = m_t_dot.data() + p * (degree + 1);
    Scalar bt1 = 0, bt2 = 0, bd1 = 0, bd2 = 0;  // Clenshaw recurrences
    for (int j = degree; j >= 1; --j) {
      const Scalar t = 2 * x * bt1 - bt2 + ct[j];
      bt2 = bt1;
      bt1 = t;
      const Scalar d = 2 * x * bd1 - bd2 + cd[j];
      bd2 = bd1;
      bd1 = d;
    }
    return {x * bt1 - bt2 + ct[0], x * bd1 - bd2 + cd[0]};
  }

 private:
  std::vector<Scalar> m_t, m_t_dot;
};

}  // namespace detail
}  // namespace ntk
