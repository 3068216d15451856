#pragma once
/// \file detail/quadrature_dual.hpp
/// The generic evaluation of a dual: a product Gauss–Hermite rule over the 2-D Gaussian, for
/// activations without a closed form (or when quadrature is forced).  Not public API; see dual.hpp.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "../activations.hpp"
#include "../quadrature.hpp"

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
}  // namespace detail
}  // namespace ntk
