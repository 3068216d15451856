#pragma once
/// \file dual.hpp
/// The 2-D Gaussian expectations L^φ and L^φ' of a 2x2 covariance (lecture eq. 16):
///   t     = E[φ(u) φ(v)],   t_dot = E[φ'(u) φ'(v)],   (u, v) ~ N(0, [[s11, s12], [s12, s22]]).
/// From the activation's closed form where it has one (exact), else by a product Gauss–Hermite
/// rule (an approximation; see adaptive_quadrature_order for its error).
/// How the quadrature is done, and the tabulated form used by the Gram-matrix engines, live in
/// detail/quadrature_dual.hpp and detail/dual_table.hpp.

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "activations.hpp"
#include "contracts.hpp"
#include "detail/dual_table.hpp"
#include "detail/quadrature_dual.hpp"
#include "detail/saturating.hpp"
#include "errors.hpp"
#include "quadrature.hpp"

namespace ntk {

/// How a dual is evaluated.
struct DualOptions {
  /// Gauss–Hermite order per dimension; 0 chooses adaptive_quadrature_order(max(s11, s22)).
  int quadrature_order = 0;
  /// Kernels only (adaptive order, inputs of different norms): the Hermite series of the dual is
  /// cut where its tail is at most this fraction of E[φ²] (and of E[φ'²]) for every variance, which
  /// bounds an entry's truncation error by series_tolerance · sqrt(T(x, x) T(x', x')) per layer.
  /// Larger values cut the cost (fewer terms); see README's benchmark table.
  double series_tolerance = 1e-12;

  /// Throws std::invalid_argument for a negative order or one above max_quadrature_order, or a
  /// series tolerance outside (0, 1).
  void check(const char* function) const {
    if (quadrature_order < 0 || quadrature_order > max_quadrature_order)
      detail::fail<std::invalid_argument>(function, "quadrature order must be in [1, ", max_quadrature_order,
                                          "], or 0 for adaptive (got ", quadrature_order, ")");
    if (!(series_tolerance > 0 && series_tolerance < 1))
      detail::fail<std::invalid_argument>(function, "series_tolerance must be in (0, 1) (got ", series_tolerance, ")");
  }
};

/// The default Gauss–Hermite order for variances up to q: 64 + 130 q nodes per dimension, at most
/// 512.  For tanh (poles at distance π/2, the slowest common smooth case) the error of E[φφ] is
/// about 45 exp(-π sqrt(n / q)) and that of E[φ'φ'] ten times larger (docs/mathematics.md T6), so this
/// order gives <= 1e-12 relative for q <= 3.4 (and <= 1e-10 at q = 4, docs/mathematics.md T3 C5); entire
/// activations (erf, GELU, sin) are at the 1e-15 floor.  Beyond that the cap (which bounds the cost
/// at 512² evaluations per dual) makes the result a looser approximation, still finite: about
/// 450 exp(−π sqrt(512 / q)) relative for tanh's E[φ'φ'].
inline int adaptive_quadrature_order(double q_max) {
  if (!(q_max > 0)) return 64;
  const double n = 64 + 130 * q_max;
  return n >= 512 ? 512 : static_cast<int>(std::ceil(n));
}

namespace detail {

/// Gauss–Hermite quadrature of the dual (the saturated form at large variances where the activation
/// has one); the covariance is already validated.
template <class Phi, class S>
Dual<S> quadrature_dual_unchecked(const Phi& phi, const Covariance2<S>& cov, const DualOptions& options) {
  if constexpr (has_saturation_v<Phi>) {
    if (options.quadrature_order <= 0 && static_cast<double>(std::max(cov.s11, cov.s22)) > saturating_threshold)
      return saturating_dual(phi, cov.s11, cov.s12, cov.s22);
  }
  const int order = options.quadrature_order > 0
                        ? options.quadrature_order
                        : adaptive_quadrature_order(static_cast<double>(std::max(cov.s11, cov.s22)));
  return quadrature_dual(phi, cov, gauss_hermite<S>(order));
}

/// The closed form if the activation has one, else quadrature; the covariance is already validated.
template <class Phi, class S>
Dual<S> dual_unchecked(const Phi& phi, const Covariance2<S>& cov, const DualOptions& options) {
  if constexpr (has_closed_form_dual_v<Phi, S>) {
    (void)options;
    return phi.dual(cov.s11, cov.s12, cov.s22);
  } else {
    return quadrature_dual_unchecked(phi, cov, options);
  }
}

}  // namespace detail

/// (L^φ, L^φ') of the covariance [[s11, s12], [s12, s22]]: exact from the activation's closed form
/// when it has one, else Gauss–Hermite quadrature (approximate).  To check a closed form against
/// quadrature, pass ntk::Quadrature<Phi>{phi}: only code that names that type compiles quadrature
/// for a closed-form activation.
/// Throws std::invalid_argument for negative variances, s12^2 > s11 s22 (1 + 1e-12) or a bad
/// order, std::domain_error for non-finite arguments, std::overflow_error when the expectation
/// itself exceeds the scalar type (e.g. a cubic φ at variance 1e140).  Within the tolerance the correlation is
/// clamped into [-1, 1].
template <class Phi, class Scalar>
Dual<Scalar> dual(const Phi& phi, Scalar s11, Scalar s12, Scalar s22, const DualOptions& options = {}) {
  static_assert(detail::check_activation_contract<Phi, Scalar>(),
                "ntk::dual: the activation does not meet the contract (see the message above)");
  options.check("dual");
  detail::check_activation_parameters("dual", phi);
  const Dual<Scalar> d = detail::dual_unchecked(phi, detail::checked_covariance("dual", s11, s12, s22), options);
  if (!std::isfinite(d.t) || !std::isfinite(d.t_dot))
    detail::fail<std::overflow_error>("dual", "the expectation is out of the scalar type's range (got ", d.t, ", ",
                                      d.t_dot, " at variances ", s11, ", ", s22, ")");
  return d;
}

}  // namespace ntk
