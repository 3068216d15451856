#pragma once
/// \file activations.hpp
/// Activation types, and the contract a user-defined one follows (docs/architecture.md; a complete
/// user-defined activation: examples/custom_activation.cpp).  Members are templates over the
/// scalar type S (double, float, long double):
///   required  S value(S z) const                    φ(z)
///             S derivative(S z) const               φ'(z), in closed form (never by finite differences)
///   optional  Dual<S> dual(S q1, S c, S q2) const   the closed-form dual
///                 {E[φ(u)φ(v)], E[φ'(u)φ'(v)]}, (u, v) ~ N(0, [[q1, c], [c, q2]]), exact for all
///                 q1, q2 >= 0 and |c| <= sqrt(q1 q2); used instead of quadrature everywhere
///             Dual<S> unit_dual(S rho) const        for positively homogeneous φ (φ(λz) = λφ(z),
///                 λ > 0): the dual per unit sqrt(q1 q2) as a function of the correlation; kernels
///                 then need one square root per point instead of one per entry
///             std::pair<S, S> means() const         (E[φ(Z)], E[φ'(Z)]), Z ~ N(0, 1), exact
///                 (deep-limit constants; else quadrature)
///             std::pair<S, S> value_and_derivative(S z) const   both at once, sharing work
///             std::string name() const              the name the command-line tool uses
///             void check(const char* function) const  throws std::invalid_argument naming a bad
///                 parameter; called by every entry point that takes the activation
///             double saturation() const             lim φ(z), z → ∞, for an odd saturating φ
///                 (tanh, sigmoid): large variances then use detail/saturating.hpp
/// Without dual() every function works through Gauss–Hermite quadrature; ntk::Quadrature<Phi>
/// forces that path on a type that has one.  kernel(), dual() and Network check the required
/// members with a static_assert naming what is missing (contracts.hpp); the optional ones are
/// detected (has_closed_form_dual, has_unit_dual, has_means, has_value_and_derivative).
///
/// The closed forms below are exact for all q1, q2 >= 0 and |c| <= sqrt(q1 q2) (correlations are
/// clamped into [-1, 1]); the derivation sources are listed in docs/mathematics.md §1b.

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "detail/math.hpp"
#include "errors.hpp"
#include "quadrature.hpp"

namespace ntk {

/// The pair (L^φ, L^φ') of a 2x2 covariance: t = E[φ(u)φ(v)], t_dot = E[φ'(u)φ'(v)].
template <class Scalar>
struct Dual {
  Scalar t;
  Scalar t_dot;
};

namespace detail {

template <class Scalar>
inline constexpr Scalar pi_v = static_cast<Scalar>(3.141592653589793238462643383279502884L);

/// sqrt(q1 q2), exact (= q) when q1 = q2 = q so that the diagonal has correlation exactly 1
/// (arc-cosine duals are infinitely sensitive there); falls back to sqrt(q1) sqrt(q2) when the
/// product would overflow or underflow.  Branch-free.
template <class Scalar>
NTK_ALWAYS_INLINE Scalar geometric_mean(Scalar q1, Scalar q2) {
  const Scalar product = q1 * q2;
  const bool in_range = product <= std::numeric_limits<Scalar>::max() &&
                        (product >= std::numeric_limits<Scalar>::min() || (product == 0 && (q1 == 0 || q2 == 0)));
  return in_range ? std::sqrt(product) : std::sqrt(q1) * std::sqrt(q2);
}

/// ρ = c / sqrt(q1 q2) clamped into [-1, 1]; 0 when a variance vanishes.
template <class Scalar>
Scalar correlation(Scalar q1, Scalar c, Scalar q2, Scalar root_q1q2) {
  (void)q1;
  (void)q2;
  if (!(root_q1q2 > 0)) return 0;
  const Scalar rho = c / root_q1q2;
  return rho > 1 ? Scalar(1) : (rho < -1 ? Scalar(-1) : rho);
}

/// Values h_0(z), ..., h_n(z) of the normalized probabilists' Hermite polynomials.
template <class Scalar>
void hermite_values(Scalar z, std::size_t n, Scalar* out) {
  out[0] = 1;
  if (n >= 1) out[1] = z;
  for (std::size_t k = 1; k < n; ++k)
    out[k + 1] = (z * out[k] - std::sqrt(static_cast<Scalar>(k)) * out[k - 1]) / std::sqrt(static_cast<Scalar>(k + 1));
}

/// The dual of the positively homogeneous φ(z) = a min(z, 0) + b max(z, 0) per unit
/// sqrt(q1 q2), as a function of the correlation ρ alone (arc-cosine kernels of degree 1 and 0):
/// T = sqrt(q1 q2) t(ρ), Ṫ = t_dot(ρ).  ρ outside [-1, 1] is clamped, and ρ within 8 ulp of ±1 is
/// taken as ±1: that is round-off of an exact ±1 (e.g. x·x by two summation orders), and
/// θ = acos ρ would turn an error ε in ρ into sqrt(2ε) in θ.  Branch-free, so loops vectorize.
template <class Scalar>
NTK_ALWAYS_INLINE Dual<Scalar> piecewise_linear_unit_dual(Scalar a, Scalar b, Scalar rho) {
  constexpr Scalar snap = 1 - 8 * std::numeric_limits<Scalar>::epsilon();
  rho = rho >= snap ? Scalar(1) : (rho <= -snap ? Scalar(-1) : rho);
  Scalar theta, sin_theta;
  acos_and_sine(rho, theta, sin_theta);
  const Scalar jump = (a - b) * (a - b) / (2 * pi_v<Scalar>);
  const Scalar t_dot = (a * a + b * b) / 2 - jump * theta;
  return {jump * sin_theta + t_dot * rho, t_dot};
}

/// The same dual at the covariance [[q1, c], [c, q2]].
template <class Scalar>
NTK_ALWAYS_INLINE Dual<Scalar> piecewise_linear_dual(Scalar a, Scalar b, Scalar q1, Scalar c, Scalar q2) {
  const Scalar root = geometric_mean(q1, q2);
  // c = 0 whenever root = 0 (after clamping), so dividing by the smallest normal gives ρ = 0.
  const Dual<Scalar> unit = piecewise_linear_unit_dual(a, b, c / std::max(root, std::numeric_limits<Scalar>::min()));
  return {root * unit.t, unit.t_dot};
}

}  // namespace detail

/// Compile-time test for a closed-form dual: `phi.dual(q1, c, q2)` returning Dual<Scalar>.
template <class Phi, class Scalar, class = void>
struct has_closed_form_dual : std::false_type {};
template <class Phi, class Scalar>
struct has_closed_form_dual<Phi, Scalar,
                            std::void_t<decltype(std::declval<const Phi&>().dual(Scalar(), Scalar(), Scalar()))>>
    : std::true_type {};
template <class Phi, class Scalar>
inline constexpr bool has_closed_form_dual_v = has_closed_form_dual<Phi, Scalar>::value;

/// Compile-time test for a positively homogeneous φ (φ(λz) = λφ(z), λ > 0) whose dual is given per
/// unit sqrt(q1 q2) as a function of the correlation: `phi.unit_dual(rho)`.  Kernels then need one
/// square root per point and layer instead of one per entry.
template <class Phi, class Scalar, class = void>
struct has_unit_dual : std::false_type {};
template <class Phi, class Scalar>
struct has_unit_dual<Phi, Scalar, std::void_t<decltype(std::declval<const Phi&>().unit_dual(Scalar()))>>
    : std::true_type {};
template <class Phi, class Scalar>
inline constexpr bool has_unit_dual_v = has_unit_dual<Phi, Scalar>::value;

/// Compile-time test for the activation contract: value(z) and derivative(z).
template <class Phi, class Scalar, class = void>
struct is_activation : std::false_type {};
template <class Phi, class Scalar>
struct is_activation<Phi, Scalar,
                     std::void_t<decltype(std::declval<const Phi&>().value(Scalar())),
                                 decltype(std::declval<const Phi&>().derivative(Scalar()))>> : std::true_type {};

/// Compile-time tests for the optional members of the activation contract.
template <class Phi, class Scalar, class = void>
struct has_value_and_derivative : std::false_type {};
template <class Phi, class Scalar>
struct has_value_and_derivative<Phi, Scalar,
                                std::void_t<decltype(std::declval<const Phi&>().value_and_derivative(Scalar()))>>
    : std::true_type {};
template <class Phi, class Scalar, class = void>
struct has_means : std::false_type {};
template <class Phi, class Scalar>
struct has_means<Phi, Scalar, std::void_t<decltype(std::declval<const Phi&>().template means<Scalar>())>>
    : std::true_type {};

/// Compile-time test for a parameter check: `phi.check(function)`, which throws
/// std::invalid_argument naming the parameter ("ntk::kernel: LeakyRelu slope must be finite
/// (got nan)").  Every entry point that takes an activation calls it (check_activation_parameters).
template <class Phi, class = void>
struct has_parameter_check : std::false_type {};
template <class Phi>
struct has_parameter_check<Phi,
                           std::void_t<decltype(std::declval<const Phi&>().check(static_cast<const char*>(nullptr)))>>
    : std::true_type {};

namespace detail {

/// Calls phi.check(function) when the type has one; activations without parameters pass.
template <class Phi>
void check_activation_parameters(const char* function, const Phi& phi) {
  if constexpr (has_parameter_check<Phi>::value) phi.check(function);
  (void)function;
  (void)phi;
}

/// Throws std::invalid_argument naming `type`'s parameter `name` unless v is finite.
inline void check_parameter_finite(const char* function, const char* type, const char* name, double v) {
  if (!std::isfinite(v)) fail<std::invalid_argument>(function, type, " ", name, " must be finite (got ", v, ")");
}

/// Throws std::invalid_argument naming the parameter unless |v| <= bound: a parameter that large
/// makes every kernel overflow (or lose every digit) whatever the inputs.
inline void check_parameter_magnitude(const char* function, const char* type, const char* name, double v,
                                      double bound) {
  check_parameter_finite(function, type, name, v);
  if (!(std::fabs(v) <= bound))
    fail<std::invalid_argument>(function, type, " ", name, " must have magnitude at most ", bound, " (got ", v, ")");
}

/// The bound on slopes, scales and coefficients: φ² of such a parameter stays far inside double.
inline constexpr double parameter_bound = 1e150;

}  // namespace detail

/// Leaky ReLU φ(z) = max(z, 0) + slope min(z, 0); slope = 0 is ReLU, slope = -1 is |z|.
struct LeakyRelu {
  double slope = 0.01;
  /// Throws std::invalid_argument unless slope is finite with |slope| <= 1e150.
  void check(const char* function) const {
    detail::check_parameter_magnitude(function, "LeakyRelu", "slope", slope, detail::parameter_bound);
  }
  std::string name() const { return "leaky_relu:" + std::to_string(slope); }
  template <class S>
  S value(S z) const {
    return z > 0 ? z : static_cast<S>(slope) * z;
  }
  template <class S>
  S derivative(S z) const {
    return z > 0 ? S(1) : static_cast<S>(slope);
  }
  template <class S>
  Dual<S> dual(S q1, S c, S q2) const {
    return detail::piecewise_linear_dual(static_cast<S>(slope), S(1), q1, c, q2);
  }
  /// The dual per unit sqrt(q1 q2) at correlation ρ (φ is positively homogeneous).
  template <class S>
  Dual<S> unit_dual(S rho) const {
    return detail::piecewise_linear_unit_dual(static_cast<S>(slope), S(1), rho);
  }
  /// E[φ(Z)], E[φ'(Z)] for Z ~ N(0, 1), exact.
  template <class S>
  std::pair<S, S> means() const {
    const S a = static_cast<S>(slope);
    return {(1 - a) / std::sqrt(2 * detail::pi_v<S>), (1 + a) / 2};
  }
};

/// ReLU φ(z) = max(z, 0); dual: the arc-cosine kernels (Cho & Saul), exact.
struct Relu {
  std::string name() const { return "relu"; }
  template <class S>
  S value(S z) const {
    return z > 0 ? z : S(0);
  }
  template <class S>
  S derivative(S z) const {
    return z > 0 ? S(1) : S(0);
  }
  template <class S>
  Dual<S> dual(S q1, S c, S q2) const {
    return detail::piecewise_linear_dual(S(0), S(1), q1, c, q2);
  }
  template <class S>
  Dual<S> unit_dual(S rho) const {
    return detail::piecewise_linear_unit_dual(S(0), S(1), rho);
  }
  template <class S>
  std::pair<S, S> means() const {
    return {1 / std::sqrt(2 * detail::pi_v<S>), S(0.5)};
  }
};

/// φ(z) = |z|; dual exact.
struct Abs {
  std::string name() const { return "abs"; }
  template <class S>
  S value(S z) const {
    return std::fabs(z);
  }
  template <class S>
  S derivative(S z) const {
    return z > 0 ? S(1) : (z < 0 ? S(-1) : S(0));
  }
  template <class S>
  Dual<S> dual(S q1, S c, S q2) const {
    return detail::piecewise_linear_dual(S(-1), S(1), q1, c, q2);
  }
  template <class S>
  Dual<S> unit_dual(S rho) const {
    return detail::piecewise_linear_unit_dual(S(-1), S(1), rho);
  }
  template <class S>
  std::pair<S, S> means() const {
    return {std::sqrt(2 / detail::pi_v<S>), S(0)};
  }
};

/// φ(z) = erf(scale z); dual: Williams (1997), exact.
struct Erf {
  double scale = 1;
  /// Throws std::invalid_argument unless scale is finite with |scale| <= 1e150.
  void check(const char* function) const {
    detail::check_parameter_magnitude(function, "Erf", "scale", scale, detail::parameter_bound);
  }
  std::string name() const { return "erf"; }
  template <class S>
  S value(S z) const {
    return std::erf(static_cast<S>(scale) * z);
  }
  template <class S>
  S derivative(S z) const {
    const S b = static_cast<S>(scale);
    return 2 * b / std::sqrt(detail::pi_v<S>) * std::exp(-b * b * z * z);
  }
  template <class S>
  Dual<S> dual(S q1, S c, S q2) const {
    const S b2 = static_cast<S>(scale * scale);
    const S d1 = 1 + 2 * b2 * q1, d2 = 1 + 2 * b2 * q2;
    const S root = std::sqrt(d1) * std::sqrt(d2);
    const S limit = detail::geometric_mean(q1, q2);
    c = std::min(std::max(c, -limit), limit);
    const S arg = std::min(std::max(2 * b2 * c / root, S(-1)), S(1));
    // d1 d2 - 4 b^4 c^2 = 1 + 2 b^2 (q1 + q2) + 4 b^4 (q1 q2 - c^2), every term >= 0.
    const S gap = (limit - std::fabs(c)) * (limit + std::fabs(c));
    const S det = 1 + 2 * b2 * (q1 + q2) + 4 * b2 * b2 * gap;
    return {2 / detail::pi_v<S> * std::asin(arg), 4 * b2 / detail::pi_v<S> / std::sqrt(det)};
  }
};

/// φ(z) = tanh(z); no closed-form dual (quadrature; above variance 3.4 the saturating rule of
/// detail/saturating.hpp).
struct Tanh {
  std::string name() const { return "tanh"; }
  /// lim φ(z) as z → ∞ (φ is odd and saturates: detail/saturating.hpp).
  double saturation() const { return 1; }
  template <class S>
  S value(S z) const {
    return std::tanh(z);
  }
  template <class S>
  S derivative(S z) const {
    const S t = std::tanh(z);
    return (1 - t) * (1 + t);
  }
  /// Both at once from one tanh (quadrature evaluates φ and φ' at the same nodes).
  template <class S>
  std::pair<S, S> value_and_derivative(S z) const {
    const S t = std::tanh(z);
    return {t, (1 - t) * (1 + t)};
  }
};

/// The centered logistic φ(z) = 1/(1 + e^{-z}) - 1/2 = tanh(z/2)/2; no closed-form dual.
struct Sigmoid {
  std::string name() const { return "sigmoid"; }
  /// lim φ(z) as z → ∞ (φ is odd and saturates: detail/saturating.hpp).
  double saturation() const { return 0.5; }
  template <class S>
  S value(S z) const {
    return std::tanh(z / 2) / 2;
  }
  template <class S>
  S derivative(S z) const {
    const S t = std::tanh(z / 2);
    return (1 - t) * (1 + t) / 4;
  }
};

/// φ(z) = log(1 + e^z); no closed-form dual.
struct Softplus {
  std::string name() const { return "softplus"; }
  template <class S>
  S value(S z) const {
    return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z));
  }
  template <class S>
  S derivative(S z) const {
    return z > 0 ? 1 / (1 + std::exp(-z)) : std::exp(z) / (1 + std::exp(z));
  }
};

/// GELU φ(z) = z Φ(z); dual exact (Tsuchida et al. 2020).
struct Gelu {
  std::string name() const { return "gelu"; }
  template <class S>
  S value(S z) const {
    return z * std::erfc(-z / std::sqrt(S(2))) / 2;
  }
  template <class S>
  S derivative(S z) const {
    return std::erfc(-z / std::sqrt(S(2))) / 2 + z * std::exp(-z * z / 2) / std::sqrt(2 * detail::pi_v<S>);
  }
  template <class S>
  Dual<S> dual(S q1, S c, S q2) const {
    // Tsuchida et al.'s form rewritten in ratios so that no intermediate overflows for huge
    // variances: with p = 1 + q, s = sqrt(p1 p2), u = c / s and δ² = 1 − u² (> 0 always),
    //   Δ = s δ,  γ = atan2(u, δ),  (c² + q1 q2 Δ²) / (p1 p2 Δ) = u² / (s δ) + (q1/√p1)(q2/√p2) δ.
    const S pi = detail::pi_v<S>;
    const S p1 = 1 + q1, p2 = 1 + q2;
    const S r = detail::geometric_mean(q1, q2);
    c = std::min(std::max(c, -r), r);
    const S root1 = std::sqrt(p1), root2 = std::sqrt(p2);
    const S s = root1 * root2;
    const S u = (c / root1) / root2;
    // δ² = (p1 p2 − c²) / (p1 p2) = (1 + q1 + q2) / (p1 p2) + (q1 q2 − c²) / (p1 p2).
    const S delta2 = ((1 + q1 + q2) / p1) / p2 + ((r - std::fabs(c)) / p1) * ((r + std::fabs(c)) / p2);
    const S delta = std::sqrt(delta2);
    const S gamma = std::atan2(u, delta);
    const S a1 = q1 / root1, a2 = q2 / root2;
    const S t = c / 4 + (c * gamma + u * u / (s * delta) + a1 * a2 * delta) / (2 * pi);
    const S inverse_delta2 = (1 / (s * s)) / delta2;  // 1 / Δ²
    const S t_dot = S(0.25) + gamma / (2 * pi) +
                    (u / delta) / (2 * pi) * (inverse_delta2 + (1 / p1) / p2 - (q1 / p1) * (q2 / p2) + 1);
    return {t, t_dot};
  }
};

/// φ(z) = z; dual exact.
struct Identity {
  std::string name() const { return "identity"; }
  template <class S>
  S value(S z) const {
    return z;
  }
  template <class S>
  S derivative(S) const {
    return S(1);
  }
  template <class S>
  Dual<S> dual(S q1, S c, S q2) const {
    const S limit = std::sqrt(q1) * std::sqrt(q2);
    return {c > limit ? limit : (c < -limit ? -limit : c), S(1)};
  }
  template <class S>
  Dual<S> unit_dual(S rho) const {
    return {rho > 1 ? S(1) : (rho < -1 ? S(-1) : rho), S(1)};
  }
  template <class S>
  std::pair<S, S> means() const {
    return {S(0), S(1)};
  }
};

/// φ(z) = sin(z); dual exact.
struct Sin {
  std::string name() const { return "sin"; }
  template <class S>
  S value(S z) const {
    return std::sin(z);
  }
  template <class S>
  S derivative(S z) const {
    return std::cos(z);
  }
  template <class S>
  Dual<S> dual(S q1, S c, S q2) const {
    const S m = q1 / 2 + q2 / 2;  // not (q1 + q2) / 2, which overflows for variances near the type's maximum
    const S plus = std::exp(c - m) / 2, minus = std::exp(-c - m) / 2;
    return {plus - minus, plus + minus};
  }
};

/// φ(z) = cos(z); dual exact.
struct Cos {
  std::string name() const { return "cos"; }
  template <class S>
  S value(S z) const {
    return std::cos(z);
  }
  template <class S>
  S derivative(S z) const {
    return -std::sin(z);
  }
  template <class S>
  Dual<S> dual(S q1, S c, S q2) const {
    const S m = q1 / 2 + q2 / 2;  // not (q1 + q2) / 2, which overflows for variances near the type's maximum
    const S plus = std::exp(c - m) / 2, minus = std::exp(-c - m) / 2;
    return {plus + minus, plus - minus};
  }
};

/// A finite Hermite series φ(z) = Σ_k c_k h_k(z) with h_k = He_k / sqrt(k!) the normalized
/// probabilists' Hermite polynomials (orthonormal under N(0, 1)); coefficients start at h_0.
/// Dual exact: E[φ(u)φ(v)] = Σ_k a_k(q1) a_k(q2) ρ^k with a_k(q) = E[φ(sqrt(q) Z) h_k(Z)], each
/// a_k(q) computed by a Gauss–Hermite rule that is exact for the polynomial integrand.
class Hermite {
 public:
  Hermite() = default;
  /// Throws std::invalid_argument for an empty or non-finite coefficient list.
  explicit Hermite(std::vector<double> coefficients) : m_coefficients(std::move(coefficients)) {
    if (m_coefficients.empty())
      detail::fail<std::invalid_argument>("Hermite", "needs at least one coefficient (got 0)");
    check("Hermite");
    m_derivative.resize(m_coefficients.size() > 1 ? m_coefficients.size() - 1 : 1, 0.0);
    for (std::size_t k = 1; k < m_coefficients.size(); ++k)
      m_derivative[k - 1] = std::sqrt(static_cast<double>(k)) * m_coefficients[k];
  }
  const std::vector<double>& coefficients() const { return m_coefficients; }
  /// Throws std::invalid_argument unless every coefficient is finite with magnitude <= 1e150
  /// (so that E[φ²] = Σ c_k² stays inside double).
  void check(const char* function) const {
    for (std::size_t k = 0; k < m_coefficients.size(); ++k)
      if (!std::isfinite(m_coefficients[k]) || !(std::fabs(m_coefficients[k]) <= detail::parameter_bound))
        detail::fail<std::invalid_argument>(function, "Hermite coefficient ", k,
                                            " must be finite with magnitude at most ", detail::parameter_bound,
                                            " (got ", m_coefficients[k], ")");
  }
  /// (E[φ(Z)], E[φ'(Z)]) = (c_0, c_1) (the second by Stein's lemma).
  template <class S>
  std::pair<S, S> means() const {
    return {static_cast<S>(m_coefficients[0]), static_cast<S>(m_coefficients.size() > 1 ? m_coefficients[1] : 0.0)};
  }
  std::string name() const {
    std::string s = "hermite:";
    for (std::size_t k = 0; k < m_coefficients.size(); ++k) s += (k ? "," : "") + std::to_string(m_coefficients[k]);
    return s;
  }
  template <class S>
  S value(S z) const {
    return evaluate(m_coefficients, z);
  }
  template <class S>
  S derivative(S z) const {
    return evaluate(m_derivative, z);
  }
  template <class S>
  Dual<S> dual(S q1, S c, S q2) const {
    const S root = std::sqrt(q1) * std::sqrt(q2);
    const S rho = detail::correlation(q1, c, q2, root);
    return {series(m_coefficients, q1, rho, q2), series(m_derivative, q1, rho, q2)};
  }

 private:
  template <class S>
  static S evaluate(const std::vector<double>& coefficients, S z) {
    S previous = 0, current = 1, sum = static_cast<S>(coefficients[0]);
    for (std::size_t k = 0; k + 1 < coefficients.size(); ++k) {
      const S next = (z * current - std::sqrt(static_cast<S>(k)) * previous) / std::sqrt(static_cast<S>(k + 1));
      previous = current;
      current = next;
      sum += static_cast<S>(coefficients[k + 1]) * current;
    }
    return sum;
  }
  /// a_k(q) for k = 0..N: coefficients of z -> φ(sqrt(q) z) in the h_k basis (exact quadrature).
  template <class S>
  static std::vector<S> rescaled(const std::vector<double>& coefficients, S q) {
    const std::size_t n = coefficients.size();
    std::vector<S> a(n, S(0));
    if (q == 1) {
      for (std::size_t k = 0; k < n; ++k) a[k] = static_cast<S>(coefficients[k]);
      return a;
    }
    const auto& rule = gauss_hermite<S>(static_cast<int>(n));
    std::vector<S> h(n);
    const S sd = std::sqrt(q);
    for (std::size_t i = 0; i < n; ++i) {
      const S z = rule.nodes()[i];
      const S f = rule.weights()[i] * evaluate(coefficients, sd * z);
      detail::hermite_values(z, n - 1, h.data());
      for (std::size_t k = 0; k < n; ++k) a[k] += f * h[k];
    }
    return a;
  }
  template <class S>
  static S series(const std::vector<double>& coefficients, S q1, S rho, S q2) {
    const auto a1 = rescaled(coefficients, q1);
    const auto a2 = q2 == q1 ? a1 : rescaled(coefficients, q2);
    S sum = 0, power = 1;
    for (std::size_t k = 0; k < a1.size(); ++k, power *= rho) sum += a1[k] * a2[k] * power;
    return sum;
  }

  std::vector<double> m_coefficients{0.0, 1.0};
  std::vector<double> m_derivative{1.0};
};

/// The Bayes-optimal activation of Radhakrishnan, Belkin & Uhler for sphere dimension d >= 2
/// (lecture eq. 32): φ = 2^{-d/4} h_3 + sqrt(1 - 2^{1-d/2}) h_2 + 2^{-d/4} h_1, whose unit-variance
/// dual is ψ(ρ) = 2^{-d/2} ρ + (1 - 2^{1-d/2}) ρ^2 + 2^{-d/2} ρ^3.  Dual exact.
class OptimalActivation : public Hermite {
 public:
  /// Throws std::invalid_argument unless d >= 2.
  explicit OptimalActivation(double d = 2) : Hermite(coefficients_for(d)), m_dimension(d) {}
  double dimension() const { return m_dimension; }
  std::string name() const {
    std::string s = std::to_string(m_dimension);
    s.erase(s.find_last_not_of('0') + 1);
    if (!s.empty() && s.back() == '.') s.pop_back();
    return "opt:" + s;
  }

 private:
  static std::vector<double> coefficients_for(double d) {
    if (!(d >= 2) || !std::isfinite(d))
      detail::fail<std::invalid_argument>("OptimalActivation", "dimension d must be >= 2 (got ", d, ")");
    const double outer = std::pow(2.0, -d / 4);
    return {0.0, outer, std::sqrt(1 - std::pow(2.0, 1 - d / 2)), outer};
  }
  double m_dimension;
};

/// Any activation evaluated the generic way: value, derivative and name are forwarded, the closed
/// forms (dual, unit_dual) and moments (means) are hidden, so duals and kernels come from
/// Gauss–Hermite quadrature (tabulated, series or direct; see kernel.hpp).  For checking closed
/// forms: ntk::mlp(ntk::Quadrature<ntk::Erf>{}, ...).  Only code that names this type compiles the
/// quadrature path for a closed-form activation.
template <class Phi>
struct Quadrature {
  Phi phi{};
  /// The wrapped activation's parameter check (a no-op when it has none).
  void check(const char* function) const { detail::check_activation_parameters(function, phi); }
  /// The wrapped activation's saturation level, when it has one (detail/saturating.hpp).
  template <class P = Phi>
  auto saturation() const -> decltype(std::declval<const P&>().saturation()) {
    return phi.saturation();
  }
  std::string name() const { return phi.name(); }
  template <class S>
  S value(S z) const {
    return phi.value(z);
  }
  template <class S>
  S derivative(S z) const {
    return phi.derivative(z);
  }
};
template <class Phi>
Quadrature(Phi) -> Quadrature<Phi>;

// ---------------------------------------------------------------------------------------------
// Activations of Neural Tangents' stax zoo (ABRelu, Sign, Exp, Gaussian, Rbf, Monomial,
// RectifiedMonomial, Polynomial).  Parameters are validated at construction
// (std::invalid_argument naming the parameter).  Duals exact; the formulas:
//   ABRelu   a min(z,0) + b max(z,0): arc-cosine kernels of degree 1 and 0 with slopes a, b;
//   Sign     E[sgn u sgn v] = (2/π) asin ρ, E[φ'φ'] = 0 (φ' = 0 almost everywhere, as the
//            finite network's gradient; Neural Tangents also sets the NTK factor to 0);
//   Exp      a e^{bz}: T = a² exp(b²(q1 + q2)/2 + b² c), Ṫ = b² T;
//   Gaussian a e^{bz²}, b <= 0: with D = (1 − 2bq1)(1 − 2bq2) − 4b²c², T = a² D^{-1/2},
//            Ṫ = 4a²b² c D^{-3/2};
//   Rbf      √2 sin(√(2γ) z + π/4): T = exp(−γ(q1 + q2 − 2c)), Ṫ = 2γ T;
//   Polynomial Σ_j c_j z^j (Monomial z^n is one term): with z^j = Σ_m h_{j,m} He_m(z),
//            h_{j,j−2k} = j!/(k!(j−2k)! 2^k), T = Σ_m m! c^m e_m(q1) e_m(q2),
//            e_m(q) = Σ_j c_j h_{j,m} q^{(j−m)/2} (integer powers: exact at q = 0);
//   RectifiedMonomial (z)₊^n: arc-cosine kernel of degree n by Stein's lemma on the moments
//            m(a, b) = E[X₊^a Y₊^b] of standard normals of correlation ρ:
//            m(a, b) = [a >= 2] (a−1) m(a−2, b) + [a = 1] s^b M_b / √(2π)
//                    + ρ ([b >= 1] b m(a−1, b−1) + [b = 0] s^{a−1} M_{a−1} / √(2π)),
//            m(0, 0) = (π − acos ρ)/(2π), s = √(1 − ρ²), M_k = E[Z₊^k]; T = (q1 q2)^{n/2} m(n, n),
//            Ṫ = n² (q1 q2)^{(n−1)/2} m(n−1, n−1).  On the diagonal T = (2n − 1)!! q^n / 2.
// ---------------------------------------------------------------------------------------------

namespace detail {

/// Throws std::invalid_argument unless v is finite.
inline void check_finite_parameter(const char* type, const char* name, double v) {
  if (!std::isfinite(v)) fail<std::invalid_argument>(type, name, " must be finite (got ", v, ")");
}

/// The dual of a polynomial given its monomial coefficients (see the block comment above).
class PolynomialDual {
 public:
  PolynomialDual() = default;
  explicit PolynomialDual(const std::vector<double>& c) : m_degree(c.size() - 1), m_e(c.size() * c.size(), 0.0) {
    // m_e[m n + j] = sqrt(m!) h_{j,m} c_j (j >= m, j ≡ m mod 2), so T = Σ_m c^m E_m(q1) E_m(q2)
    // with E_m(q) = sqrt(m!) e_m(q) = Σ_j m_e[m n + j] q^{(j − m)/2}.
    const std::size_t n = c.size();
    for (std::size_t j = 0; j < n; ++j)
      for (std::size_t k = 0; 2 * k <= j; ++k) {
        const std::size_t m = j - 2 * k;
        // sqrt(m!) j! / (k! m! 2^k) = j! / (k! sqrt(m!) 2^k), in log space to avoid overflow.
        const double log_h = std::lgamma(static_cast<double>(j) + 1) - std::lgamma(static_cast<double>(k) + 1) -
                             0.5 * std::lgamma(static_cast<double>(m) + 1) - static_cast<double>(k) * std::log(2.0);
        m_e[m * n + j] = c[j] * std::exp(log_h);
      }
  }
  /// Σ_m c^m E_m(q1) E_m(q2).
  template <class S>
  S operator()(S q1, S c, S q2) const {
    const std::size_t n = m_degree + 1;
    S sum = 0, power = 1;
    for (std::size_t m = 0; m < n; ++m, power *= c) {
      S e1 = 0, e2 = 0;
      for (std::size_t j = n; j-- > m;) {  // Horner in q over j = m, m+2, ...
        if ((j - m) % 2 != 0) continue;
        e1 = e1 * q1 + static_cast<S>(m_e[m * n + j]);
        e2 = e2 * q2 + static_cast<S>(m_e[m * n + j]);
      }
      sum += power * e1 * e2;
    }
    return sum;
  }

 private:
  std::size_t m_degree = 0;
  std::vector<double> m_e;
};

/// Σ_j c_j z^j by Horner.
template <class S>
S horner(const std::vector<double>& c, S z) {
  S sum = 0;
  for (std::size_t j = c.size(); j-- > 0;) sum = sum * z + static_cast<S>(c[j]);
  return sum;
}

}  // namespace detail

/// φ(z) = a min(z, 0) + b max(z, 0) (Neural Tangents' ABRelu); dual exact.
class ABRelu {
 public:
  /// Throws std::invalid_argument unless a and b are finite.
  explicit ABRelu(double a = 0, double b = 1) : m_a(a), m_b(b) {
    detail::check_finite_parameter("ABRelu", "a", a);
    detail::check_finite_parameter("ABRelu", "b", b);
  }
  double a() const { return m_a; }
  double b() const { return m_b; }
  /// Throws std::invalid_argument unless |a|, |b| <= 1e150.
  void check(const char* function) const {
    detail::check_parameter_magnitude(function, "ABRelu", "a", m_a, detail::parameter_bound);
    detail::check_parameter_magnitude(function, "ABRelu", "b", m_b, detail::parameter_bound);
  }
  std::string name() const { return "abrelu:" + std::to_string(m_a) + "," + std::to_string(m_b); }
  template <class S>
  S value(S z) const {
    return z > 0 ? static_cast<S>(m_b) * z : static_cast<S>(m_a) * z;
  }
  template <class S>
  S derivative(S z) const {
    return z > 0 ? static_cast<S>(m_b) : static_cast<S>(m_a);
  }
  template <class S>
  Dual<S> dual(S q1, S c, S q2) const {
    return detail::piecewise_linear_dual(static_cast<S>(m_a), static_cast<S>(m_b), q1, c, q2);
  }
  template <class S>
  Dual<S> unit_dual(S rho) const {
    return detail::piecewise_linear_unit_dual(static_cast<S>(m_a), static_cast<S>(m_b), rho);
  }
  template <class S>
  std::pair<S, S> means() const {
    const S a = static_cast<S>(m_a), b = static_cast<S>(m_b);
    return {(b - a) / std::sqrt(2 * detail::pi_v<S>), (a + b) / 2};
  }

 private:
  double m_a, m_b;
};

/// φ(z) = sign(z) (0 at 0), φ' = 0 almost everywhere; dual exact: T = (2/π) asin ρ, Ṫ = 0.
struct Sign {
  std::string name() const { return "sign"; }
  template <class S>
  S value(S z) const {
    return z > 0 ? S(1) : (z < 0 ? S(-1) : S(0));
  }
  template <class S>
  S derivative(S) const {
    return S(0);
  }
  template <class S>
  Dual<S> dual(S q1, S c, S q2) const {
    if (!(q1 > 0) || !(q2 > 0)) return {S(0), S(0)};
    const S rho = detail::correlation(q1, c, q2, detail::geometric_mean(q1, q2));
    return {2 / detail::pi_v<S> * std::asin(rho), S(0)};
  }
};

/// φ(z) = a exp(b z); dual exact: T = a² exp(b² (q1 + q2)/2 + b² c), Ṫ = b² T.
class Exp {
 public:
  /// Throws std::invalid_argument unless a and b are finite.
  explicit Exp(double a = 1, double b = 1) : m_a(a), m_b(b) {
    detail::check_finite_parameter("Exp", "a", a);
    detail::check_finite_parameter("Exp", "b", b);
  }
  /// Throws std::invalid_argument unless |a| <= 1e150 and b is finite.
  void check(const char* function) const {
    detail::check_parameter_magnitude(function, "Exp", "a", m_a, detail::parameter_bound);
    detail::check_parameter_finite(function, "Exp", "b", m_b);
  }
  std::string name() const { return "exp:" + std::to_string(m_a) + "," + std::to_string(m_b); }
  template <class S>
  S value(S z) const {
    return static_cast<S>(m_a) * std::exp(static_cast<S>(m_b) * z);
  }
  template <class S>
  S derivative(S z) const {
    return static_cast<S>(m_a * m_b) * std::exp(static_cast<S>(m_b) * z);
  }
  template <class S>
  Dual<S> dual(S q1, S c, S q2) const {
    const S limit = detail::geometric_mean(q1, q2);
    c = std::min(std::max(c, -limit), limit);
    const S b2 = static_cast<S>(m_b * m_b);
    const S t = static_cast<S>(m_a * m_a) * std::exp(b2 * ((q1 + q2) / 2 + c));
    return {t, b2 * t};
  }

 private:
  double m_a, m_b;
};

/// φ(z) = a exp(b z²) with b <= 0; dual exact (see the block comment).
class Gaussian {
 public:
  /// Throws std::invalid_argument unless a is finite and b is finite and <= 0 (for b > 0 the
  /// expectations diverge at variances >= 1/(2b)).
  explicit Gaussian(double a = 1, double b = -1) : m_a(a), m_b(b) {
    detail::check_finite_parameter("Gaussian", "a", a);
    if (!(b <= 0) || !std::isfinite(b))
      detail::fail<std::invalid_argument>("Gaussian", "b must be finite and <= 0 (got ", b, ")");
  }
  /// Throws std::invalid_argument unless |a| <= 1e150 and b is finite and <= 0.
  void check(const char* function) const {
    detail::check_parameter_magnitude(function, "Gaussian", "a", m_a, detail::parameter_bound);
    detail::check_parameter_finite(function, "Gaussian", "b", m_b);
    if (!(m_b <= 0)) detail::fail<std::invalid_argument>(function, "Gaussian b must be <= 0 (got ", m_b, ")");
  }
  std::string name() const { return "gaussian:" + std::to_string(m_a) + "," + std::to_string(m_b); }
  template <class S>
  S value(S z) const {
    return static_cast<S>(m_a) * std::exp(static_cast<S>(m_b) * z * z);
  }
  template <class S>
  S derivative(S z) const {
    return static_cast<S>(2 * m_a * m_b) * z * std::exp(static_cast<S>(m_b) * z * z);
  }
  template <class S>
  Dual<S> dual(S q1, S c, S q2) const {
    const S b = static_cast<S>(m_b), a2 = static_cast<S>(m_a * m_a);
    const S limit = detail::geometric_mean(q1, q2);
    c = std::min(std::max(c, -limit), limit);
    // D = 1 − 2b(q1 + q2) + 4b²(q1 q2 − c²), every term >= 0 for b <= 0.
    const S gap = (limit - std::fabs(c)) * (limit + std::fabs(c));
    const S det = 1 - 2 * b * (q1 + q2) + 4 * b * b * gap;
    const S root = std::sqrt(det);
    return {a2 / root, 4 * a2 * b * b * c / (det * root)};
  }

 private:
  double m_a, m_b;
};

/// φ(z) = √2 sin(√(2γ) z + π/4), whose NNGP step is the RBF kernel exp(−γ(q1 + q2 − 2c))
/// (Neural Tangents' Rbf); dual exact, Ṫ = 2γ T.
class Rbf {
 public:
  /// Throws std::invalid_argument unless gamma is positive and finite.
  explicit Rbf(double gamma = 1) : m_gamma(gamma) { detail::check_positive("Rbf", "gamma", gamma); }
  double gamma() const { return m_gamma; }
  /// Throws std::invalid_argument unless gamma is positive and finite.
  void check(const char* function) const {
    if (!(m_gamma > 0) || !std::isfinite(m_gamma))
      detail::fail<std::invalid_argument>(function, "Rbf gamma must be positive and finite (got ", m_gamma, ")");
  }
  std::string name() const { return "rbf:" + std::to_string(m_gamma); }
  template <class S>
  S value(S z) const {
    return std::sqrt(S(2)) * std::sin(std::sqrt(static_cast<S>(2 * m_gamma)) * z + detail::pi_v<S> / 4);
  }
  template <class S>
  S derivative(S z) const {
    const S w = std::sqrt(static_cast<S>(2 * m_gamma));
    return std::sqrt(S(2)) * w * std::cos(w * z + detail::pi_v<S> / 4);
  }
  template <class S>
  Dual<S> dual(S q1, S c, S q2) const {
    const S limit = detail::geometric_mean(q1, q2);
    c = std::min(std::max(c, -limit), limit);
    const S gamma = static_cast<S>(m_gamma);
    const S t = std::exp(-gamma * (q1 + q2 - 2 * c));
    return {t, 2 * gamma * t};
  }

 private:
  double m_gamma;
};

/// φ(z) = Σ_j c_j z^j (coefficients from the constant term up); dual exact (block comment).
class Polynomial {
 public:
  /// φ(z) = z.
  Polynomial() : Polynomial(std::vector<double>{0.0, 1.0}) {}
  /// Throws std::invalid_argument for an empty list, more than 33 coefficients (degree > 32) or
  /// a non-finite coefficient.
  explicit Polynomial(std::vector<double> coefficients) : m_c(std::move(coefficients)) {
    if (m_c.empty() || m_c.size() > 33)
      detail::fail<std::invalid_argument>("Polynomial", "coefficients must number 1 to 33 (got ", m_c.size(), ")");
    for (std::size_t j = 0; j < m_c.size(); ++j)
      if (!std::isfinite(m_c[j]))
        detail::fail<std::invalid_argument>("Polynomial", "coefficient ", j, " must be finite (got ", m_c[j], ")");
    m_d.assign(m_c.size() > 1 ? m_c.size() - 1 : 1, 0.0);
    for (std::size_t j = 1; j < m_c.size(); ++j) m_d[j - 1] = static_cast<double>(j) * m_c[j];
    m_dual = detail::PolynomialDual(m_c);
    m_dual_dot = detail::PolynomialDual(m_d);
  }
  const std::vector<double>& coefficients() const { return m_c; }
  /// Throws std::invalid_argument unless every coefficient is finite.
  void check(const char* function) const {
    for (std::size_t j = 0; j < m_c.size(); ++j)
      if (!std::isfinite(m_c[j]))
        detail::fail<std::invalid_argument>(function, "Polynomial coefficient ", j, " must be finite (got ", m_c[j],
                                            ")");
  }
  std::string name() const {
    std::string s = "polynomial:";
    for (std::size_t j = 0; j < m_c.size(); ++j) s += (j ? "," : "") + std::to_string(m_c[j]);
    return s;
  }
  template <class S>
  S value(S z) const {
    return detail::horner(m_c, z);
  }
  template <class S>
  S derivative(S z) const {
    return detail::horner(m_d, z);
  }
  template <class S>
  Dual<S> dual(S q1, S c, S q2) const {
    const S limit = detail::geometric_mean(q1, q2);
    c = std::min(std::max(c, -limit), limit);
    return {m_dual(q1, c, q2), m_dual_dot(q1, c, q2)};
  }

 private:
  std::vector<double> m_c, m_d;
  detail::PolynomialDual m_dual, m_dual_dot;
};

/// φ(z) = z^n, n in [0, 32]; dual exact (a one-term Polynomial).
class Monomial : public Polynomial {
 public:
  /// Throws std::invalid_argument unless 0 <= degree <= 32.
  explicit Monomial(int degree = 2) : Polynomial(coefficients_for(degree)), m_degree(degree) {}
  int degree() const { return m_degree; }
  std::string name() const { return "monomial:" + std::to_string(m_degree); }

 private:
  static std::vector<double> coefficients_for(int degree) {
    if (degree < 0 || degree > 32)
      detail::fail<std::invalid_argument>("Monomial", "degree must be in [0, 32] (got ", degree, ")");
    std::vector<double> c(static_cast<std::size_t>(degree) + 1, 0.0);
    c.back() = 1;
    return c;
  }
  int m_degree;
};

/// φ(z) = max(z, 0)^n, n in [0, 16] (n = 0: the step 1{z > 0}, φ' = 0 almost everywhere);
/// dual exact: the arc-cosine kernel of degree n (block comment).
class RectifiedMonomial {
 public:
  /// Throws std::invalid_argument unless 0 <= degree <= 16.
  explicit RectifiedMonomial(int degree = 1) : m_degree(degree) {
    if (degree < 0 || degree > 16)
      detail::fail<std::invalid_argument>("RectifiedMonomial", "degree must be in [0, 16] (got ", degree, ")");
  }
  int degree() const { return m_degree; }
  std::string name() const { return "rectified_monomial:" + std::to_string(m_degree); }
  template <class S>
  S value(S z) const {
    return z > 0 ? power(z, m_degree) : S(0);
  }
  template <class S>
  S derivative(S z) const {
    return m_degree == 0 || !(z > 0) ? S(0) : static_cast<S>(m_degree) * power(z, m_degree - 1);
  }
  template <class S>
  Dual<S> dual(S q1, S c, S q2) const {
    const S root = detail::geometric_mean(q1, q2);
    const S rho = detail::correlation(q1, c, q2, root);
    S top = 0, below = 0;
    moments(rho, top, below);
    const S t = power(root, m_degree) * top;
    const S t_dot = m_degree == 0 ? S(0) : static_cast<S>(m_degree * m_degree) * power(root, m_degree - 1) * below;
    return {t, t_dot};
  }

 private:
  template <class S>
  static S power(S x, int n) {
    S r = 1;
    for (int i = 0; i < n; ++i) r *= x;
    return r;
  }
  /// m(n, n) and m(n−1, n−1) (0 for n = 0) by the Stein recursion.
  template <class S>
  void moments(S rho, S& top, S& below) const {
    constexpr int max = 17;
    const int n = m_degree;
    const S pi = detail::pi_v<S>;
    const S inv_root_2pi = 1 / std::sqrt(2 * pi);
    constexpr S snap = 1 - 8 * std::numeric_limits<S>::epsilon();
    rho = rho >= snap ? S(1) : (rho <= -snap ? S(-1) : rho);
    const S s = std::sqrt(std::max((1 - rho) * (1 + rho), S(0)));
    S half[max + 1];  // M_k = E[Z₊^k]
    half[0] = S(0.5);
    half[1] = inv_root_2pi;
    for (int k = 2; k <= max; ++k) half[k] = static_cast<S>(k - 1) * half[k - 2];
    S s_power[max + 1];
    s_power[0] = 1;
    for (int k = 1; k <= max; ++k) s_power[k] = s_power[k - 1] * s;
    S m[max][max];                          // m[a][b] = E[X₊^a Y₊^b], symmetric in (a, b)
    const auto stein = [&](int a, int b) {  // a >= 1, with m(a−2, b) and m(a−1, b−1) known
      S value = a >= 2 ? static_cast<S>(a - 1) * m[a - 2][b] : s_power[b] * half[b] * inv_root_2pi;
      value += rho * (b >= 1 ? static_cast<S>(b) * m[a - 1][b - 1] : s_power[a - 1] * half[a - 1] * inv_root_2pi);
      return value;
    };
    m[0][0] = (pi - std::acos(rho)) / (2 * pi);
    for (int a = 1; a <= n; ++a) m[a][0] = m[0][a] = stein(a, 0);
    for (int a = 1; a <= n; ++a)
      for (int b = 1; b <= n; ++b) m[a][b] = stein(a, b);
    top = m[n][n];
    below = n >= 1 ? m[n - 1][n - 1] : S(0);
  }
  int m_degree;
};

}  // namespace ntk
