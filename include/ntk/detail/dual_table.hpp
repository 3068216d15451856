#pragma once
/// \file detail/dual_table.hpp
/// A dual at one fixed variance, tabulated in the correlation (the kernel engine's mode for inputs
/// of a common norm, and the deep limit's for activations without a closed form).  Not public API.

#include <cmath>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "../activations.hpp"
#include "batch_values.hpp"

namespace ntk {
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

  /// The correlations the table samples (Chebyshev points of every panel), in the order the
  /// constructor from values expects.
  static std::vector<Scalar> sample_points() {
    const int m = degree + 1;
    const Scalar pi = pi_v<Scalar>;
    std::vector<Scalar> rho(static_cast<std::size_t>(panels * m));
    for (int index = 0; index < panels * m; ++index) {
      const int p = index / m, k = index % m;
      const Scalar x =
          std::cos(pi * (static_cast<Scalar>(k) + Scalar(0.5)) / static_cast<Scalar>(m));  // Chebyshev point on [-1, 1]
      const Scalar a = -1 + Scalar(2) * static_cast<Scalar>(p) / static_cast<Scalar>(panels),
                   b = -1 + Scalar(2) * static_cast<Scalar>(p + 1) / static_cast<Scalar>(panels);
      rho[static_cast<std::size_t>(index)] = (a + b) / 2 + (b - a) / 2 * x;
    }
    return rho;
  }

  /// Samples `f(rho) -> Dual<Scalar>` at sample_points() (in parallel with OpenMP; an exception
  /// from f is rethrown after the loop).
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, std::vector<Dual<Scalar>>>>>
  explicit DualTable(F&& f) {
    const std::vector<Scalar> rho = sample_points();
    std::vector<Dual<Scalar>> values(rho.size());
    ParallelExceptions errors;
    const int count = static_cast<int>(rho.size());
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic)
#endif
    for (int index = 0; index < count; ++index)
      errors.run([&] { values[static_cast<std::size_t>(index)] = f(rho[static_cast<std::size_t>(index)]); });
    errors.rethrow();
    fit(values);
  }

  /// The table of the dual values at sample_points() (computed by the caller, e.g. in one batch).
  explicit DualTable(const std::vector<Dual<Scalar>>& values) {
    fit(values);
  }

 private:
  void fit(const std::vector<Dual<Scalar>>& dual_values) {
    m_t.resize(panels * (degree + 1));
    m_t_dot.resize(panels * (degree + 1));
    const int m = degree + 1;
    const Scalar pi = pi_v<Scalar>;
    std::vector<Scalar> values(static_cast<std::size_t>(panels * m) * 2);
    for (std::size_t index = 0; index < dual_values.size(); ++index) {
      values[2 * index] = dual_values[index].t;
      values[2 * index + 1] = dual_values[index].t_dot;
    }
    for (int p = 0; p < panels; ++p)
      for (int j = 0; j < m; ++j) {
        Scalar ct = 0, cd = 0;
        for (int k = 0; k < m; ++k) {
          const Scalar basis =
              std::cos(pi * static_cast<Scalar>(j) * (static_cast<Scalar>(k) + Scalar(0.5)) / static_cast<Scalar>(m));
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
      previous[0] = 1;            // T_0
      if (m > 1) current[1] = 1;  // T_1
      for (int j = 0; j < m; ++j) {
        const std::vector<long double>& basis = j == 0 ? previous : current;  // T_j
        for (int k = 0; k < m; ++k) {
          t[static_cast<std::size_t>(k)] +=
              static_cast<long double>(m_t[static_cast<std::size_t>(p * m + j)]) * basis[static_cast<std::size_t>(k)];
          d[static_cast<std::size_t>(k)] += static_cast<long double>(m_t_dot[static_cast<std::size_t>(p * m + j)]) *
                                            basis[static_cast<std::size_t>(k)];
        }
        if (j == 0) continue;
        for (int k = 0; k < m; ++k)  // T_{j+1} = 2x T_j - T_{j-1}
          next[static_cast<std::size_t>(k)] =
              (k > 0 ? 2 * current[static_cast<std::size_t>(k - 1)] : 0) - previous[static_cast<std::size_t>(k)];
        previous = current;
        current = next;
      }
      for (int k = 0; k < m; ++k) {
        m_monomial[static_cast<std::size_t>(2 * (p * m + k))] = static_cast<Scalar>(t[static_cast<std::size_t>(k)]);
        m_monomial[static_cast<std::size_t>(2 * (p * m + k) + 1)] = static_cast<Scalar>(d[static_cast<std::size_t>(k)]);
      }
    }
  }

 public:
  /// The interpolated dual at ρ (clamped into [-1, 1]); NaN in, NaN out (an overflow upstream
  /// must reach the caller's finiteness check, not an out-of-range panel index).
  Dual<Scalar> operator()(Scalar rho) const {
    Dual<Scalar> d;
    evaluate<1>(&rho, &d.t, &d.t_dot);
    return d;
  }

  /// The same for T correlations at once: the Horner loops of independent entries
  /// interleave (and vectorize), where one entry alone is a chain of dependent steps.
  template <int T>
  void evaluate(const Scalar* rho, Scalar* t_out, Scalar* t_dot_out) const {
    constexpr int m = degree + 1;
    const Scalar* poly[std::size_t{T}];
    Scalar x[std::size_t{T}], t[std::size_t{T}], d[std::size_t{T}];
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
