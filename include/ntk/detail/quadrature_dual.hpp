#pragma once
/// \file detail/quadrature_dual.hpp
/// The generic evaluation of a dual: a product Gauss–Hermite rule over the 2-D Gaussian, for
/// activations without a closed form (or when quadrature is forced).  Not public API; see dual.hpp.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "../activations.hpp"
#include "../quadrature.hpp"
#include "batch_values.hpp"

namespace ntk {
namespace detail {

/// φ and φ' at one point, sharing work where the activation has value_and_derivative().
template <class Phi, class S>
void value_and_derivative(const Phi& phi, S z, S& value, S& derivative) {
  if constexpr (has_value_and_derivative<Phi, S>::value) {
    const auto both = phi.value_and_derivative(z);
    value = both.first;
    derivative = both.second;
  } else {
    value = phi.value(z);
    derivative = phi.derivative(z);
  }
}

/// The nodes of the product rule for one covariance, in the order quadrature_dual_from combines
/// them: a degenerate covariance (a variance 0) needs φ at 0 and at sd z_i (1 + n points), else
/// the outer points √s11 z_i then, for each i, the inner ones slope z_i + s z_j (n + n² points).
template <class S>
std::size_t quadrature_point_count(const Covariance2<S>& cov, const GaussHermiteRule<S>& rule) {
  const std::size_t n = rule.nodes().size();
  return cov.s11 == 0 || cov.s22 == 0 ? 1 + n : n + n * n;
}
template <class S>
void quadrature_points(const Covariance2<S>& cov, const GaussHermiteRule<S>& rule, S* out) {
  const auto& z = rule.nodes();
  const std::size_t n = z.size();
  if (cov.s11 == 0 || cov.s22 == 0) {
    const S sd = std::sqrt(std::max(cov.s11, cov.s22));
    out[0] = 0;
    for (std::size_t i = 0; i < n; ++i) out[1 + i] = sd * z[i];
    return;
  }
  const S root11 = std::sqrt(cov.s11);
  const S slope = cov.s12 / root11;
  const S s = std::sqrt(std::max(cov.s11 * cov.s22 - cov.s12 * cov.s12, S(0)) / cov.s11);
  for (std::size_t i = 0; i < n; ++i) out[i] = root11 * z[i];
  for (std::size_t i = 0; i < n; ++i) {
    const S shift = slope * z[i];
    for (std::size_t j = 0; j < n; ++j) out[n + i * n + j] = shift + s * z[j];
  }
}
/// The dual from φ (v) and φ' (dv) at quadrature_points, with the same arithmetic as the
/// point-by-point loop of quadrature_dual.
template <class S>
Dual<S> quadrature_dual_from(const Covariance2<S>& cov, const GaussHermiteRule<S>& rule, const S* v, const S* dv) {
  const auto& w = rule.weights();
  const std::size_t n = w.size();
  if (cov.s11 == 0 || cov.s22 == 0) {
    S ev = 0, ed = 0;
    for (std::size_t i = 0; i < n; ++i) {
      ev += w[i] * v[1 + i];
      ed += w[i] * dv[1 + i];
    }
    return {v[0] * ev, dv[0] * ed};
  }
  S t = 0, d = 0;
  for (std::size_t i = 0; i < n; ++i) {
    S inner_v = 0, inner_d = 0;
    for (std::size_t j = 0; j < n; ++j) {
      inner_v += w[j] * v[n + i * n + j];
      inner_d += w[j] * dv[n + i * n + j];
    }
    t += w[i] * v[i] * inner_v;
    d += w[i] * dv[i] * inner_d;
  }
  return {t, d};
}

/// Both expectations by one pass of a product Gauss–Hermite rule (covariance already validated).
/// A batch activation (has_batch_values) is evaluated on all n + n² nodes in one call.
template <class Phi, class S>
Dual<S> quadrature_dual(const Phi& phi, const Covariance2<S>& cov, const GaussHermiteRule<S>& rule) {
  if constexpr (has_batch_values_v<Phi, S>) {
    const std::size_t count = quadrature_point_count(cov, rule);
    std::vector<S> z(count), v(count), dv(count);
    quadrature_points(cov, rule, z.data());
    values_and_derivatives(phi, z.data(), v.data(), dv.data(), count);
    return quadrature_dual_from(cov, rule, v.data(), dv.data());
  }
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

/// quadrature_dual for covariances cov[0, count) with one rule; a batch activation is evaluated
/// in calls of about batch_points nodes (several covariances per call), others covariance by
/// covariance.
template <class Phi, class S>
void quadrature_duals(const Phi& phi, const Covariance2<S>* cov, std::size_t count, const GaussHermiteRule<S>& rule,
                      Dual<S>* out) {
  if constexpr (has_batch_values_v<Phi, S>) {
    std::vector<S> z, v, dv;
    for (std::size_t first = 0; first < count;) {
      std::size_t last = first, points = 0;
      while (last < count && (last == first || points + quadrature_point_count(cov[last], rule) <= batch_points))
        points += quadrature_point_count(cov[last++], rule);
      z.resize(points);
      v.resize(points);
      dv.resize(points);
      for (std::size_t c = first, offset = 0; c < last; offset += quadrature_point_count(cov[c++], rule))
        quadrature_points(cov[c], rule, z.data() + offset);
      values_and_derivatives(phi, z.data(), v.data(), dv.data(), points);
      for (std::size_t c = first, offset = 0; c < last; offset += quadrature_point_count(cov[c++], rule))
        out[c] = quadrature_dual_from(cov[c], rule, v.data() + offset, dv.data() + offset);
      first = last;
    }
  } else {
    for (std::size_t c = 0; c < count; ++c) out[c] = quadrature_dual(phi, cov[c], rule);
  }
}
}  // namespace detail
}  // namespace ntk
