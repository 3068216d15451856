#pragma once
/// \file kernel.hpp
/// Infinite-width NNGP Σ^L and NTK Θ^L Gram matrices (lecture eqs. 9–16; REFERENCE.md §1a):
///   Σ^1 = σ_w² xᵀx'/d + σ_b²,  Σ^{l+1} = σ_w² L^φ(Σ^l) + σ_b²,  Θ^1 = Σ^1,
///   Θ^{l+1} = Σ^{l+1} + σ_w² L^φ'(Σ^l) Θ^l.
/// Data matrices hold one sample per row (n x d).  The output for a k-output network is
/// Σ^L ⊗ I_k and Θ^L ⊗ I_k; these functions return the n1 x n2 factor.
///
/// Evaluation: the diagonal chains Σ^l(x, x) are computed first (O(n L)); then every entry runs the
/// whole depth recursion in registers (no n x n temporary per layer).  The symmetric case computes
/// one triangle.  Duals come from closed forms where the activation has one (exact; positively
/// homogeneous ones such as ReLU as sqrt(q q') times a function of the correlation, one square root
/// per entry); otherwise from Gauss–Hermite quadrature, in one of three ways per layer:
///  - every input of the layer has the same variance (inputs of a common norm): the dual is
///    tabulated once as a piecewise Chebyshev series in the correlation (16 panels of degree 16,
///    error <= 1e-12 for tanh);
///  - variances differ and the order is adaptive: the Mehler series Σ_k a_k(q) a_k(q') ρ^k with
///    per-point Hermite coefficients (detail::hermite_series), cut where every point's tail is below
///    DualOptions::series_tolerance (default 1e-12) of its E[φ²] and E[φ'²]; the per-entry
///    truncation error is then at most that fraction of sqrt(T(x, x) T(x', x')).  About 100·q terms
///    for tanh at variance q; extra memory O((n1 + n2) K L);
///  - an explicit quadrature order, or a series that does not converge within rules of 1024 nodes
///    (kinked activations under force_quadrature, huge variances): a product rule per entry
///    (q² evaluations per entry: slow, for checking).
/// With OpenMP the rows are shared among threads; every entry is computed by the same arithmetic
/// whatever the thread count, so results are identical.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "activations.hpp"
#include "dual.hpp"
#include "errors.hpp"
#include "layers.hpp"
#include "quadrature.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif
#include <cstdint>

namespace ntk {

/// Which Gram matrices to compute.
enum class KernelKind { nngp, ntk, both };

/// Options of the analytic kernels.
struct KernelOptions {
  DualOptions dual{};
  /// Σ^0 = xᵀx'/d (lecture eq. 12, Neural Tangents) when true; xᵀx' (the deep-limit setting of
  /// Radhakrishnan, Belkin & Uhler) when false.
  bool divide_by_dimension = true;
  /// Threads for OpenMP builds; 0 uses the OpenMP default.
  int threads = 0;

  void check(const char* function) const {
    dual.check(function);
    check_at_least(function, "threads", threads, 0);
  }
};

/// Gram matrices; a member is empty when its kind was not requested.
template <class Scalar>
struct Kernels {
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> nngp;
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> ntk;
};

/// Σ^l, Σ̇^l = σ_w² L^φ'(Σ^{l-1}) (0 for the first layer) and Θ^l after affine layer l.
template <class Scalar>
struct LayerKernels {
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> nngp, nngp_dot, ntk;
};

namespace detail {

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
  LayerDual(const Phi& phi, const DualOptions& options, Scalar q_min, Scalar q_max)
      : m_phi(&phi) {
    if constexpr (has_closed_form_dual_v<Phi, Scalar>) {
      if (!options.force_quadrature) {
        m_mode = Mode::closed;
        return;
      }
    }
    const int order = options.quadrature_order > 0
                          ? options.quadrature_order
                          : adaptive_quadrature_order(static_cast<double>(q_max));
    m_rule = &gauss_hermite<Scalar>(order);
    m_mode = Mode::quadrature;
    if (q_max > 0 && q_max - q_min <= Scalar(1e-13) * q_max) {
      m_mode = Mode::table;
      const Scalar q = (q_min + q_max) / 2;
      m_table = DualTable<Scalar>([&](Scalar rho) {
        return quadrature_dual(*m_phi, Covariance2<Scalar>{q, rho * q, q}, *m_rule);
      });
    }
  }

  /// Variances differ and the order is adaptive: switch to the Hermite series when it converges
  /// for the variances of the rows and (when they are other points) of the columns.
  void prepare_series(const DualOptions& options, VarianceSet<Scalar> rows, VarianceSet<Scalar> columns) {
    if (m_mode != Mode::quadrature || options.quadrature_order > 0) return;
    std::vector<VarianceSet<Scalar>> sets{rows};
    if (columns.q != nullptr) sets.push_back(columns);
    std::vector<HermiteSeries<Scalar>> series = hermite_series(*m_phi, sets, options.series_tolerance);
    if (!series[0].converged) return;
    m_series[0] = std::move(series[0]);
    if (series.size() > 1) m_series[1] = std::move(series[1]);
    m_mode = Mode::series;
  }

  bool uses_series() const { return m_mode == Mode::series; }

  /// The activation step for a tile of entries: s[t] <- L^φ, k[t] *= L^φ', t_dot[t] <- L^φ' at
  /// [[qi[t], s[t]], [s[t], qj]].  The mode is chosen once per tile so the closed-form loop has
  /// no calls and can be vectorized.
  template <int T>
  void cross_tile(const TileVariances<Scalar>& v, Scalar* s, Scalar* k, Scalar* t_dot) const {
    if constexpr (has_closed_form_dual_v<Phi, Scalar>) {
      if (m_mode == Mode::closed) {
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
        return;
      }
    }
    generic_tile<T>(v, s, k, t_dot);
  }

  /// The table, series and quadrature modes, kept out of line so the closed-form loop above
  /// stays small enough to inline into the layer loop (its tile then lives in registers).
  template <int T>
  NTK_NOINLINE void generic_tile(const TileVariances<Scalar>& v, Scalar* s, Scalar* k, Scalar* t_dot) const {
    if (m_mode == Mode::table) {  // one variance: the table in ρ, for the whole tile at once
      Scalar rho[T], t_value[T];
      for (int t = 0; t < T; ++t) rho[t] = s[t] * v.inverse_root_i[t] * v.inverse_root_j;
      m_table.template evaluate<T>(rho, t_value, t_dot);
      for (int t = 0; t < T; ++t) {
        s[t] = t_value[t];
        k[t] *= t_dot[t];
      }
      return;
    }
    if (m_mode == Mode::series) {
      series_tile<T>(v, s, k, t_dot);
      return;
    }
    for (int t = 0; t < T; ++t) {  // direct 2-D quadrature, entry by entry
      const Scalar limit = v.root_i[t] * v.root_j;
      const Scalar c = std::min(std::max(s[t], -limit), limit);
      const Dual<Scalar> d = quadrature_dual(*m_phi, Covariance2<Scalar>{v.q_i[t], c, v.q_j}, *m_rule);
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

  /// (E[φ(√q Z)²], E[φ'(√q Z)²]).
  Dual<Scalar> diagonal(Scalar q) const { return diagonal_dual(*m_phi, q, m_mode == Mode::closed); }

  /// Exact closed form when allowed, else a 1-D rule of the adaptive order.
  static Dual<Scalar> diagonal_dual(const Phi& phi, Scalar q, bool closed,
                                    int order = 0) {
    if constexpr (has_closed_form_dual_v<Phi, Scalar>) {
      if (closed) return phi.dual(q, q, q);
    }
    const auto& rule = gauss_hermite<Scalar>(
        order > 0 ? order : adaptive_quadrature_order(static_cast<double>(q)));
    const Scalar sd = std::sqrt(q);
    Scalar t = 0, t_dot = 0;
    for (int i = 0; i < rule.order(); ++i) {
      Scalar v, d;
      value_and_derivative(phi, sd * rule.nodes()[static_cast<std::size_t>(i)], v, d);
      t += rule.weights()[static_cast<std::size_t>(i)] * v * v;
      t_dot += rule.weights()[static_cast<std::size_t>(i)] * d * d;
    }
    return {t, t_dot};
  }

 private:
  enum class Mode { closed, table, series, quadrature };
  const Phi* m_phi = nullptr;
  Mode m_mode = Mode::closed;
  const GaussHermiteRule<Scalar>* m_rule = nullptr;
  DualTable<Scalar> m_table;
  HermiteSeries<Scalar> m_series[2];  // rows' and (when different) columns' variances
};

template <class Layer, class Scalar>
struct StepFor {
  using type = Dense;
};
template <class Phi, class Scalar>
struct StepFor<Activation<Phi>, Scalar> {
  using type = LayerDual<Phi, Scalar>;
};

/// Per-layer evaluation steps of an architecture: Dense stays Dense, Activation<Phi> becomes its
/// prepared LayerDual.  Serial keeps a tuple, Mlp a vector; both visit steps in layer order.
template <class Arch, class Scalar>
class Steps;

template <class Scalar, class... Layers>
class Steps<Serial<Layers...>, Scalar> {
 public:
  template <class Make>
  Steps(const Serial<Layers...>& arch, Make&& make) {
    build(arch, make, std::index_sequence_for<Layers...>{});
  }
  template <class F>
  void for_each(F&& f) const {
    visit(f, std::index_sequence_for<Layers...>{});
  }

 private:
  template <class Make, std::size_t... Ks>
  void build(const Serial<Layers...>& arch, Make& make, std::index_sequence<Ks...>) {
    ((std::get<Ks>(m_steps) = make(Ks, std::get<Ks>(arch.layers))), ...);
  }
  template <class F, std::size_t... Ks>
  void visit(F& f, std::index_sequence<Ks...>) const {
    (f(Ks, std::get<Ks>(m_steps)), ...);
  }
  std::tuple<typename StepFor<Layers, Scalar>::type...> m_steps;
};

template <class Phi, class Scalar>
class Steps<Mlp<Phi>, Scalar> {
 public:
  template <class Make>
  Steps(const Mlp<Phi>& arch, Make&& make) {
    for (std::size_t l = 0; l < arch.dense.size(); ++l) {
      m_dense.push_back(make(2 * l, arch.dense[l]));
      if (l + 1 < arch.dense.size()) m_duals.push_back(make(2 * l + 1, arch.act));
    }
  }
  template <class F>
  void for_each(F&& f) const {
    for (std::size_t l = 0; l < m_dense.size(); ++l) {
      f(2 * l, m_dense[l]);
      if (l < m_duals.size()) f(2 * l + 1, m_duals[l]);
    }
  }

 private:
  std::vector<Dense> m_dense;
  std::vector<LayerDual<Phi, Scalar>> m_duals;
};

/// Variances Σ^l(x, x) at the input of every layer: q[layer * stride + point], layer 0..layers
/// (the last is the output NNGP variance), with `tile` padding points (variance 1) after the real
/// ones so tiles of rows can be processed with a fixed trip count; ntk holds the output Θ(x, x).
template <class Scalar>
struct DiagonalChains {
  std::size_t layers = 0, points = 0, stride = 0;
  std::vector<Scalar> q;
  std::vector<Scalar> root, inverse_root;  // sqrt(q) and 1/sqrt(q) (0 where q = 0), same layout
  std::vector<Scalar> ntk;
  /// Fills root and inverse_root from the finished q.
  void finish() {
    root.resize(q.size());
    inverse_root.resize(q.size());
    for (std::size_t k = 0; k < q.size(); ++k) {
      root[k] = std::sqrt(q[k]);
      inverse_root[k] = q[k] > 0 ? 1 / root[k] : Scalar(0);
    }
  }
  Scalar value(std::size_t layer, Eigen::Index point) const {
    return q[layer * stride + static_cast<std::size_t>(point)];
  }
};

inline constexpr int kernel_tile = 16;

/// Sets up the steps and diagonal chains of an architecture for two sets of inputs.
template <class Arch, class Scalar>
class KernelEngine {
 public:
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

  template <class D1, class D2>
  KernelEngine(const Arch& arch, const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2,
               bool same_inputs, const KernelOptions& options)
      : m_options(options), m_layers(arch.size()) {
    const Scalar scale = options.divide_by_dimension ? Scalar(1) / static_cast<Scalar>(x1.cols())
                                                     : Scalar(1);
    m_chain1 = start_chain(x1, scale);
    if (!same_inputs) m_chain2 = start_chain(x2, scale);
    std::vector<DiagonalChains<Scalar>*> chains{&m_chain1};
    if (!same_inputs) chains.push_back(&m_chain2);
    // Walk the layers once, in order: propagate the diagonal chains and prepare each activation's
    // dual for the range of variances it sees.
    m_steps = std::make_unique<Steps<Arch, Scalar>>(arch, [&](std::size_t l, const auto& layer) {
      using Layer = std::decay_t<decltype(layer)>;
      if constexpr (std::is_same_v<Layer, Dense>) {
        const Scalar w2 = static_cast<Scalar>(layer.sigma_w * layer.sigma_w);
        const Scalar b2 = static_cast<Scalar>(layer.sigma_b * layer.sigma_b);
        for (auto* chain : chains)
          for (std::size_t p = 0; p < chain->points; ++p) {
            Scalar& next = chain->q[(l + 1) * chain->stride + p];
            next = w2 * chain->q[l * chain->stride + p] + b2;
            chain->ntk[p] = next + w2 * chain->ntk[p];
          }
        return layer;
      } else {
        Scalar lo = std::numeric_limits<Scalar>::max(), hi = 0;
        for (auto* chain : chains)
          for (std::size_t p = 0; p < chain->points; ++p) {
            lo = std::min(lo, chain->q[l * chain->stride + p]);
            hi = std::max(hi, chain->q[l * chain->stride + p]);
          }
        LayerDual<decltype(layer.phi), Scalar> step(layer.phi, options.dual, lo, hi);
        // Real points only: the padding rows of a tile read zero coefficients (results discarded).
        step.prepare_series(options.dual, {m_chain1.q.data() + l * m_chain1.stride, m_chain1.points},
                            {same_inputs ? nullptr : m_chain2.q.data() + l * m_chain2.stride,
                             m_chain2.points});
        m_uses_series = m_uses_series || step.uses_series();
        for (auto* chain : chains)
          for (std::size_t p = 0; p < chain->points; ++p) {
            const Dual<Scalar> d = step.diagonal(chain->q[l * chain->stride + p]);
            chain->q[(l + 1) * chain->stride + p] = d.t;
            chain->ntk[p] *= d.t_dot;
          }
        return step;
      }
    });
    for (auto* chain : chains) chain->finish();
  }

  /// Whether some activation layer evaluates its dual by Hermite series.
  bool uses_series() const { return m_uses_series; }

  const DiagonalChains<Scalar>& chain1() const { return m_chain1; }
  const DiagonalChains<Scalar>& chain2() const { return m_chain2.q.empty() ? m_chain1 : m_chain2; }
  const Steps<Arch, Scalar>& steps() const { return *m_steps; }

  /// The depth recursion for the pairs (i0 + t, j), t < kernel_tile, starting from the scaled
  /// inner products start[t]; rows past the block's end are padding and their results are
  /// discarded.  `record(l, t, s, s_dot, k)` is called after every affine layer.  The fixed trip
  /// count over t lets the compiler interleave (and vectorize) independent entries.
  template <class Record>
  void entries(const Scalar* start, Eigen::Index i0, Eigen::Index j, Scalar* nngp, Scalar* ntk,
               Record&& record) const {
    constexpr int T = kernel_tile;
    const DiagonalChains<Scalar>& c1 = chain1();
    const DiagonalChains<Scalar>& c2 = chain2();
    Scalar s[T], k[T], t_dot[T];
    for (int t = 0; t < T; ++t) {
      s[t] = start[t];
      k[t] = 0;
      t_dot[t] = 0;
    }
    m_steps->for_each([&](std::size_t l, const auto& step) {
      if constexpr (std::is_same_v<std::decay_t<decltype(step)>, Dense>) {
        const Scalar w2 = static_cast<Scalar>(step.sigma_w * step.sigma_w);
        const Scalar b2 = static_cast<Scalar>(step.sigma_b * step.sigma_b);
        for (int t = 0; t < T; ++t) {
          s[t] = w2 * s[t] + b2;
          k[t] = s[t] + w2 * k[t];
          record(l, t, s[t], w2 * t_dot[t], k[t]);
        }
      } else {
        const std::size_t i = l * c1.stride + static_cast<std::size_t>(i0);
        const std::size_t jj = l * c2.stride + static_cast<std::size_t>(j);
        const TileVariances<Scalar> v{i0, j, c1.q.data() + i, c1.root.data() + i, c1.inverse_root.data() + i,
                                      c2.q[jj], c2.root[jj], c2.inverse_root[jj]};
        step.template cross_tile<T>(v, s, k, t_dot);
      }
    });
    for (int t = 0; t < T; ++t) {
      nngp[t] = s[t];
      ntk[t] = k[t];
    }
  }

  Scalar input_scale(Eigen::Index d) const {
    return m_options.divide_by_dimension ? Scalar(1) / static_cast<Scalar>(d) : Scalar(1);
  }

 private:
  template <class D>
  DiagonalChains<Scalar> start_chain(const Eigen::MatrixBase<D>& x, Scalar scale) const {
    DiagonalChains<Scalar> chain;
    chain.layers = m_layers;
    chain.points = static_cast<std::size_t>(x.rows());
    chain.stride = chain.points + kernel_tile;
    chain.q.assign(chain.stride * (m_layers + 1), Scalar(1));
    chain.ntk.assign(chain.points, Scalar(0));
    for (Eigen::Index p = 0; p < x.rows(); ++p)
      chain.q[static_cast<std::size_t>(p)] = x.row(p).squaredNorm() * scale;
    return chain;
  }

  KernelOptions m_options;
  std::size_t m_layers;
  DiagonalChains<Scalar> m_chain1, m_chain2;
  std::unique_ptr<Steps<Arch, Scalar>> m_steps;
  bool m_uses_series = false;
};

template <class D1, class D2>
void check_inputs(const char* function, const Eigen::MatrixBase<D1>& x1,
                  const Eigen::MatrixBase<D2>& x2) {
  check_nonempty(function, "x1", x1);
  check_nonempty(function, "x2", x2);
  if (x1.cols() != x2.cols())
    fail<std::invalid_argument>(function, "x1 and x2 must have the same number of features (got ",
                                x1.cols(), " and ", x2.cols(), ")");
  check_finite(function, "x1", x1);
  check_finite(function, "x2", x2);
}

template <class Scalar>
void check_result(const char* function, const Kernels<Scalar>& k) {
  for (const auto* m : {&k.nngp, &k.ntk})
    if (m->size() > 0 && !m->allFinite())
      fail<std::overflow_error>(function,
                                "the kernel overflows the scalar type (got a non-finite entry); "
                                "reduce depth or sigma_w, or use ntk::deep_kernel for normalized "
                                "deep kernels");
}

/// Sizes `m` without initializing it and, on Linux, asks for transparent huge pages for large
/// buffers before they are first touched (fresh 4 KiB page faults dominate on some VMs).
template <class Matrix>
void allocate_large(Matrix& m, Eigen::Index rows, Eigen::Index cols) {
  m.resize(rows, cols);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::size_t huge = std::size_t(2) << 20;
  const std::size_t bytes = static_cast<std::size_t>(m.size()) * sizeof(typename Matrix::Scalar);
  if (bytes >= 4 * huge) {
    const auto begin = (reinterpret_cast<std::uintptr_t>(m.data()) + huge - 1) & ~(huge - 1);
    const auto end = (reinterpret_cast<std::uintptr_t>(m.data()) + bytes) & ~(huge - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#endif
}

/// Copies the strict upper triangle of a square matrix into the lower one, in cache-sized blocks.
template <class Matrix>
void mirror_upper(Matrix& m, int threads) {
  (void)threads;
  constexpr Eigen::Index B = 64;
  const Eigen::Index n = m.rows();
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic) num_threads(threads > 0 ? threads : omp_get_max_threads())
#endif
  for (Eigen::Index jb = 0; jb < n; jb += B)  // block column of the lower triangle
    for (Eigen::Index ib = jb; ib < n; ib += B)
      for (Eigen::Index j = jb; j < std::min(jb + B, n); ++j)
        for (Eigen::Index i = std::max(ib, j + 1); i < std::min(ib + B, n); ++i) m(i, j) = m(j, i);
}

template <class Scalar>
using OutputRef = Eigen::Ref<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>>;

/// The recursion for x1 against x2 (already checked) into caller storage: `primary` receives Θ^L
/// (or Σ^L when kind is nngp), `secondary` Σ^L when kind is both (else unused).  When `symmetric`
/// (x1 is x2) one triangle is computed and mirrored.  Throws std::overflow_error after a
/// non-finite entry, leaving the outputs partly written.
template <class Arch, class D1, class D2>
void compute_into(const char* function, const Arch& arch, const Eigen::MatrixBase<D1>& x1,
                  const Eigen::MatrixBase<D2>& x2, bool symmetric, KernelKind kind,
                  OutputRef<typename D1::Scalar> primary, OutputRef<typename D1::Scalar> secondary,
                  const KernelOptions& options) {
  using Scalar = typename D1::Scalar;
  const KernelEngine<Arch, Scalar> engine(arch, x1, x2, symmetric, options);
  const Eigen::Index n1 = x1.rows(), n2 = x2.rows();
  // Start from the inner products, written straight into the output (scaled when read).
  if (symmetric) {  // upper triangle of x1 x1ᵀ only: half the flops
    primary.setZero();
    primary.template selfadjointView<Eigen::Upper>().rankUpdate(x1.derived());
  } else {
    primary.noalias() = x1 * x2.transpose();
  }
  const Scalar scale = engine.input_scale(x1.cols());
  const bool want_nngp = kind != KernelKind::ntk, want_ntk = kind != KernelKind::nngp;
  const int threads = options.threads;
  (void)threads;
  constexpr int T = kernel_tile;
  const DiagonalChains<Scalar>& c1 = engine.chain1();
  // Column-major storage: tiles of T rows run down a column; the symmetric case fills the upper
  // triangle (i <= j) and mirrors it.  With Hermite series (K coefficients per point and layer)
  // columns go in blocks of B, each row tile visiting all the block's columns in turn, so the
  // tile's coefficients are reused from cache B times; otherwise one column at a time, which
  // streams the output down its columns.
  const Eigen::Index B = engine.uses_series() ? 32 : 1;
  const Eigen::Index blocks = (n2 + B - 1) / B;
  bool finite = true;
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, B == 1 ? 4 : 1) reduction(&& : finite) num_threads(threads > 0 ? threads : omp_get_max_threads())
#endif
  for (Eigen::Index block = 0; block < blocks; ++block) {
    const Eigen::Index j0 = block * B, j1 = std::min(n2, j0 + B);
    const Eigen::Index rows = symmetric ? j1 : n1;
    Scalar first[T], nngp[T], ntk[T];
    for (Eigen::Index i0 = 0; i0 < rows; i0 += T) {
      for (Eigen::Index j = symmetric ? std::max(j0, i0) : j0; j < j1; ++j) {
        const Eigen::Index count = std::min<Eigen::Index>(T, (symmetric ? j + 1 : n1) - i0);
        for (int t = 0; t < T; ++t)  // the diagonal starts from the chains' own x·x
          first[t] = t >= count ? Scalar(0)
                     : (symmetric && i0 + t == j) ? c1.value(0, j)
                                                  : primary(i0 + t, j) * scale;
        engine.entries(first, i0, j, nngp, ntk, [](std::size_t, int, Scalar, Scalar, Scalar) {});
        for (Eigen::Index t = 0; t < count; ++t) {
          finite = finite && std::isfinite(nngp[t]) && std::isfinite(ntk[t]);
          if (want_nngp && want_ntk) {
            secondary(i0 + t, j) = nngp[t];
            primary(i0 + t, j) = ntk[t];
          } else {
            primary(i0 + t, j) = want_ntk ? ntk[t] : nngp[t];
          }
        }
      }
    }
  }
  if (!finite)
    fail<std::overflow_error>(function,
                              "the kernel overflows the scalar type (got a non-finite entry); "
                              "reduce depth or sigma_w, or use the normalized deep kernels of "
                              "deep_limit.hpp");
  if (symmetric) {
    mirror_upper(primary, threads);
    if (want_nngp && want_ntk) mirror_upper(secondary, threads);
  }
}

/// The checks every Gram-matrix request makes before anything is computed or written.
template <class Arch, class D1, class D2>
void check_request(const char* function, const Arch& arch, const Eigen::MatrixBase<D1>& x1,
                   const Eigen::MatrixBase<D2>& x2, const KernelOptions& options) {
  static_assert(std::is_same_v<typename D1::Scalar, typename D2::Scalar>,
                "ntk: x1 and x2 must have the same scalar type");
  options.check(function);
  check_architecture(function, arch);
  check_inputs(function, x1, x2);
}

/// Checks the inputs, allocates the requested Gram matrices (huge pages where available) and
/// fills them.
template <class Arch, class D1, class D2>
Kernels<typename D1::Scalar> compute_block(const char* function, const Arch& arch,
                                           const Eigen::MatrixBase<D1>& x1,
                                           const Eigen::MatrixBase<D2>& x2, bool symmetric,
                                           KernelKind kind, const KernelOptions& options) {
  using Scalar = typename D1::Scalar;
  check_request(function, arch, x1, x2, options);
  Kernels<Scalar> result;
  const bool want_nngp = kind != KernelKind::ntk, want_ntk = kind != KernelKind::nngp;
  if (want_nngp) allocate_large(result.nngp, x1.rows(), x2.rows());
  if (want_ntk) allocate_large(result.ntk, x1.rows(), x2.rows());
  compute_into(function, arch, x1, x2, symmetric, kind, want_ntk ? result.ntk : result.nngp,
               result.nngp, options);
  return result;
}

/// kernel_into's checks, then the recursion straight into `out`.
template <class Arch, class D1, class D2>
void compute_into_checked(const char* function, const Arch& arch, const Eigen::MatrixBase<D1>& x1,
                          const Eigen::MatrixBase<D2>& x2, bool symmetric, KernelKind kind,
                          OutputRef<typename D1::Scalar> out, const KernelOptions& options) {
  check_request(function, arch, x1, x2, options);
  if (kind == KernelKind::both)
    fail<std::invalid_argument>(function, "kind must be nngp or ntk: one output (got both)");
  if (out.rows() != x1.rows() || out.cols() != x2.rows())
    fail<std::invalid_argument>(function, "out must be ", x1.rows(), " x ", x2.rows(), " (got ",
                                out.rows(), " x ", out.cols(), ")");
  compute_into(function, arch, x1, x2, symmetric, kind, out, out, options);
}

}  // namespace detail

/// NNGP Σ^L and/or NTK Θ^L between the rows of x1 (n1 x d) and x2 (n2 x d): n1 x n2 matrices.
/// Cost O(n1 n2 L) dual evaluations, extra memory O((n1 + n2) L).
/// Throws std::invalid_argument (empty inputs, feature counts that differ, bad layers or options),
/// std::domain_error (non-finite entries), std::overflow_error (result out of range).
template <class Arch, class D1, class D2>
Kernels<typename D1::Scalar> kernel(const Arch& arch, const Eigen::MatrixBase<D1>& x1,
                                    const Eigen::MatrixBase<D2>& x2,
                                    KernelKind kind = KernelKind::both,
                                    const KernelOptions& options = {}) {
  return detail::compute_block("kernel", arch, x1, x2, false, kind, options);
}

/// The symmetric case x2 = x1: one triangle is computed.
template <class Arch, class D>
Kernels<typename D::Scalar> kernel(const Arch& arch, const Eigen::MatrixBase<D>& x,
                                   KernelKind kind = KernelKind::both,
                                   const KernelOptions& options = {}) {
  return detail::compute_block("kernel", arch, x, x, true, kind, options);
}

/// Σ^L or Θ^L (kind nngp or ntk) between the rows of x1 and x2, written into `out` (n1 x n2,
/// column-major: a Matrix, or an Eigen::Map over storage the caller owns such as a memory-mapped
/// file), so ntk never allocates the Gram matrix.  kernel()'s exceptions, plus
/// std::invalid_argument for kind both or an `out` of another size (then `out` is untouched);
/// after std::overflow_error the contents of `out` are unspecified.
template <class Arch, class D1, class D2>
void kernel_into(const Arch& arch, const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2,
                 KernelKind kind, detail::OutputRef<typename D1::Scalar> out,
                 const KernelOptions& options = {}) {
  detail::compute_into_checked("kernel_into", arch, x1, x2, false, kind, out, options);
}

/// The symmetric case x2 = x1 (one triangle computed, then mirrored).
template <class Arch, class D>
void kernel_into(const Arch& arch, const Eigen::MatrixBase<D>& x, KernelKind kind,
                 detail::OutputRef<typename D::Scalar> out, const KernelOptions& options = {}) {
  detail::compute_into_checked("kernel_into", arch, x, x, true, kind, out, options);
}

/// Θ^L(x1, x2) (n1 x n2); see kernel().
template <class Arch, class D1, class D2>
auto ntk_kernel(const Arch& arch, const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2,
                const KernelOptions& options = {}) {
  return kernel(arch, x1, x2, KernelKind::ntk, options).ntk;
}
template <class Arch, class D>
auto ntk_kernel(const Arch& arch, const Eigen::MatrixBase<D>& x, const KernelOptions& options = {}) {
  return kernel(arch, x, KernelKind::ntk, options).ntk;
}
/// Σ^L(x1, x2) (n1 x n2); see kernel().
template <class Arch, class D1, class D2>
auto nngp_kernel(const Arch& arch, const Eigen::MatrixBase<D1>& x1,
                 const Eigen::MatrixBase<D2>& x2, const KernelOptions& options = {}) {
  return kernel(arch, x1, x2, KernelKind::nngp, options).nngp;
}
template <class Arch, class D>
auto nngp_kernel(const Arch& arch, const Eigen::MatrixBase<D>& x, const KernelOptions& options = {}) {
  return kernel(arch, x, KernelKind::nngp, options).nngp;
}

/// The tile [r0, r1) x [c0, c1) of kernel(arch, x1, x2): rows of x1 and rows of x2 in those ranges,
/// so callers can spread a Gram matrix over threads, processes or machines.  Entries equal those
/// of the full computation except where a generic activation's table/quadrature choice depends on
/// the inputs present (then they agree to the quadrature tolerance, <= 1e-12); otherwise they agree
/// to rounding (the tile's inner products come from a GEMM of another shape).
/// Throws std::invalid_argument for ranges outside the inputs, plus kernel()'s exceptions.
template <class Arch, class D1, class D2>
Kernels<typename D1::Scalar> kernel_block(const Arch& arch, const Eigen::MatrixBase<D1>& x1,
                                          const Eigen::MatrixBase<D2>& x2, Eigen::Index r0,
                                          Eigen::Index r1, Eigen::Index c0, Eigen::Index c1,
                                          KernelKind kind = KernelKind::both,
                                          const KernelOptions& options = {}) {
  if (r0 < 0 || r1 > x1.rows() || r0 >= r1 || c0 < 0 || c1 > x2.rows() || c0 >= c1)
    detail::fail<std::invalid_argument>("kernel_block", "ranges must be non-empty and inside the "
                                        "inputs (got rows [", r0, ", ", r1, ") of ", x1.rows(),
                                        ", columns [", c0, ", ", c1, ") of ", x2.rows(), ")");
  return detail::compute_block("kernel_block", arch, x1.middleRows(r0, r1 - r0),
                               x2.middleRows(c0, c1 - c0), false, kind, options);
}

/// Diagonals Σ^L(x, x) and Θ^L(x, x) only, as n x 1 matrices: O(n L).
template <class Arch, class D>
Kernels<typename D::Scalar> kernel_diagonal(const Arch& arch, const Eigen::MatrixBase<D>& x,
                                            const KernelOptions& options = {}) {
  using Scalar = typename D::Scalar;
  options.check("kernel_diagonal");
  detail::check_architecture("kernel_diagonal", arch);
  detail::check_inputs("kernel_diagonal", x, x);
  const detail::KernelEngine<Arch, Scalar> engine(arch, x, x, true, options);
  Kernels<Scalar> result;
  result.nngp.resize(x.rows(), 1);
  result.ntk.resize(x.rows(), 1);
  const auto& chain = engine.chain1();
  for (Eigen::Index p = 0; p < x.rows(); ++p) {
    result.nngp(p, 0) = chain.value(chain.layers, p);
    result.ntk(p, 0) = chain.ntk[static_cast<std::size_t>(p)];
  }
  detail::check_result("kernel_diagonal", result);
  return result;
}

/// Σ^l, Σ̇^l and Θ^l after every affine layer l = 1..L (n1 x n2 each; O(n1 n2 L) memory).
template <class Arch, class D1, class D2>
std::vector<LayerKernels<typename D1::Scalar>> kernel_layers(const Arch& arch,
                                                             const Eigen::MatrixBase<D1>& x1,
                                                             const Eigen::MatrixBase<D2>& x2,
                                                             const KernelOptions& options = {}) {
  using Scalar = typename D1::Scalar;
  options.check("kernel_layers");
  detail::check_architecture("kernel_layers", arch);
  detail::check_inputs("kernel_layers", x1, x2);
  const detail::KernelEngine<Arch, Scalar> engine(arch, x1, x2, false, options);
  std::vector<std::size_t> slot(arch.size(), 0);
  std::size_t affine = 0;
  arch.for_each_layer([&](std::size_t l, const auto& layer) {
    if constexpr (std::is_same_v<std::decay_t<decltype(layer)>, Dense>) slot[l] = affine++;
  });
  std::vector<LayerKernels<Scalar>> out(affine);
  for (auto& layer : out) {
    layer.nngp.resize(x1.rows(), x2.rows());
    layer.nngp_dot.resize(x1.rows(), x2.rows());
    layer.ntk.resize(x1.rows(), x2.rows());
  }
  const Scalar scale = engine.input_scale(x1.cols());
  constexpr int T = detail::kernel_tile;
  Scalar start[T], nngp[T], ntk[T];
  for (Eigen::Index j = 0; j < x2.rows(); ++j)
    for (Eigen::Index i0 = 0; i0 < x1.rows(); i0 += T) {
      const Eigen::Index count = std::min<Eigen::Index>(T, x1.rows() - i0);
      for (int t = 0; t < T; ++t)
        start[t] = t < count ? x1.row(i0 + t).dot(x2.row(j)) * scale : Scalar(0);
      engine.entries(start, i0, j, nngp, ntk, [&](std::size_t l, int t, Scalar s, Scalar s_dot, Scalar k) {
        if (t >= count) return;
        out[slot[l]].nngp(i0 + t, j) = s;
        out[slot[l]].nngp_dot(i0 + t, j) = s_dot;
        out[slot[l]].ntk(i0 + t, j) = k;
      });
    }
  return out;
}

}  // namespace ntk
