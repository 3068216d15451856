#pragma once
/// \file detail/saturating.hpp
/// Duals of odd saturating activations (tanh, the centered sigmoid: φ odd, φ(z) → ±L as z → ±∞,
/// φ − L sign decaying exponentially) at large variances, where a Gauss–Hermite rule in the
/// standardized variable cannot resolve the transition of φ(√q z) (width 1/√q at z = 0).  Not
/// public API; layer_dual.hpp and dual.hpp use it above saturating_threshold.
///
/// With (u, v) = (√q1 x, √q2 (ρ x + σ w)), σ = √(1 − ρ²), x, w independent standard normals:
///   T  = E[φ(u) φ(v)]   = 2 ∫_0^∞ φ(√q1 x) g(x) n(x) dx,   g(x)  = E_w[φ(μ + s w)],
///   Ṫ  = E[φ'(u) φ'(v)] = 2 ∫_0^∞ φ'(√q1 x) g'(x) n(x) dx, g'(x) = E_w[φ'(μ + s w)],
/// μ = √q2 ρ x, s = √q2 σ (both integrands are even in x).  The outer integral uses 16-point
/// Gauss–Legendre panels graded geometrically (ratio 2) from the smallest feature scale
/// (1/√q1, 1/(√q2 |ρ|), σ/|ρ|) up to 1, then unit panels to x = 9 (n(9) < 1e-17).  The inner one:
///   s <= 0.7: Gauss–Hermite of order 128 in w (φ(μ + s w) is analytic in a strip of half-width
///             π/(2s) >= 2.2, so the rule is exact to rounding);
///   s > 0.7:  φ = L sign + r with r odd and localized: E[φ(μ + s w)] = L erf(μ/(s√2)) +
///             ∫_0^∞ r(t) (n_s(t − μ) − n_s(t + μ)) dt, and E[φ'] = ∫_0^∞ φ'(t) (n_s(t − μ) +
///             n_s(t + μ)) dt, by Gauss–Legendre panels of width 2 on [0, 10] and 4 on [10, 42]
///             (r and φ' are below 1e-17 beyond for tanh and the sigmoid).
/// Everything is computed in double (long double for long double), whatever the scalar type, so a
/// float kernel at variance 1e30 is as good as a double one.  Cost: about 400 × 200 evaluations
/// of φ per entry.

#include <array>
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "../activations.hpp"
#include "../quadrature.hpp"
#include "quadrature_dual.hpp"

namespace ntk {
namespace detail {

/// Compile-time test for an odd saturating activation: `phi.saturation()` returns L = lim φ(z).
template <class Phi, class = void>
struct has_saturation : std::false_type {};
template <class Phi>
struct has_saturation<Phi, std::void_t<decltype(std::declval<const Phi&>().saturation())>> : std::true_type {};
template <class Phi>
inline constexpr bool has_saturation_v = has_saturation<Phi>::value;

/// Variance above which the saturating rule replaces Gauss–Hermite: where the adaptive order
/// 64 + 130 q reaches its cap of 512.
inline constexpr double saturating_threshold = (512.0 - 64.0) / 130.0;

/// The 16-point Gauss–Legendre rule on [-1, 1] (Newton on P_16, in long double).
template <class W>
struct Legendre16 {
  std::array<W, 16> nodes{}, weights{};
  Legendre16() {
    constexpr int n = 16;
    const long double pi = 3.141592653589793238462643383279502884L;
    for (int i = 0; i < n; ++i) {
      long double x = std::cos(pi * (static_cast<long double>(i) + 0.75L) / (n + 0.5L)), dp = 0;
      for (int iteration = 0; iteration < 100; ++iteration) {
        long double p0 = 1, p1 = x;
        for (int k = 2; k <= n; ++k) {
          const long double p2 = ((2 * k - 1) * x * p1 - (k - 1) * p0) / k;
          p0 = p1;
          p1 = p2;
        }
        dp = n * (x * p1 - p0) / (x * x - 1);
        const long double step = p1 / dp;
        x -= step;
        if (std::fabs(step) < 1e-19L) break;
      }
      long double p0 = 1, p1 = x;
      for (int k = 2; k <= n; ++k) {
        const long double p2 = ((2 * k - 1) * x * p1 - (k - 1) * p0) / k;
        p0 = p1;
        p1 = p2;
      }
      dp = n * (x * p1 - p0) / (x * x - 1);
      nodes[static_cast<std::size_t>(i)] = static_cast<W>(x);
      weights[static_cast<std::size_t>(i)] = static_cast<W>(2 / ((1 - x * x) * dp * dp));
    }
  }
  static const Legendre16& get() {
    static const Legendre16 rule;
    return rule;
  }
};

/// The working type: double, or long double when the scalar type is wider.
template <class S>
using SaturatingWork = std::conditional_t<(sizeof(S) > sizeof(double)), S, double>;

/// (E[φ(μ + s w)], E[φ'(μ + s w)]) for w ~ N(0, 1) (the inner integral of the file comment).
template <class W, class Phi>
std::pair<W, W> saturating_inner(const Phi& phi, W mu, W s) {
  const Legendre16<W>& gl = Legendre16<W>::get();
  if (s == 0) {
    W v, d;
    value_and_derivative(phi, mu, v, d);
    return {v, d};
  }
  if (s <= W(0.7)) {
    const auto& rule = gauss_hermite<W>(128);
    W ev = 0, ed = 0;
    for (std::size_t i = 0; i < rule.nodes().size(); ++i) {
      W v, d;
      value_and_derivative(phi, mu + s * rule.nodes()[i], v, d);
      ev += rule.weights()[i] * v;
      ed += rule.weights()[i] * d;
    }
    return {ev, ed};
  }
  const W level = static_cast<W>(phi.saturation());
  const W inverse_norm = 1 / (s * std::sqrt(2 * pi_v<W>));
  const W inverse_two_s2 = 1 / (2 * s * s);
  W er = 0, ed = 0;
  const auto panel = [&](W a, W b) {
    const W half = (b - a) / 2, middle = (a + b) / 2;
    for (int k = 0; k < 16; ++k) {
      const W t = middle + half * gl.nodes[static_cast<std::size_t>(k)];
      W v, d;
      value_and_derivative(phi, t, v, d);
      const W minus = t - mu, plus = t + mu;
      const W n_minus = std::exp(-minus * minus * inverse_two_s2), n_plus = std::exp(-plus * plus * inverse_two_s2);
      const W w = half * gl.weights[static_cast<std::size_t>(k)] * inverse_norm;
      er += w * (v - level) * (n_minus - n_plus);
      ed += w * d * (n_minus + n_plus);
    }
  };
  for (int p = 0; p < 5; ++p) panel(W(2 * p), W(2 * p + 2));
  for (int p = 0; p < 8; ++p) panel(W(10 + 4 * p), W(14 + 4 * p));
  return {level * std::erf(mu / (s * std::sqrt(W(2)))) + er, ed};
}

/// (E[φ(u)φ(v)], E[φ'(u)φ'(v)]) for (u, v) ~ N(0, [[q1, c], [c, q2]]), |c| <= sqrt(q1 q2).
template <class Phi, class S>
Dual<S> saturating_dual(const Phi& phi, S q1_in, S c_in, S q2_in) {
  using W = SaturatingWork<S>;
  W q1 = static_cast<W>(q1_in), q2 = static_cast<W>(q2_in), c = static_cast<W>(c_in);
  if (q1 < q2) std::swap(q1, q2);  // symmetric in (u, v); the outer variable takes the larger variance
  if (q2 == 0) {                   // v = 0: T = φ(0) E[φ(u)] = 0 (φ odd), Ṫ = φ'(0) E[φ'(u)]
    W v0, d0;
    value_and_derivative(phi, W(0), v0, d0);
    const auto inner = saturating_inner<W>(phi, W(0), std::sqrt(q1));
    return {static_cast<S>(v0 * inner.first), static_cast<S>(d0 * inner.second)};
  }
  const W root1 = std::sqrt(q1), root2 = std::sqrt(q2);
  // ρ and σ = sqrt(1 − ρ²) from r = sqrt(q1 q2) (exactly q on the diagonal) and r ∓ |c|, without
  // the cancellation of 1 − ρ²: a rounding of ρ = 1 by one ulp would give σ = 1.5e-8, which the
  // inner variance s = √q2 σ amplifies into a relative error of s² (1e-6 at q = 5e9).
  const W r = geometric_mean(q1, q2);
  c = std::min(std::max(c, -r), r);
  const W rho = c / r;
  const W sigma = std::sqrt((r - std::fabs(c)) / r) * std::sqrt((r + std::fabs(c)) / r);
  // The smallest scale of a feature near x = 0, then a geometric mesh up to 1.
  W scale = std::min(W(1), 1 / root1);
  if (rho != 0) {
    scale = std::min(scale, 1 / (root2 * std::fabs(rho)));
    if (sigma > 0) scale = std::min(scale, sigma / std::fabs(rho));
  }
  const W h = std::max(scale / 2, W(1e-300));
  const Legendre16<W>& gl = Legendre16<W>::get();
  const W inverse_root_2pi = 1 / std::sqrt(2 * pi_v<W>);
  W t = 0, t_dot = 0;
  const auto panel = [&](W a, W b) {
    const W half = (b - a) / 2, middle = (a + b) / 2;
    for (int k = 0; k < 16; ++k) {
      const W x = middle + half * gl.nodes[static_cast<std::size_t>(k)];
      W v, d;
      value_and_derivative(phi, root1 * x, v, d);
      const auto inner = saturating_inner<W>(phi, root2 * rho * x, root2 * sigma);
      const W w = half * gl.weights[static_cast<std::size_t>(k)] * std::exp(-x * x / 2) * inverse_root_2pi;
      t += w * v * inner.first;
      t_dot += w * d * inner.second;
    }
  };
  W a = 0, b = h;
  while (b < 1) {
    panel(a, b);
    a = b;
    b *= 2;
  }
  panel(a, W(1));
  for (int p = 1; p < 9; ++p) panel(W(p), W(p + 1));
  return {static_cast<S>(2 * t), static_cast<S>(2 * t_dot)};
}

}  // namespace detail
}  // namespace ntk
