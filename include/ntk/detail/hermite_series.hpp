#pragma once
/// \file detail/hermite_series.hpp
/// The Mehler-series evaluation of a dual over many variances at once (the kernel engine's mode for
/// inputs of different norms).  Not public API; see kernel.hpp.

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <type_traits>
#include <vector>

#include "../dual.hpp"
#include "../quadrature.hpp"
#include "batch_values.hpp"
#include "quadrature_dual.hpp"

namespace ntk {
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
  int order = 0;                 // the Gauss–Hermite rule the coefficients came from (when converged)

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
/// A batch-only activation (a Python callable) is evaluated at the distinct variances only (inputs
/// of a common norm: one), so its cost in calls and points does not grow with repeated variances.
template <class Phi, class Scalar>
std::vector<HermiteSeries<Scalar>> hermite_series(const Phi& phi, const std::vector<VarianceSet<Scalar>>& sets,
                                                  double tolerance = 1e-12, int max_order = 1024) {
  using Work = std::conditional_t<(std::numeric_limits<Scalar>::digits < 53), double, Scalar>;
  using Matrix = Eigen::Matrix<Work, Eigen::Dynamic, Eigen::Dynamic>;
  std::vector<HermiteSeries<Scalar>> result(sets.size());
  std::vector<Work> q;  // all sets, one after the other (batch-only: the distinct values)
  for (const auto& set : sets) q.insert(q.end(), set.q, set.q + set.count);
  if (q.empty()) return result;
  std::vector<std::size_t> row_of;  // batch-only: the row of q holding each point's coefficients
  if constexpr (is_batch_only_v<Phi>) {
    const std::vector<Work> all = q;
    std::sort(q.begin(), q.end());
    q.erase(std::unique(q.begin(), q.end()), q.end());
    row_of.resize(all.size());
    for (std::size_t p = 0; p < all.size(); ++p)
      row_of[p] = static_cast<std::size_t>(std::lower_bound(q.begin(), q.end(), all[p]) - q.begin());
  }
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
        psi(i, k + 1) =
            (z * psi(i, k) - std::sqrt(static_cast<Work>(k)) * psi(i, k - 1)) / std::sqrt(static_cast<Work>(k + 1));
    }
    Matrix f(n, m), g(n, m);                        // √w_m φ(√q_p z_m), √w_m φ'(√q_p z_m)
    if constexpr (has_batch_values_v<Phi, Work>) {  // all n m nodes in a few calls
      const std::size_t nodes = static_cast<std::size_t>(m);
      evaluate_in_batches<Phi, Work>(
          phi, static_cast<std::size_t>(n) * nodes,
          [&](std::size_t first, std::size_t last, Work* z) {
            for (std::size_t k = first; k < last; ++k) z[k - first] = std::sqrt(q[k / nodes]) * rule.nodes()[k % nodes];
          },
          [&](std::size_t first, std::size_t last, const Work* v, const Work* d) {
            for (std::size_t k = first; k < last; ++k) {
              const auto p = static_cast<Eigen::Index>(k / nodes), i = static_cast<Eigen::Index>(k % nodes);
              f(p, i) = psi(i, 0) * v[k - first];
              g(p, i) = psi(i, 0) * d[k - first];
            }
          });
    } else {
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
      std::size_t point = 0;
      for (std::size_t s = 0; s < sets.size(); ++s) {
        HermiteSeries<Scalar>& series = result[s];
        constexpr std::size_t lanes = HermiteSeries<Scalar>::lanes;
        series.terms = terms;
        series.terms_dot = terms_dot;
        series.converged = true;
        series.order = order;
        const std::size_t padded = (sets[s].count + lanes - 1) / lanes * lanes;
        series.a.assign(padded * static_cast<std::size_t>(terms), Scalar(0));
        series.b.assign(padded * static_cast<std::size_t>(terms_dot), Scalar(0));
        for (std::size_t p = 0; p < sets[s].count; ++p, ++point) {
          const auto row = static_cast<Eigen::Index>(row_of.empty() ? point : row_of[point]);
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
}  // namespace detail
}  // namespace ntk
