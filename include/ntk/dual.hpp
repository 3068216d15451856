#pragma once
/// \file dual.hpp
/// The 2-D Gaussian expectations L^φ and L^φ' of a 2x2 covariance (lecture eq. 16):
///   t     = E[φ(u) φ(v)],   t_dot = E[φ'(u) φ'(v)],   (u, v) ~ N(0, [[s11, s12], [s12, s22]]).
/// From the activation's closed form where it has one (exact), else by a product Gauss–Hermite
/// rule (an approximation; see adaptive_quadrature_order for its error).

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
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
  /// Kernels only (adaptive order, inputs of different norms): the Hermite series of the dual is
  /// cut where its tail is at most this fraction of E[φ²] (and of E[φ'²]) for every variance, which
  /// bounds an entry's truncation error by series_tolerance · sqrt(T(x, x) T(x', x')) per layer.
  /// Larger values cut the cost (fewer terms); see README's benchmark table.
  double series_tolerance = 1e-12;

  /// Throws std::invalid_argument for a negative order or one above max_quadrature_order, or a
  /// series tolerance outside (0, 1).
  void check(const char* function) const {
    if (quadrature_order < 0 || quadrature_order > max_quadrature_order)
      detail::fail<std::invalid_argument>(function, "quadrature order must be in [1, ",
                                          max_quadrature_order, "], or 0 for adaptive (got ",
                                          quadrature_order, ")");
    if (!(series_tolerance > 0 && series_tolerance < 1))
      detail::fail<std::invalid_argument>(function, "series_tolerance must be in (0, 1) (got ",
                                          series_tolerance, ")");
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

/// The Mehler (Hermite) expansion of an activation's dual over a set of variances q_p:
///   E[φ(√q1 U) φ(√q2 V)] = Σ_k a_k(q1) a_k(q2) ρ^k,  E[φ'(√q1 U) φ'(√q2 V)] = Σ_k b_k(q1) b_k(q2) ρ^k
/// for standard normals of correlation ρ, where a_k(q) = E[φ(√q Z) h_k(Z)], b_k(q) = E[φ'(√q Z) h_k(Z)]
/// and h_k are the orthonormal (probabilists') Hermite polynomials.  Each series is cut after the
/// first K with Σ_{k>K} a_k(q_p)² <= tolerance E[φ(√q_p Z)²] for every p, so by Cauchy–Schwarz the
/// truncation error of an entry is at most tolerance sqrt(T(q1, q1) T(q2, q2)) (likewise for b).
/// Coefficients come from an M-node Gauss–Hermite rule with M >= 2K (aliasing then involves only
/// coefficients beyond 3K), as one matrix product: [√w_m φ(√q_p z_m)] times the orthonormal
/// functions √w_m h_k(z_m), which stay bounded where h_k alone would overflow.
template <class Scalar>
struct HermiteSeries {
  /// Storage groups `lanes` consecutive variances: a block holds their coefficients degree by
  /// degree, so one group's series is contiguous (a kernel tile walks it without TLB misses).
  static constexpr std::size_t lanes = 16;
  int terms = 0, terms_dot = 0;  // K + 1 for a and for b, even, the same for every set
  std::vector<Scalar> a, b;      // a[(p / lanes * terms + k) * lanes + p % lanes], b likewise
  bool converged = false;        // false: no K within the largest rule met the tolerance

  /// a_k(q_p) and b_k(q_p).
  Scalar a_at(std::size_t p, int k) const { return a[index(p, k, terms)]; }
  Scalar b_at(std::size_t p, int k) const { return b[index(p, k, terms_dot)]; }
  /// The block of the group starting at p (a multiple of lanes): element (k, t) at [k * lanes + t].
  const Scalar* a_group(std::size_t p) const { return a.data() + index(p, 0, terms); }
  const Scalar* b_group(std::size_t p) const { return b.data() + index(p, 0, terms_dot); }
  static std::size_t index(std::size_t p, int k, int count) {
    return (p / lanes * static_cast<std::size_t>(count) + static_cast<std::size_t>(k)) * lanes + p % lanes;
  }
};

/// A set of variances q[0, count).
template <class Scalar>
struct VarianceSet {
  const Scalar* q;
  std::size_t count;
};

/// Builds the truncated series for each set of variances, with one number of terms for all (so
/// entries between two sets pair up degree by degree).  Rules from twice the adaptive order up to
/// max_order are tried.  Computed in double for float (long double stays long double).
template <class Phi, class Scalar>
std::vector<HermiteSeries<Scalar>> hermite_series(const Phi& phi, const std::vector<VarianceSet<Scalar>>& sets,
                                                  double tolerance = 1e-12, int max_order = 1024) {
  using Work = std::conditional_t<(std::numeric_limits<Scalar>::digits < 53), double, Scalar>;
  using Matrix = Eigen::Matrix<Work, Eigen::Dynamic, Eigen::Dynamic>;
  std::vector<HermiteSeries<Scalar>> result(sets.size());
  std::vector<Work> q;  // all sets, one after the other
  for (const auto& set : sets) q.insert(q.end(), set.q, set.q + set.count);
  if (q.empty()) return result;
  const Eigen::Index n = static_cast<Eigen::Index>(q.size());
  const double q_max = static_cast<double>(*std::max_element(q.begin(), q.end()));
  // Orders rounded up to multiples of 64 so layers with similar variances share cached rules.
  for (int order = std::min((2 * adaptive_quadrature_order(q_max) + 63) / 64 * 64, max_order);;
       order = std::min(2 * order, max_order)) {
    const GaussHermiteRule<Work>& rule = gauss_hermite<Work>(order);
    const Eigen::Index m = order, degrees = order / 2 + 1;
    Matrix psi(m, degrees);  // √w_m h_k(z_m)
    for (Eigen::Index i = 0; i < m; ++i) {
      const Work z = rule.nodes()[static_cast<std::size_t>(i)];
      psi(i, 0) = std::sqrt(rule.weights()[static_cast<std::size_t>(i)]);
      if (degrees > 1) psi(i, 1) = z * psi(i, 0);
      for (Eigen::Index k = 1; k + 1 < degrees; ++k)
        psi(i, k + 1) = (z * psi(i, k) - std::sqrt(static_cast<Work>(k)) * psi(i, k - 1)) /
                        std::sqrt(static_cast<Work>(k + 1));
    }
    Matrix f(n, m), g(n, m);  // √w_m φ(√q_p z_m), √w_m φ'(√q_p z_m)
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
    for (Eigen::Index p = 0; p < n; ++p) {
      const Work root = std::sqrt(q[static_cast<std::size_t>(p)]);
      for (Eigen::Index i = 0; i < m; ++i) {
        Work v, d;
        value_and_derivative(phi, root * rule.nodes()[static_cast<std::size_t>(i)], v, d);
        f(p, i) = psi(i, 0) * v;
        g(p, i) = psi(i, 0) * d;
      }
    }
    const Matrix a = f * psi, b = g * psi;
    // The smallest K + 1 whose tail E[φ²] - Σ_{k<=K} a_k² is within tolerance for every variance.
    const auto cut = [&](const Matrix& c, const Matrix& values) {
      const Eigen::Array<Work, Eigen::Dynamic, 1> energy = values.rowwise().squaredNorm().array();
      Eigen::Array<Work, Eigen::Dynamic, 1> tail = energy;
      for (Eigen::Index k = 0; k < degrees; ++k) {
        tail -= c.col(k).array().square();
        if ((tail <= static_cast<Work>(tolerance) * energy).all()) return static_cast<int>(k + 1);
      }
      return 0;
    };
    const int terms_a = cut(a, f), terms_b = cut(b, g);
    if (terms_a > 0 && terms_b > 0 && a.allFinite() && b.allFinite()) {
      const int terms = (terms_a + 1) / 2 * 2, terms_dot = (terms_b + 1) / 2 * 2;  // even: Horner in pairs
      Eigen::Index row = 0;
      for (std::size_t s = 0; s < sets.size(); ++s) {
        HermiteSeries<Scalar>& series = result[s];
        constexpr std::size_t lanes = HermiteSeries<Scalar>::lanes;
        series.terms = terms;
        series.terms_dot = terms_dot;
        series.converged = true;
        const std::size_t padded = (sets[s].count + lanes - 1) / lanes * lanes;
        series.a.assign(padded * static_cast<std::size_t>(terms), Scalar(0));
        series.b.assign(padded * static_cast<std::size_t>(terms_dot), Scalar(0));
        for (std::size_t p = 0; p < sets[s].count; ++p, ++row) {
          for (int k = 0; k < terms && k < degrees; ++k)
            series.a[series.index(p, k, terms)] = static_cast<Scalar>(a(row, k));
          for (int k = 0; k < terms_dot && k < degrees; ++k)
            series.b[series.index(p, k, terms_dot)] = static_cast<Scalar>(b(row, k));
        }
      }
      return result;
    }
    if (order >= max_order) return result;
  }
}

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
    // Monomials in the panel coordinate for evaluation (one FMA per degree instead of Clenshaw's
    // three operations), converted in long double; T and Ṫ interleaved so a degree is one load.
    m_monomial.assign(static_cast<std::size_t>(panels * m * 2), Scalar(0));
    for (int p = 0; p < panels; ++p) {
      std::vector<long double> previous(static_cast<std::size_t>(m), 0), current(static_cast<std::size_t>(m), 0),
          next(static_cast<std::size_t>(m)), t(static_cast<std::size_t>(m), 0), d(static_cast<std::size_t>(m), 0);
      previous[0] = 1;              // T_0
      if (m > 1) current[1] = 1;    // T_1
      for (int j = 0; j < m; ++j) {
        const std::vector<long double>& basis = j == 0 ? previous : current;  // T_j
        for (int k = 0; k < m; ++k) {
          t[static_cast<std::size_t>(k)] += static_cast<long double>(m_t[static_cast<std::size_t>(p * m + j)]) * basis[static_cast<std::size_t>(k)];
          d[static_cast<std::size_t>(k)] += static_cast<long double>(m_t_dot[static_cast<std::size_t>(p * m + j)]) * basis[static_cast<std::size_t>(k)];
        }
        if (j == 0) continue;
        for (int k = 0; k < m; ++k)  // T_{j+1} = 2x T_j - T_{j-1}
          next[static_cast<std::size_t>(k)] = (k > 0 ? 2 * current[static_cast<std::size_t>(k - 1)] : 0) - previous[static_cast<std::size_t>(k)];
        previous = current;
        current = next;
      }
      for (int k = 0; k < m; ++k) {
        m_monomial[static_cast<std::size_t>(2 * (p * m + k))] = static_cast<Scalar>(t[static_cast<std::size_t>(k)]);
        m_monomial[static_cast<std::size_t>(2 * (p * m + k) + 1)] = static_cast<Scalar>(d[static_cast<std::size_t>(k)]);
      }
    }
  }

  /// The interpolated dual at ρ (clamped into [-1, 1]); NaN in, NaN out (an overflow upstream
  /// must reach the caller's finiteness check, not an out-of-range panel index).
  Dual<Scalar> operator()(Scalar rho) const {
    Dual<Scalar> d;
    evaluate<1>(&rho, &d.t, &d.t_dot);
    return d;
  }

  /// The same for T correlations at once: the Clenshaw recurrences of independent entries
  /// interleave (and vectorize), where one entry alone is a chain of dependent steps.
  template <int T>
  void evaluate(const Scalar* rho, Scalar* t_out, Scalar* t_dot_out) const {
    constexpr int m = degree + 1;
    const Scalar* poly[T];
    Scalar x[T], t[T], d[T];
    for (int i = 0; i < T; ++i) {
      const Scalar r = rho[i] > -1 ? (rho[i] < 1 ? rho[i] : Scalar(1)) : Scalar(-1);  // NaN -> -1
      int p = static_cast<int>((r + 1) * (static_cast<Scalar>(panels) / 2));
      p = p >= panels ? panels - 1 : p;
      x[i] = (r + 1) * static_cast<Scalar>(panels) - static_cast<Scalar>(2 * p + 1);  // in [-1, 1]
      poly[i] = m_monomial.data() + 2 * p * m;
      t[i] = poly[i][2 * degree];
      d[i] = poly[i][2 * degree + 1];
    }
    for (int j = degree - 1; j >= 0; --j)
      for (int i = 0; i < T; ++i) {
        t[i] = t[i] * x[i] + poly[i][2 * j];
        d[i] = d[i] * x[i] + poly[i][2 * j + 1];
      }
    for (int i = 0; i < T; ++i) {
      const bool nan = std::isnan(rho[i]);
      t_out[i] = nan ? rho[i] : t[i];
      t_dot_out[i] = nan ? rho[i] : d[i];
    }
  }

 private:
  std::vector<Scalar> m_t, m_t_dot;  // Chebyshev coefficients per panel
  std::vector<Scalar> m_monomial;    // the same as monomials, [panel][degree][t, t_dot]
};

}  // namespace detail
}  // namespace ntk
