#pragma once
/// \file quadrature.hpp
/// Gauss–Hermite rules for expectations under the standard normal N(0, 1), and the 1-D and 2-D
/// Gaussian expectations built on them.
///
/// Construction: Golub–Welsch (eigenvalues of the Jacobi matrix of the probabilists' Hermite
/// polynomials) gives starting nodes; each node is then polished by Newton's method on the
/// normalized three-term recurrence h_{k+1} = (z h_k - sqrt(k) h_{k-1}) / sqrt(k+1) in long double,
/// and its weight is the Christoffel number W_i = 1 / (n h_{n-1}(z_i)^2).  This keeps the weights
/// accurate in the relative sense far beyond order 40, where plain Golub–Welsch does not.
/// A rule of order n integrates polynomials of degree <= 2n - 1 exactly.

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "errors.hpp"

namespace ntk {

/// Largest supported quadrature order.
inline constexpr int max_quadrature_order = 4096;

/// A Gauss–Hermite rule for Z ~ N(0, 1): E[f(Z)] ≈ Σ_i weights()[i] f(nodes()[i]).
/// Nodes are sorted ascending and symmetric about 0; weights are positive and sum to 1.
template <class Scalar = double>
class GaussHermiteRule {
 public:
  /// Builds the rule of the given order (1 <= order <= max_quadrature_order).
  /// Throws std::invalid_argument for an order out of range.  Cost O(order^2).
  explicit GaussHermiteRule(int order) {
    if (order < 1 || order > max_quadrature_order)
      detail::fail<std::invalid_argument>("GaussHermiteRule", "order must be in [1, ", max_quadrature_order, "] (got ",
                                          order, ")");
    build(order);
  }

  int order() const { return static_cast<int>(m_nodes.size()); }
  const std::vector<Scalar>& nodes() const { return m_nodes; }
  const std::vector<Scalar>& weights() const { return m_weights; }

  /// E[f(Z)] for Z ~ N(0, 1).
  template <class F>
  Scalar expect(F&& f) const {
    Scalar sum = 0;
    for (std::size_t i = 0; i < m_nodes.size(); ++i) sum += m_weights[i] * f(m_nodes[i]);
    return sum;
  }

 private:
  void build(int n) {
    using Long = long double;
    std::vector<Long> x(static_cast<std::size_t>(n));
    if (n > 1) {  // Golub–Welsch starting values: eigenvalues of the Jacobi matrix.
      Eigen::VectorXd diagonal = Eigen::VectorXd::Zero(n);
      Eigen::VectorXd sub(n - 1);
      for (int k = 1; k < n; ++k) sub[k - 1] = std::sqrt(static_cast<double>(k));
      Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver;
      solver.computeFromTridiagonal(diagonal, sub, Eigen::EigenvaluesOnly);
      for (int i = 0; i < n; ++i) x[static_cast<std::size_t>(i)] = solver.eigenvalues()[i];
    }
    std::vector<Long> root(static_cast<std::size_t>(n + 1));
    for (int k = 0; k <= n; ++k) root[static_cast<std::size_t>(k)] = std::sqrt(static_cast<Long>(k));

    // Returns h_n(z) / h_{n-1}(z) and log|h_{n-1}(z)|, rescaling to avoid overflow.
    auto evaluate = [&](Long z, Long& ratio, Long& log_previous) {
      Long previous = 0, current = 1, log_scale = 0;
      for (int k = 0; k < n; ++k) {
        const Long next =
            (z * current - root[static_cast<std::size_t>(k)] * previous) / root[static_cast<std::size_t>(k + 1)];
        previous = current;
        current = next;
        if (std::fabs(current) > 1e150L) {
          current *= 1e-150L;
          previous *= 1e-150L;
          log_scale += std::log(1e150L);
        }
      }
      ratio = current / previous;
      log_previous = std::log(std::fabs(previous)) + log_scale;
    };

    std::vector<Long> w(static_cast<std::size_t>(n));
    Long total = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      Long ratio = 0, log_previous = 0;
      for (int iteration = 0; iteration < 20; ++iteration) {
        evaluate(x[i], ratio, log_previous);
        // h_n' = sqrt(n) h_{n-1}, so the Newton step is h_n / (sqrt(n) h_{n-1}).
        const Long step = ratio / root[static_cast<std::size_t>(n)];
        x[i] -= step;
        if (std::fabs(step) <= 4 * std::numeric_limits<Long>::epsilon() * (1 + std::fabs(x[i]))) break;
      }
      evaluate(x[i], ratio, log_previous);
      w[i] = std::exp(-std::log(static_cast<Long>(n)) - 2 * log_previous);
      total += w[i];
    }
    // Exact symmetry: z_{n-1-i} = -z_i, equal weights; the middle node of an odd rule is 0.
    for (std::size_t i = 0, j = x.size() - 1; i < j; ++i, --j) {
      const Long node = (x[j] - x[i]) / 2, weight = (w[i] + w[j]) / 2;
      x[i] = -node;
      x[j] = node;
      w[i] = w[j] = weight;
    }
    if (n % 2 == 1) x[static_cast<std::size_t>(n / 2)] = 0;
    m_nodes.resize(x.size());
    m_weights.resize(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      m_nodes[i] = static_cast<Scalar>(x[i]);
      m_weights[i] = static_cast<Scalar>(w[i] / total);
    }
  }

  std::vector<Scalar> m_nodes;
  std::vector<Scalar> m_weights;
};

/// The cached rule of the given order; built once per (Scalar, order), safe to call from many
/// threads.  The reference stays valid for the life of the program.
template <class Scalar = double>
const GaussHermiteRule<Scalar>& gauss_hermite(int order) {
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<const GaussHermiteRule<Scalar>>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = cache[order];
  if (!slot) {
    try {
      slot = std::make_unique<const GaussHermiteRule<Scalar>>(order);
    } catch (...) {
      cache.erase(order);
      throw;
    }
  }
  return *slot;
}

/// E[f(sqrt(variance) Z)] for Z ~ N(0, 1) by a Gauss–Hermite rule of the given order.
/// Throws std::invalid_argument for a negative variance or a bad order.
template <class Scalar, class F>
Scalar expect(F&& f, Scalar variance, int order) {
  detail::check_finite_scalar("expect", "variance", variance);
  detail::check_nonnegative("expect", "variance", variance);
  const auto& rule = gauss_hermite<Scalar>(order);
  const Scalar sd = std::sqrt(variance);
  return rule.expect([&](Scalar z) { return f(sd * z); });
}

namespace detail {

/// A validated 2x2 covariance [[s11, s12], [s12, s22]] with the correlation clamped into [-1, 1].
template <class Scalar>
struct Covariance2 {
  Scalar s11, s12, s22;
};

template <class Scalar>
Covariance2<Scalar> checked_covariance(const char* function, Scalar s11, Scalar s12, Scalar s22) {
  detail::check_finite_scalar(function, "s11", s11);
  detail::check_finite_scalar(function, "s12", s12);
  detail::check_finite_scalar(function, "s22", s22);
  if (s11 < 0 || s22 < 0)
    fail<std::invalid_argument>(function, "variances must be non-negative (got s11 = ", s11, ", s22 = ", s22, ")");
  const long double bound = static_cast<long double>(s11) * static_cast<long double>(s22);
  const long double s12sq = static_cast<long double>(s12) * static_cast<long double>(s12);
  if (s12sq > bound * (1 + 1e-12L))
    fail<std::invalid_argument>(function, "covariance is not positive semi-definite (got s12 = ", s12,
                                " with s11 * s22 = ", static_cast<double>(bound), ")");
  const Scalar limit = std::sqrt(s11) * std::sqrt(s22);
  return {s11, std::clamp(s12, -limit, limit), s22};
}

/// Σ_ij W_i W_j f(X_ij) g(Y_ij) with the Cholesky factor of a validated covariance.
template <class Scalar, class F, class G>
Scalar expect2_unchecked(F&& f, G&& g, const Covariance2<Scalar>& cov, const GaussHermiteRule<Scalar>& rule) {
  const auto& z = rule.nodes();
  const auto& w = rule.weights();
  const std::size_t n = z.size();
  if (cov.s11 == 0) {
    const Scalar sd = std::sqrt(cov.s22);
    return f(Scalar(0)) * rule.expect([&](Scalar t) { return g(sd * t); });
  }
  if (cov.s22 == 0) {
    const Scalar sd = std::sqrt(cov.s11);
    return g(Scalar(0)) * rule.expect([&](Scalar t) { return f(sd * t); });
  }
  // X = sqrt(s11) z1, Y = (s12 / sqrt(s11)) z1 + s z2 with s = sqrt((s11 s22 - s12^2) / s11).
  const Scalar root11 = std::sqrt(cov.s11);
  const Scalar slope = cov.s12 / root11;
  const Scalar residual = std::max(cov.s11 * cov.s22 - cov.s12 * cov.s12, Scalar(0));
  const Scalar s = std::sqrt(residual / cov.s11);
  Scalar sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const Scalar fx = f(root11 * z[i]);
    if (fx == 0) continue;
    const Scalar shift = slope * z[i];
    Scalar inner = 0;
    for (std::size_t j = 0; j < n; ++j) inner += w[j] * g(shift + s * z[j]);
    sum += w[i] * fx * inner;
  }
  return sum;
}

}  // namespace detail

/// E[f(X) g(Y)] for (X, Y) ~ N(0, [[s11, s12], [s12, s22]]) by a product Gauss–Hermite rule of
/// the given order per dimension (order^2 evaluations of g).  Degenerate covariances (s11 = 0,
/// s22 = 0, |s12| = sqrt(s11 s22)) are handled.  Throws std::invalid_argument for a negative
/// variance or s12^2 > s11 s22 (1 + 1e-12); within that tolerance the correlation is clamped to
/// [-1, 1].  Throws std::domain_error for non-finite arguments.
template <class Scalar, class F, class G>
Scalar expect2(F&& f, G&& g, Scalar s11, Scalar s12, Scalar s22, int order) {
  const auto cov = detail::checked_covariance("expect2", s11, s12, s22);
  return detail::expect2_unchecked(f, g, cov, gauss_hermite<Scalar>(order));
}

}  // namespace ntk
