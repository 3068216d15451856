#pragma once
/// \file detail/layer_dual.hpp
/// The dual of one activation layer as the kernel engine evaluates it, a tile of entries at a time.
/// Not public API; see kernel.hpp.
///
/// The mode is chosen once per layer, from the activation and the variances the layer sees:
///  - closed: the activation's own closed form (exact); positively homogeneous activations such as
///    ReLU give unit_dual(ρ) scaled by sqrt(q q'), one square root per entry;
///  - table: every input of the layer has the same variance (inputs of a common norm): the dual is
///    tabulated once as a piecewise Chebyshev series in the correlation (16 panels of degree 16,
///    error <= 1e-12 for tanh; detail/dual_table.hpp);
///  - series: variances differ and the order is adaptive: the Mehler series Σ_k a_k(q) a_k(q') ρ^k
///    with per-point Hermite coefficients (detail/hermite_series.hpp), cut where every point's tail
///    is below DualOptions::series_tolerance (default 1e-12) of its E[φ²] and E[φ'²]; the per-entry
///    truncation error is then at most that fraction of sqrt(T(x, x) T(x', x')).  About 100·q
///    terms for tanh at variance q; extra memory O((n1 + n2) K L).  For a saturating φ (tanh,
///    sigmoid) points beyond saturating_threshold are left out of the series and their entries
///    take the per-entry saturating rule, so a few far points cost their rows only;
///  - quadrature: an explicit quadrature order, or a series that does not converge within rules of
///    1024 nodes (kinked activations wrapped in ntk::Quadrature, huge variances): a product rule per
///    entry (q² evaluations per entry: slow, for checking).
/// A batch-only activation (a Python callable) never takes the quadrature mode with the adaptive
/// order: its series may use rules up to batch_series_order nodes, its table must match its series,
/// and a series that does not converge is std::invalid_argument (see series_table).

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <utility>
#include <vector>

#include "../activations.hpp"
#include "../dual.hpp"
#include "../quadrature.hpp"
#include "batch_values.hpp"
#include "config.hpp"
#include "dual_table.hpp"
#include "hermite_series.hpp"
#include "quadrature_dual.hpp"
#include "saturating.hpp"

namespace ntk {
namespace detail {

/// The largest Gauss–Hermite rule of a batch-only activation's Hermite series (built-in activations
/// stop at 1024 nodes and fall back to per-entry rules): tanh converges to the default
/// series_tolerance up to variances of about 17.9 for tanh (see prepare_series).
inline constexpr int batch_series_order = max_quadrature_order;

/// Variances of a tile of rows i (arrays) against one column j, with their square roots.
template <class Scalar>
struct TileVariances {
  Eigen::Index i0, j;  // the tile's first row and its column
  const Scalar *q_i, *root_i, *inverse_root_i;
  Scalar q_j, root_j, inverse_root_j;
};

/// The dual of one activation layer, prepared for the variances that layer will see.
template <class Phi, class Scalar>
class LayerDual {
 public:
  LayerDual() = default;
  LayerDual(const Phi& phi, const DualOptions& options, Scalar q_min, Scalar q_max) : m_phi(&phi) {
    if constexpr (closed_form) {
      (void)options;
      (void)q_min;
      (void)q_max;
    } else {
      setup_quadrature(options, q_min, q_max);
    }
  }

  /// Variances differ and the order is adaptive: switch to the Hermite series when it converges
  /// for the variances of the rows and (when they are other points) of the columns.
  /// A batch-only activation (is_batch_only: a Python callable) must not end in per-entry
  /// quadrature: std::invalid_argument instead.
  void prepare_series(const DualOptions& options, VarianceSet<Scalar> rows, VarianceSet<Scalar> columns) {
    if constexpr (!closed_form) {
      if (m_mode == Mode::quadrature && options.quadrature_order == 0) {
        // A saturating φ: points beyond saturating_threshold get their entries from the per-entry
        // rule (generic_tile), so the series is built for the others only; the far points stand in
        // with the smallest variance seen (cheap coefficients, never used).  One far point then
        // costs its own row and column of per-entry work, not a per-entry Gram.
        std::vector<Scalar> near[2];
        if constexpr (saturating) {
          Scalar floor = std::numeric_limits<Scalar>::max();
          for (const VarianceSet<Scalar>& set : {rows, columns})
            for (std::size_t p = 0; set.q != nullptr && p < set.count; ++p)
              if (static_cast<double>(set.q[p]) <= saturating_threshold) floor = std::min(floor, set.q[p]);
          if (floor != std::numeric_limits<Scalar>::max()) {
            VarianceSet<Scalar>* sets[2] = {&rows, &columns};
            for (int k = 0; k < 2; ++k) {
              if (sets[k]->q == nullptr) continue;
              near[k].assign(sets[k]->q, sets[k]->q + sets[k]->count);
              for (Scalar& q : near[k])
                if (static_cast<double>(q) > saturating_threshold) {
                  q = floor;
                  m_far_points = true;
                }
              sets[k]->q = near[k].data();
            }
          }
        }
        std::vector<VarianceSet<Scalar>> sets{rows};
        if (columns.q != nullptr) sets.push_back(columns);
        std::vector<HermiteSeries<Scalar>> series;
        if (m_common.converged) {  // a batch-only table that failed its check: its series, per point
          for (const VarianceSet<Scalar>& set : sets) series.push_back(replicate(m_common, set.count));
          m_common = HermiteSeries<Scalar>{};
        } else {
          series =
              hermite_series(*m_phi, sets, options.series_tolerance, is_batch_only_v<Phi> ? batch_series_order : 1024);
        }
        if (series[0].converged) {
          m_series_order = series[0].order;
          m_series[0] = std::move(series[0]);
          if (series.size() > 1) m_series[1] = std::move(series[1]);
          m_mode = Mode::series;
        } else {
          m_far_points = false;
        }
      }
      if constexpr (is_batch_only_v<Phi>)
        if (m_mode == Mode::quadrature)
          fail<std::invalid_argument>(
              "kernel",
              "this activation is evaluated in batches only (a Python callable) and a layer would need "
              "a product quadrature per kernel entry: ",
              options.quadrature_order > 0
                  ? "an explicit quadrature order with inputs of different norms; use the adaptive order"
                  : "its Hermite series does not converge to the series tolerance within 4096 nodes at these "
                    "variances (up to ",
              max_variance(rows, columns),
              "): a kinked activation such as ReLU (use the built-in name), or a smooth one at variances beyond "
              "about 17.9 for tanh (reduce sigma_w, sigma_b or the input norms)");
    } else {
      (void)options;
      (void)rows;
      (void)columns;
    }
  }

  bool uses_series() const { return m_mode == Mode::series; }

  /// (E[φ(√q Z)²], E[φ'(√q Z)²]): the closed form when there is one, else a 1-D rule of the
  /// adaptive order (a batch-only activation: at least the order its series or table came from,
  /// which resolves φ(√q z) where the adaptive order, capped at 512, would not).
  Dual<Scalar> diagonal(Scalar q) const {
    if constexpr (closed_form) {
      return m_phi->dual(q, q, q);
    } else {
      if constexpr (saturating)
        if (m_adaptive && static_cast<double>(q) > saturating_threshold) return saturating_dual(*m_phi, q, q, q);
      const auto& rule = gauss_hermite<Scalar>(diagonal_order(q));
      const Scalar sd = std::sqrt(q);
      Scalar t = 0, t_dot = 0;
      for (int i = 0; i < rule.order(); ++i) {
        Scalar v, d;
        value_and_derivative(*m_phi, sd * rule.nodes()[static_cast<std::size_t>(i)], v, d);
        t += rule.weights()[static_cast<std::size_t>(i)] * v * v;
        t_dot += rule.weights()[static_cast<std::size_t>(i)] * d * d;
      }
      return {t, t_dot};
    }
  }

  /// diagonal(q[p]) for p < count into out; a batch activation is evaluated on the nodes of all
  /// distinct variances in a few calls (same arithmetic per variance).
  void diagonals(const Scalar* q, std::size_t count, Dual<Scalar>* out) const {
    if constexpr (closed_form || !has_batch_values_v<Phi, Scalar>) {
      for (std::size_t p = 0; p < count; ++p) out[p] = diagonal(q[p]);
    } else {
      std::vector<Scalar> distinct(q, q + count);
      std::sort(distinct.begin(), distinct.end());
      distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
      std::vector<Dual<Scalar>> values(distinct.size());
      std::vector<Scalar> z, v, dv;
      for (std::size_t first = 0; first < distinct.size();) {
        std::size_t last = first;
        z.clear();
        while (last < distinct.size()) {
          const auto& rule = gauss_hermite<Scalar>(diagonal_order(distinct[last]));
          if (last > first && z.size() + rule.nodes().size() > batch_points) break;
          const Scalar sd = std::sqrt(distinct[last++]);
          for (const Scalar node : rule.nodes()) z.push_back(sd * node);
        }
        v.resize(z.size());
        dv.resize(z.size());
        values_and_derivatives(*m_phi, z.data(), v.data(), dv.data(), z.size());
        for (std::size_t c = first, offset = 0; c < last; ++c) {
          const auto& rule = gauss_hermite<Scalar>(diagonal_order(distinct[c]));
          Scalar t = 0, t_dot = 0;
          for (std::size_t i = 0; i < rule.nodes().size(); ++i, ++offset) {
            t += rule.weights()[i] * v[offset] * v[offset];
            t_dot += rule.weights()[i] * dv[offset] * dv[offset];
          }
          values[c] = {t, t_dot};
        }
        first = last;
      }
      for (std::size_t p = 0; p < count; ++p)
        out[p] = values[static_cast<std::size_t>(std::lower_bound(distinct.begin(), distinct.end(), q[p]) -
                                                 distinct.begin())];
    }
  }

  /// The activation step for a tile of entries: s[t] <- L^φ, k[t] *= L^φ', t_dot[t] <- L^φ' at
  /// [[qi[t], s[t]], [s[t], qj]].  Closed forms and the generic modes are separate compile-time
  /// paths (a closed-form activation never instantiates quadrature; ntk::Quadrature<Phi> forces
  /// it), so the closed-form loop has no calls and can be vectorized.
  template <int T>
  void cross_tile(const TileVariances<Scalar>& v, Scalar* s, Scalar* k, Scalar* t_dot) const {
    if constexpr (closed_form) {
      const Phi phi = *m_phi;
      for (int t = 0; t < T; ++t) {
        Dual<Scalar> d;
        if constexpr (has_unit_dual_v<Phi, Scalar>) {
          // ρ = (c / √qi) / √qj: no overflow or underflow since |c| <= √qi √qj.
          d = phi.unit_dual(s[t] * v.inverse_root_i[t] * v.inverse_root_j);
          d.t = d.t * v.root_i[t] * v.root_j;
        } else {
          d = phi.dual(v.q_i[t], s[t], v.q_j);
        }
        s[t] = d.t;
        k[t] *= d.t_dot;
        t_dot[t] = d.t_dot;
      }
    } else {
      generic_tile<T>(v, s, k, t_dot);
    }
  }

 private:
  static constexpr bool closed_form = has_closed_form_dual_v<Phi, Scalar>;
  static constexpr bool saturating = has_saturation_v<Phi>;

  void setup_quadrature(const DualOptions& options, Scalar q_min, Scalar q_max) {
    const int order =
        options.quadrature_order > 0 ? options.quadrature_order : adaptive_quadrature_order(static_cast<double>(q_max));
    m_rule = &gauss_hermite<Scalar>(order);
    m_mode = Mode::quadrature;
    m_adaptive = options.quadrature_order <= 0;
    // A saturating φ beyond saturating_threshold is evaluated per entry by its own rule (a table in
    // ρ would not resolve the asin-like corners at ρ = ±1 of width 1/q).
    const bool beyond = saturating && m_adaptive && static_cast<double>(q_max) > saturating_threshold;
    if (!beyond && q_max > 0 && q_max - q_min <= Scalar(1e-13) * q_max) {
      m_mode = Mode::table;
      const Scalar q = (q_min + q_max) / 2;
      if constexpr (has_batch_values_v<Phi, Scalar>) {
        if (is_batch_only_v<Phi> && m_adaptive) {
          if (!series_table(options, q)) m_mode = Mode::quadrature;  // prepare_series builds the series
        } else {
          m_table = batch_table(q);
        }
      } else {
        m_table = DualTable<Scalar>([&](Scalar rho) {
          return quadrature_dual(*m_phi, Covariance2<Scalar>{q, rho * q, q}, *m_rule);
        });
      }
    }
  }

  /// The table at variance q for a batch activation with an explicit order (or one that is not
  /// batch-only): the product rule of the quadrature mode at every sample, evaluated in calls of
  /// batch_points nodes.
  DualTable<Scalar> batch_table(Scalar q) const {
    const std::vector<Scalar> rho = DualTable<Scalar>::sample_points();
    std::vector<Covariance2<Scalar>> cov;
    for (const Scalar r : rho) cov.push_back({q, r * q, q});
    std::vector<Dual<Scalar>> values(rho.size());
    quadrature_duals(*m_phi, cov.data(), cov.size(), *m_rule, values.data());
    return DualTable<Scalar>(values);
  }

  /// The table at variance q for a batch-only activation with the adaptive order: it samples the
  /// Mehler series Σ_k a_k(q)² ρ^k (and Σ_k b_k(q)² ρ^k) of hermite_series (φ and φ' at up to
  /// batch_series_order nodes in one call; truncation error at most series_tolerance T(q, q)).
  /// Product quadrature is never used here: at a kink it converges only algebraically (a Python
  /// ReLU came out 2e-2 off), so a series that does not converge is std::invalid_argument.
  /// The table is then checked against the series on a grid of 1025 correlations (±1 included);
  /// where it misses by more than series_tolerance of T(q, q) (or of E[φ'²]) — large variances,
  /// whose duals have corners of width ~1/q at ρ = ±1 — false is returned and the layer uses the
  /// series per entry (no further calls of φ).
  bool series_table(const DualOptions& options, Scalar q) {
    std::vector<HermiteSeries<Scalar>> series =
        hermite_series(*m_phi, std::vector<VarianceSet<Scalar>>{{&q, 1}}, options.series_tolerance, batch_series_order);
    if (!series[0].converged)
      fail<std::invalid_argument>(
          "kernel",
          "this activation is evaluated in batches only (a Python callable) and its Hermite series does "
          "not converge to the series tolerance within 4096 nodes at variance ",
          q,
          ": a kinked activation such "
          "as ReLU (use the built-in name, or pass an explicit quadrature order to accept product quadrature, "
          "whose error at a kink is of order 1e-2), or a smooth one at a variance beyond about 17.9 for tanh (reduce "
          "sigma_w, sigma_b or the input norm)");
    const HermiteSeries<Scalar>& s = series[0];
    m_series_order = s.order;
    const auto evaluate = [&s](Scalar rho) {
      Scalar t = 0, t_dot = 0;
      for (int k = s.terms - 1; k >= 0; --k) t = t * rho + s.a_at(0, k) * s.a_at(0, k);
      for (int k = s.terms_dot - 1; k >= 0; --k) t_dot = t_dot * rho + s.b_at(0, k) * s.b_at(0, k);
      return Dual<Scalar>{t, t_dot};
    };
    m_table = DualTable<Scalar>(evaluate);
    const Dual<Scalar> top = evaluate(Scalar(1));
    constexpr int checks = 1024;
    for (int i = 0; i <= checks; ++i) {
      const Scalar rho = std::min(Scalar(1), Scalar(-1) + Scalar(2) * static_cast<Scalar>(i) / Scalar(checks));
      const Dual<Scalar> exact = evaluate(rho), table = m_table(rho);
      if (!(std::abs(table.t - exact.t) <= static_cast<Scalar>(options.series_tolerance) * top.t &&
            std::abs(table.t_dot - exact.t_dot) <= static_cast<Scalar>(options.series_tolerance) * top.t_dot)) {
        m_common = std::move(series[0]);  // prepare_series spreads it over the points
        return false;
      }
    }
    return true;
  }

  /// The series of one variance as the series of `count` points of that variance.
  static HermiteSeries<Scalar> replicate(const HermiteSeries<Scalar>& one, std::size_t count) {
    constexpr std::size_t lanes = HermiteSeries<Scalar>::lanes;
    HermiteSeries<Scalar> s;
    s.terms = one.terms;
    s.terms_dot = one.terms_dot;
    s.converged = true;
    s.order = one.order;
    const std::size_t padded = (count + lanes - 1) / lanes * lanes;
    s.a.assign(padded * static_cast<std::size_t>(s.terms), Scalar(0));
    s.b.assign(padded * static_cast<std::size_t>(s.terms_dot), Scalar(0));
    for (std::size_t p = 0; p < count; ++p) {
      for (int k = 0; k < s.terms; ++k) s.a[s.index(p, k, s.terms)] = one.a_at(0, k);
      for (int k = 0; k < s.terms_dot; ++k) s.b[s.index(p, k, s.terms_dot)] = one.b_at(0, k);
    }
    return s;
  }

  /// The 1-D rule order of the diagonal at variance q.
  int diagonal_order(Scalar q) const {
    const int order = adaptive_quadrature_order(static_cast<double>(q));
    if constexpr (is_batch_only_v<Phi>) return std::max(order, m_series_order);
    return order;
  }

  static Scalar max_variance(VarianceSet<Scalar> rows, VarianceSet<Scalar> columns) {
    Scalar q = 0;
    for (const VarianceSet<Scalar>& set : {rows, columns})
      for (std::size_t p = 0; set.q != nullptr && p < set.count; ++p) q = std::max(q, set.q[p]);
    return q;
  }

  /// The table, series and quadrature modes, kept out of line so the closed-form loop above
  /// stays small enough to inline into the layer loop (its tile then lives in registers).
  template <int T>
  NTK_NOINLINE void generic_tile(const TileVariances<Scalar>& v, Scalar* s, Scalar* k, Scalar* t_dot) const {
    if (m_mode == Mode::table) {  // one variance: the table in ρ, for the whole tile at once
      Scalar rho[std::size_t{T}], t_value[std::size_t{T}];
      for (int t = 0; t < T; ++t) rho[t] = s[t] * v.inverse_root_i[t] * v.inverse_root_j;
      m_table.template evaluate<T>(rho, t_value, t_dot);
      for (int t = 0; t < T; ++t) {
        s[t] = t_value[t];
        k[t] *= t_dot[t];
      }
      return;
    }
    if (m_mode == Mode::series) {
      if constexpr (saturating) {
        if (m_far_points) {  // entries with a far point: the per-entry rule (see prepare_series)
          Scalar c[std::size_t{T}], k_in[std::size_t{T}];
          std::copy(s, s + T, c);
          std::copy(k, k + T, k_in);
          series_tile<T>(v, s, k, t_dot);
          for (int t = 0; t < T; ++t)
            if (static_cast<double>(std::max(v.q_i[t], v.q_j)) > saturating_threshold) {
              const Scalar limit = v.root_i[t] * v.root_j;
              const Dual<Scalar> d = saturating_dual(*m_phi, v.q_i[t], std::min(std::max(c[t], -limit), limit), v.q_j);
              s[t] = d.t;
              k[t] = k_in[t] * d.t_dot;
              t_dot[t] = d.t_dot;
            }
          return;
        }
      }
      series_tile<T>(v, s, k, t_dot);
      return;
    }
    for (int t = 0; t < T; ++t) {  // direct 2-D quadrature, entry by entry
      const Scalar limit = v.root_i[t] * v.root_j;
      const Scalar c = std::min(std::max(s[t], -limit), limit);
      Dual<Scalar> d;
      if constexpr (saturating) {
        if (m_adaptive && static_cast<double>(std::max(v.q_i[t], v.q_j)) > saturating_threshold)
          d = saturating_dual(*m_phi, v.q_i[t], c, v.q_j);
        else
          d = quadrature_dual(*m_phi, Covariance2<Scalar>{v.q_i[t], c, v.q_j}, *m_rule);
      } else {
        d = quadrature_dual(*m_phi, Covariance2<Scalar>{v.q_i[t], c, v.q_j}, *m_rule);
      }
      s[t] = d.t;
      k[t] *= d.t_dot;
      t_dot[t] = d.t_dot;
    }
  }

  /// Σ_k a_k(qi) a_k(qj) ρ^k by Horner for a tile.  Flattened: every Eigen call inlined, so the
  /// fixed-size accumulators stay in registers whatever the caller's inlining budget.
  template <int T>
  NTK_NOINLINE NTK_FLATTEN void series_tile(const TileVariances<Scalar>& v, Scalar* s, Scalar* k, Scalar* t_dot) const {
    static_assert(T == HermiteSeries<Scalar>::lanes, "a kernel tile is one group of the series");
    using Lanes = Eigen::Array<Scalar, T, 1>;  // fixed size: the accumulators stay in registers
    using Block = Eigen::Map<const Lanes>;
    const HermiteSeries<Scalar>& rows = m_series[0];
    const HermiteSeries<Scalar>& columns = m_series[1].converged ? m_series[1] : m_series[0];
    Lanes rho;
    for (int t = 0; t < T; ++t) {
      const Scalar r = s[t] * v.inverse_root_i[t] * v.inverse_root_j;
      rho[t] = r > 1 ? Scalar(1) : (r < -1 ? Scalar(-1) : r);  // NaN stays NaN
    }
    const Lanes rho2 = rho * rho;
    const std::size_t i0 = static_cast<std::size_t>(v.i0), j = static_cast<std::size_t>(v.j);
    const Scalar* a = rows.a_group(i0);
    const Scalar* b = rows.b_group(i0);
    // Even and odd degrees as two Horner chains in ρ², for L^φ and L^φ': four independent
    // chains per lane instead of one long dependent one.
    // The two series have their own lengths: the longer one's top degrees run alone first.
    Lanes t_even = Lanes::Zero(), t_odd = Lanes::Zero(), d_even = Lanes::Zero(), d_odd = Lanes::Zero();
    const auto step_t = [&](int d) {
      t_even = t_even * rho2 + Block(a + d * T) * columns.a_at(j, d);
      t_odd = t_odd * rho2 + Block(a + (d + 1) * T) * columns.a_at(j, d + 1);
    };
    const auto step_d = [&](int d) {
      d_even = d_even * rho2 + Block(b + d * T) * columns.b_at(j, d);
      d_odd = d_odd * rho2 + Block(b + (d + 1) * T) * columns.b_at(j, d + 1);
    };
    const int shared = std::min(rows.terms, rows.terms_dot);
    for (int d = rows.terms - 2; d >= shared; d -= 2) step_t(d);
    for (int d = rows.terms_dot - 2; d >= shared; d -= 2) step_d(d);
    for (int d = shared - 2; d >= 0; d -= 2) {
      step_t(d);
      step_d(d);
    }
    const Lanes t_value = t_even + rho * t_odd, t_dot_value = d_even + rho * d_odd;
    for (int t = 0; t < T; ++t) {
      s[t] = t_value[t];
      k[t] *= t_dot_value[t];
      t_dot[t] = t_dot_value[t];
    }
  }

  enum class Mode { closed, table, series, quadrature };
  const Phi* m_phi = nullptr;
  Mode m_mode = Mode::closed;
  bool m_adaptive = true;     // the quadrature order is adaptive (an explicit order is used as given)
  bool m_far_points = false;  // series mode with some variances beyond saturating_threshold
  int m_series_order = 0;     // the rule of a batch-only activation's series or table (0: none)
  const GaussHermiteRule<Scalar>* m_rule = nullptr;
  DualTable<Scalar> m_table;
  HermiteSeries<Scalar> m_series[2];  // rows' and (when different) columns' variances
  HermiteSeries<Scalar> m_common;     // batch-only, a common variance whose table failed its check
};

}  // namespace detail
}  // namespace ntk
