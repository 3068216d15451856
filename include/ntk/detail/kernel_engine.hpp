#pragma once
/// \file detail/kernel_engine.hpp
/// The engine behind every entry point of kernel.hpp.  Not public API.
///
/// The diagonal chains Σ^l(x, x) are computed first (O(n L)), which also fixes each activation
/// layer's mode (detail/layer_dual.hpp); then every entry runs the whole depth recursion in
/// registers, kernel_tile rows of one column at a time (no n x n temporary per layer).  The
/// symmetric case computes one triangle and mirrors it.  With OpenMP the columns are shared among
/// threads and the recursion computes every entry by the same arithmetic whatever the thread count.
/// The inner products x1 x2ᵀ it starts from: for one set (the symmetric case) Eigen's rankUpdate,
/// single-threaded, so those results are identical for every thread count; for two sets Eigen's
/// threaded product, which splits the sum over the d features differently with one thread than
/// with several once d exceeds about 200 (Eigen's L1 blocking), so two-set results (and packed
/// Gram tiles) can differ in the last bits between thread counts.

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "../contracts.hpp"
#include "../errors.hpp"
#include "../kernel_options.hpp"
#include "../layers.hpp"
#include "layer_dual.hpp"
#include "memory.hpp"
#include "steps.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ntk {
namespace detail {

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
  KernelEngine(const Arch& arch, const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2, bool same_inputs,
               const KernelOptions& options)
      : m_options(options), m_layers(arch.size()) {
    const Scalar scale = options.divide_by_dimension ? Scalar(1) / static_cast<Scalar>(x1.cols()) : Scalar(1);
    m_chain1 = start_chain(x1, scale);
    if (!same_inputs) m_chain2 = start_chain(x2, scale);
    std::vector<DiagonalChains<Scalar>*> chains{&m_chain1};
    if (!same_inputs) chains.push_back(&m_chain2);
    // Walk the layers once, in order: propagate the diagonal chains and prepare each activation's
    // dual for the range of variances it sees.
    // The fan-in of a standard-parametrized Dense: m_in Σ = x·x' for the first layer.
    double fan_in = options.divide_by_dimension ? static_cast<double>(x1.cols()) : 1.0;
    m_steps = std::make_unique<Steps<Arch, Scalar>>(arch, [&](std::size_t l, const auto& layer) {
      using Layer = std::decay_t<decltype(layer)>;
      if constexpr (std::is_same_v<Layer, Dense>) {
        const DenseStep<Scalar> step(layer, fan_in);
        fan_in = static_cast<double>(layer.width);
        for (auto* chain : chains)
          for (std::size_t p = 0; p < chain->points; ++p) {
            const Scalar q = chain->q[l * chain->stride + p];
            chain->q[(l + 1) * chain->stride + p] = step.w2 * q + step.b2;
            chain->ntk[p] = step.w2 * chain->ntk[p] + (step.tw * q + step.tb);
          }
        return step;
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
                            {same_inputs ? nullptr : m_chain2.q.data() + l * m_chain2.stride, m_chain2.points});
        m_uses_series = m_uses_series || step.uses_series();
        std::vector<Dual<Scalar>> diagonal;
        for (auto* chain : chains) {
          diagonal.resize(chain->points);
          step.diagonals(chain->q.data() + l * chain->stride, chain->points, diagonal.data());
          for (std::size_t p = 0; p < chain->points; ++p) {
            chain->q[(l + 1) * chain->stride + p] = diagonal[p].t;
            chain->ntk[p] *= diagonal[p].t_dot;
          }
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
  void entries(const Scalar* start, Eigen::Index i0, Eigen::Index j, Scalar* nngp, Scalar* ntk, Record&& record) const {
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
      if constexpr (std::is_same_v<std::decay_t<decltype(step)>, DenseStep<Scalar>>) {
        const Scalar w2 = step.w2, b2 = step.b2, tw = step.tw, tb = step.tb;
        for (int t = 0; t < T; ++t) {
          k[t] = w2 * k[t] + (tw * s[t] + tb);
          s[t] = w2 * s[t] + b2;
          record(l, t, s[t], w2 * t_dot[t], k[t]);
        }
      } else {
        const std::size_t i = l * c1.stride + static_cast<std::size_t>(i0);
        const std::size_t jj = l * c2.stride + static_cast<std::size_t>(j);
        const TileVariances<Scalar> v{
            i0,       j,           c1.q.data() + i,    c1.root.data() + i, c1.inverse_root.data() + i,
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
    for (Eigen::Index p = 0; p < x.rows(); ++p) chain.q[static_cast<std::size_t>(p)] = x.row(p).squaredNorm() * scale;
    return chain;
  }

  KernelOptions m_options;
  std::size_t m_layers;
  DiagonalChains<Scalar> m_chain1, m_chain2;
  std::unique_ptr<Steps<Arch, Scalar>> m_steps;
  bool m_uses_series = false;
};

template <class D1, class D2>
void check_inputs(const char* function, const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2) {
  detail::check_nonempty(function, "x1", x1);
  detail::check_nonempty(function, "x2", x2);
  if (x1.cols() != x2.cols())
    fail<std::invalid_argument>(function, "x1 and x2 must have the same number of features (got ", x1.cols(), " and ",
                                x2.cols(), ")");
  detail::check_finite(function, "x1", x1);
  detail::check_finite(function, "x2", x2);
}

/// Scalar types narrower than double (float).  Their Gram-matrix entry points recompute in double
/// and round when the recursion overflows, so a kernel that fits the type is returned even when the
/// inputs' squared norms do not (a bounded activation at float inputs of norm 1e30: the input layer's
/// x·x' = 1e60 overflows float, the kernel after erf or tanh does not).  Only that failure case pays.
template <class Scalar>
inline constexpr bool narrower_than_double = std::numeric_limits<Scalar>::digits < std::numeric_limits<double>::digits;

/// What every Gram-matrix entry point says when a result leaves the scalar type's range.
inline constexpr const char* overflow_message =
    "the kernel overflows the scalar type (got a non-finite entry); reduce depth or sigma_w, or use "
    "ntk::DeepKernel (deep_limit.hpp) for deep kernels in normalized, log-scale form";

template <class Scalar>
void check_result(const char* function, const Kernels<Scalar>& k) {
  for (const auto* m : {&k.nngp, &k.ntk})
    if (m->size() > 0 && !m->allFinite()) fail<std::overflow_error>(function, overflow_message);
}

template <class Scalar>
using OutputRef = Eigen::Ref<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>>;

/// out = x1 x2ᵀ (two different sets) by products of at most 2,048 rows of x1: Eigen's threaded
/// product over a tall x1 (a packed tile is c1 x 512 with c1 up to n) runs at about 0.6x the rate of
/// the same product in 2,048-row pieces (docs/large_scale.md).
template <class D1, class D2, class Scalar>
void cross_inner_products(const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2, OutputRef<Scalar> out) {
  constexpr Eigen::Index rows = 2048;
  for (Eigen::Index r = 0; r < x1.rows(); r += rows) {
    const Eigen::Index h = std::min(rows, x1.rows() - r);
    out.middleRows(r, h).noalias() = x1.middleRows(r, h) * x2.transpose();
  }
}

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
  if (symmetric) {  // upper triangle of x1 x1ᵀ only: half the flops (Eigen's rankUpdate, one thread)
    primary.setZero();
    primary.template selfadjointView<Eigen::Upper>().rankUpdate(x1.derived());
  } else {
    cross_inner_products<D1, D2, Scalar>(x1, x2, primary);
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
          first[t] = t >= count ? Scalar(0) : (symmetric && i0 + t == j) ? c1.value(0, j) : primary(i0 + t, j) * scale;
        engine.entries(first, i0, j, nngp, ntk, [](std::size_t, int, Scalar, Scalar, Scalar) {});
        if (symmetric && j - i0 < count) {
          // The diagonal is the chains' (kernel_diagonal's) value: a series or table evaluated at
          // (q, q, q) differs from the chain's 1-D rule in the last digits, and a kinked
          // activation after it (ReLU's arccos at ρ = 1 − δ moves by √(2δ)) would amplify that
          // to ~1e-7.
          const auto t = static_cast<std::size_t>(j - i0);
          nngp[t] = c1.value(c1.layers, j);
          ntk[t] = c1.ntk[static_cast<std::size_t>(j)];
        }
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
  if (!finite) fail<std::overflow_error>(function, overflow_message);
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
  static_assert(check_architecture_contract<Arch, typename D1::Scalar>(),
                "ntk: the architecture does not meet the contract (see the message above)");
  options.check(function);
  check_architecture(function, arch);
  check_inputs(function, x1, x2);
}

template <class Arch, class D1, class D2>
Kernels<typename D1::Scalar> compute_in_double(const char* function, const Arch& arch, const Eigen::MatrixBase<D1>& x1,
                                               const Eigen::MatrixBase<D2>& x2, bool symmetric, KernelKind kind,
                                               const KernelOptions& options);

/// Checks the inputs, allocates the requested Gram matrices (huge pages where available) and
/// fills them.
template <class Arch, class D1, class D2>
Kernels<typename D1::Scalar> compute_block(const char* function, const Arch& arch, const Eigen::MatrixBase<D1>& x1,
                                           const Eigen::MatrixBase<D2>& x2, bool symmetric, KernelKind kind,
                                           const KernelOptions& options) {
  using Scalar = typename D1::Scalar;
  check_request(function, arch, x1, x2, options);
  Kernels<Scalar> result;
  const bool want_nngp = kind != KernelKind::ntk, want_ntk = kind != KernelKind::nngp;
  check_allocation(
      function, "the n1 x n2 Gram matrices",
      saturating_product(saturating_product(static_cast<std::size_t>(x1.rows()), static_cast<std::size_t>(x2.rows())),
                         want_nngp && want_ntk ? 2 : 1),
      sizeof(Scalar));
  if (want_nngp) allocate_large(result.nngp, x1.rows(), x2.rows());
  if (want_ntk) allocate_large(result.ntk, x1.rows(), x2.rows());
  try {
    compute_into(function, arch, x1, x2, symmetric, kind, want_ntk ? result.ntk : result.nngp, result.nngp, options);
  } catch (const std::overflow_error&) {
    if constexpr (!narrower_than_double<Scalar>) {
      throw;
    } else {                       // the input layer may be what overflowed
      result = Kernels<Scalar>{};  // freed before the double copy is allocated
      result = compute_in_double(function, arch, x1, x2, symmetric, kind, options);
    }
  }
  return result;
}

/// compute_block in double, rounded to Scalar (see narrower_than_double); std::overflow_error when
/// the rounded kernel does not fit Scalar either.
template <class Arch, class D1, class D2>
Kernels<typename D1::Scalar> compute_in_double(const char* function, const Arch& arch, const Eigen::MatrixBase<D1>& x1,
                                               const Eigen::MatrixBase<D2>& x2, bool symmetric, KernelKind kind,
                                               const KernelOptions& options) {
  using Scalar = typename D1::Scalar;
  const Eigen::MatrixXd w1 = x1.template cast<double>();
  const Kernels<double> wide =
      symmetric ? compute_block(function, arch, w1, w1, true, kind, options)
                : compute_block(function, arch, w1, x2.template cast<double>().eval(), false, kind, options);
  Kernels<Scalar> result;
  result.nngp = wide.nngp.template cast<Scalar>();
  result.ntk = wide.ntk.template cast<Scalar>();
  check_result(function, result);
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
    fail<std::invalid_argument>(function, "out must be ", x1.rows(), " x ", x2.rows(), " (got ", out.rows(), " x ",
                                out.cols(), ")");
  try {
    compute_into(function, arch, x1, x2, symmetric, kind, out, out, options);
  } catch (const std::overflow_error&) {
    if constexpr (!narrower_than_double<typename D1::Scalar>) {
      throw;
    } else {  // as compute_block
      const Kernels<typename D1::Scalar> narrow = compute_in_double(function, arch, x1, x2, symmetric, kind, options);
      out = kind == KernelKind::ntk ? narrow.ntk : narrow.nngp;
    }
  }
}

/// kernel_diagonal: the checks, then the diagonal chains alone.
template <class Arch, class D>
Kernels<typename D::Scalar> compute_diagonal(const char* function, const Arch& arch, const Eigen::MatrixBase<D>& x,
                                             const KernelOptions& options) {
  using Scalar = typename D::Scalar;
  check_request(function, arch, x, x, options);
  const KernelEngine<Arch, Scalar> engine(arch, x, x, true, options);
  Kernels<Scalar> result;
  result.nngp.resize(x.rows(), 1);
  result.ntk.resize(x.rows(), 1);
  const auto& chain = engine.chain1();
  for (Eigen::Index p = 0; p < x.rows(); ++p) {
    result.nngp(p, 0) = chain.value(chain.layers, p);
    result.ntk(p, 0) = chain.ntk[static_cast<std::size_t>(p)];
  }
  if constexpr (narrower_than_double<Scalar>) {
    if (!result.nngp.allFinite() || !result.ntk.allFinite()) {  // as compute_block: again in double
      const Kernels<double> wide = compute_diagonal(function, arch, x.template cast<double>().eval(), options);
      result.nngp = wide.nngp.template cast<Scalar>();
      result.ntk = wide.ntk.template cast<Scalar>();
    }
  }
  check_result(function, result);
  return result;
}

/// kernel_layers: the checks, then the recursion recording every affine layer's matrices.
template <class Arch, class D1, class D2>
std::vector<LayerKernels<typename D1::Scalar>> compute_layers(const char* function, const Arch& arch,
                                                              const Eigen::MatrixBase<D1>& x1,
                                                              const Eigen::MatrixBase<D2>& x2,
                                                              const KernelOptions& options) {
  using Scalar = typename D1::Scalar;
  check_request(function, arch, x1, x2, options);
  const KernelEngine<Arch, Scalar> engine(arch, x1, x2, false, options);
  std::vector<std::size_t> slot(arch.size(), 0);
  std::size_t affine = 0;
  arch.for_each_layer([&](std::size_t l, const auto& layer) {
    if constexpr (std::is_same_v<std::decay_t<decltype(layer)>, Dense>) slot[l] = affine++;
  });
  check_allocation(
      function, "the per-layer Gram matrices",
      saturating_product(saturating_product(static_cast<std::size_t>(x1.rows()), static_cast<std::size_t>(x2.rows())),
                         3 * affine),
      sizeof(Scalar));
  std::vector<LayerKernels<Scalar>> out(affine);
  for (auto& layer : out) {
    layer.nngp.resize(x1.rows(), x2.rows());
    layer.nngp_dot.resize(x1.rows(), x2.rows());
    layer.ntk.resize(x1.rows(), x2.rows());
  }
  const Scalar scale = engine.input_scale(x1.cols());
  constexpr int T = kernel_tile;
  Scalar start[T], nngp[T], ntk[T];
  for (Eigen::Index j = 0; j < x2.rows(); ++j)
    for (Eigen::Index i0 = 0; i0 < x1.rows(); i0 += T) {
      const Eigen::Index count = std::min<Eigen::Index>(T, x1.rows() - i0);
      for (int t = 0; t < T; ++t) start[t] = t < count ? x1.row(i0 + t).dot(x2.row(j)) * scale : Scalar(0);
      engine.entries(start, i0, j, nngp, ntk, [&](std::size_t l, int t, Scalar s, Scalar s_dot, Scalar k) {
        if (t >= count) return;
        out[slot[l]].nngp(i0 + t, j) = s;
        out[slot[l]].nngp_dot(i0 + t, j) = s_dot;
        out[slot[l]].ntk(i0 + t, j) = k;
      });
    }
  return out;
}

}  // namespace detail
}  // namespace ntk
