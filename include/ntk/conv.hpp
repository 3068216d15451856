#pragma once
/// \file conv.hpp
/// Image architectures in both worlds: convolutions (1-D and 2-D), average pooling, global
/// average pooling, flattening, per-pixel dense layers, elementwise activations, residual blocks
/// and LayerNorm; their
/// infinite-width NNGP/NTK (Arora et al. 2019's CNTK, Neural Tangents' stax conventions) and the
/// finite networks they describe.
///
/// Data: one image per row, n x (H·W·C), channels last: entry (h, w, c) of image i at column
/// (h W + w) C + c.  A 1-D signal of length L with C channels is the shape 1 x L x C.
///
/// Conventions (as stax, NTK parametrization):
///  - Conv: z(p, c') = σ_w / sqrt(C k) Σ_{δ, c} w(c', δ, c) x(p + δ, c) + σ_b β(c'), fan-in
///    C x (filter size k); padding SAME (zeros, output ceil(n / stride), the extra pad at the end),
///    VALID, CIRCULAR (wrap-around, sizes as SAME).  Defaults σ_w = 1, σ_b = 0 (stax's b_std=None).
///  - Dense on an image acts on the channels of every pixel (a 1x1 convolution); after Flatten it is
///    an ordinary dense layer whose fan-in is pixels x channels.
///  - AvgPool: mean over the window (zeros padded under SAME count in the mean: stax's
///    normalize_edges=False); the stride defaults to the window (give it explicitly to match stax).
///  - GlobalAvgPool averages over pixels; Flatten concatenates pixels (h, w, c order).
///  - The input covariance is Σ⁰(p, p') = x(p)·x'(p') / C.
/// Kernel recursion on the pixel-by-pixel covariances Σ(p, p') of two inputs (P x P' entries):
///    Conv:        Σ' = σ_w² A(Σ) + σ_b²,  Θ' = σ_w² A(Θ) + Σ',  A(Σ)(p, p') = (1/k) Σ_δ Σ(p+δ, p'+δ)
///                 (standard parametrization: Θ' = σ_w² A(Θ) + C k A(Σ) + [σ_b > 0], C the input
///                 channels of the finite network; stax's parameterization='standard', layers.hpp)
///    Dense:       the same with k = 1, δ = 0
///    AvgPool:     Σ' = M Σ Mᵀ, Θ' = M Θ Mᵀ (M the pooling matrix of one image)
///    GlobalAvgPool: Σ' = mean_{p,p'} Σ(p, p');  Flatten: Σ' = mean_p Σ(p, p)  (Θ likewise)
///    Activation:  Σ'(p, p') = L^φ at [[q(p), Σ(p,p')], [Σ(p,p'), q'(p')]],  Θ' = Θ ⊙ L^φ'
///    Residual:    y = x + α f(x): Σ' = Σ + α² Σ_f, Θ' = Θ + α² Θ_f (the branch run from (Σ, Θ);
///                 stax's FanOut(2) >> parallel(f, Identity) >> FanInSum is α = 1)
///    LayerNorm:   Σ'(p, p') = Σ(p, p') / sqrt((q(p) + ε)(q'(p') + ε)), Θ' likewise (stax's
///                 LayerNorm(axis=-1); both need zero-mean Gaussian inputs, as in stax)
/// where q(p) = Σ(x, x)(p, p) comes from the diagonal chain of each image, computed once per image.
/// Without pooling before the readout (Flatten, no AvgPool/GlobalAvgPool) only the diagonal
/// p = p' is ever needed: O(P k L) per pair (the CNTK-V); residual blocks and LayerNorm before
/// the readout pooling keep an architecture off the line engines.  With pooling the whole P x P' matrix:
/// O(P² k L) per pair, P² memory per pair in flight (per thread), never O(n² P²).
/// Activation duals: closed forms where the activation has one (ReLU family: one square root per
/// entry through unit_dual), otherwise the Mehler series of dual.hpp, else product quadrature.
/// Scalar: double.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "activations.hpp"
#include "dual.hpp"
#include "errors.hpp"
#include "kernel.hpp"  // Kernels, KernelKind
#include "layers.hpp"
#include "random.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ntk {

/// How a convolution or pooling window treats the border.
enum class Padding { same, valid, circular };

/// Height x width x channels (channels last).  A 1-D signal has height 1.
struct ImageShape {
  Eigen::Index height = 1, width = 1, channels = 1;
  Eigen::Index pixels() const { return height * width; }
  Eigen::Index size() const { return height * width * channels; }
  std::string str() const {
    return std::to_string(height) + "x" + std::to_string(width) + "x" + std::to_string(channels);
  }
};

/// A 2-D (or, with filter_height 1 on height-1 images, 1-D) convolution, in the NTK
/// parametrization by default.  `channels` (output channels) matters for finite networks, and for
/// the kernels only as the fan-in of a standard-parametrized layer after it.
struct Conv {
  Eigen::Index channels = 0;
  Eigen::Index filter_height = 3, filter_width = 3;
  Eigen::Index stride_height = 1, stride_width = 1;
  Padding padding = Padding::same;
  double sigma_w = 1, sigma_b = 0;
  Parametrization parametrization = Parametrization::ntk;
};

/// Average pooling over windows; a stride of 0 means the window size.
struct AvgPool {
  Eigen::Index window_height = 2, window_width = 2;
  Eigen::Index stride_height = 0, stride_width = 0;
  Padding padding = Padding::valid;
};

/// Mean over all pixels: H x W x C -> 1 x 1 x C.
struct GlobalAvgPool {};

/// H x W x C -> 1 x 1 x (H W C).
struct Flatten {};

namespace detail {

/// Variances at one activation layer of one image: q(p), sqrt(q(p)) and 1/sqrt(q(p)) (0 where
/// q = 0) for p < pixels, then `lanes` entries of variance 1 so that vector loops may run past a
/// row's end.
struct ChainLayer {
  static constexpr std::size_t lanes = 8;
  std::size_t pixels = 0;
  std::vector<double> q, root, inverse_root;
  /// Pads q and fills root and inverse_root from it.
  void finish() {
    pixels = q.size();
    q.resize(pixels + lanes, 1.0);
    root.resize(q.size());
    inverse_root.resize(q.size());
    for (std::size_t p = 0; p < q.size(); ++p) {
      root[p] = std::sqrt(q[p]);
      inverse_root[p] = q[p] > 0 ? 1 / root[p] : 0.0;
    }
  }
  /// The same values in the padded layout of covariance lines: pixel (h, w) of this layer's
  /// height x width grid at (h + rows) * stride + columns + w, variance 1 elsewhere.
  std::vector<double> padded_q, padded_root, padded_inverse_root;
  Eigen::Index pad_height = 0, pad_width = 0, pad_stride = 0, pad_columns = 0, pad_rows = 0;
  /// The pixel at a padded index, or -1 on the padding.
  Eigen::Index unpad(Eigen::Index index) const {
    const Eigen::Index h = index / pad_stride - pad_rows, w = index % pad_stride - pad_columns;
    return (h >= 0 && h < pad_height && w >= 0 && w < pad_width) ? h * pad_width + w : -1;
  }
  void pad(Eigen::Index height, Eigen::Index width, Eigen::Index stride, Eigen::Index columns, Eigen::Index rows) {
    pad_height = height;
    pad_width = width;
    pad_stride = stride;
    pad_columns = columns;
    pad_rows = rows;
    const std::size_t size = static_cast<std::size_t>((height + 2 * rows + 2) * stride);
    padded_q.assign(size, 1.0);
    padded_root.assign(size, 1.0);
    padded_inverse_root.assign(size, 1.0);
    for (Eigen::Index h = 0; h < height; ++h)
      for (Eigen::Index w = 0; w < width; ++w) {
        const std::size_t from = static_cast<std::size_t>(h * width + w);
        const std::size_t to = static_cast<std::size_t>((h + rows) * stride + columns + w);
        padded_q[to] = q[from];
        padded_root[to] = root[from];
        padded_inverse_root[to] = inverse_root[from];
      }
  }
};

/// Per-image variances Σ(x, x)(p, p) at the input of every activation layer, computed once per image.
struct ImageChain {
  std::vector<ChainLayer> layers;
};

/// One activation layer prepared for the variances of two images.  block() applies the step
/// to the W x W block (h1, h2) of a full covariance (entry (w1, w2) pairs pixel h1 W + w1 with
/// h2 W + w2); diagonal() to matching pixels p of both images.  sigma <- L^φ, theta *= L^φ'.
class ActivationStep {
 public:
  virtual ~ActivationStep() = default;
  virtual void block(Eigen::Index h1, Eigen::Index h2, Eigen::Index width, double* sigma, double* theta) const = 0;
  /// Entries t < count pairing pixel p1 with p2 + t.  Closed forms may process up to `room`
  /// entries (whole vectors; the chains are padded), leaving scratch values past count.
  virtual void row(Eigen::Index p1, Eigen::Index p2, Eigen::Index count, Eigen::Index room, double* sigma,
                   double* theta) const = 0;
  virtual void diagonal(Eigen::Index pixels, double* sigma, double* theta) const = 0;
  /// Entries t < count pairing pixel p1 + t of the first image with p2 + t of the second.
  virtual void pairs(Eigen::Index p1, Eigen::Index p2, Eigen::Index count, double* sigma, double* theta) const = 0;
  /// The same on the padded layouts (ChainLayer::pad): entry f pairs padded index f + offset1 of
  /// the first chain with f + offset2 of the second, for f in [first, first + count).  Entries on
  /// the padding get finite scratch values.
  virtual void padded_pairs(Eigen::Index first, Eigen::Index count, Eigen::Index offset1, Eigen::Index offset2,
                            double* sigma, double* theta) const = 0;
};

/// A run-time activation: the per-layer operations both worlds need, behind one virtual call per
/// layer or block (the loops inside are templated on the activation).
class ImageActivationBase {
 public:
  virtual ~ImageActivationBase() = default;
  virtual std::string name() const = 0;
  /// h = φ(z), d = φ'(z) for n values.
  virtual void forward(const double* z, double* h, double* d, Eigen::Index n) const = 0;
  virtual std::unique_ptr<ActivationStep> prepare(const ChainLayer& a, const ChainLayer& b,
                                                  const DualOptions& options) const = 0;
};

template <class Phi>
class ImageActivationModel final : public ImageActivationBase {
 public:
  explicit ImageActivationModel(Phi phi) : m_phi(std::move(phi)) {}
  std::string name() const override { return m_phi.name(); }
  void forward(const double* z, double* h, double* d, Eigen::Index n) const override {
    for (Eigen::Index i = 0; i < n; ++i) {
      h[i] = m_phi.value(z[i]);
      d[i] = m_phi.derivative(z[i]);
    }
  }
  std::unique_ptr<ActivationStep> prepare(const ChainLayer& a, const ChainLayer& b,
                                          const DualOptions& options) const override {
    return std::make_unique<Step>(m_phi, a, b, options);
  }

 private:
  /// Closed form, or (without one) Mehler series (variances differ, adaptive order) or product quadrature.
  class Step final : public ActivationStep {
   public:
    Step(const Phi& phi, const ChainLayer& a, const ChainLayer& b, const DualOptions& options)
        : m_phi(phi), m_a(a), m_b(b), m_options(options) {
      if constexpr (!closed) {
        if (options.quadrature_order == 0) {
          std::vector<VarianceSet<double>> sets{{a.q.data(), a.pixels}, {b.q.data(), b.pixels}};
          m_series = hermite_series(phi, sets, options.series_tolerance);
          m_use_series = m_series[0].converged;
        }
      }
    }
    void block(Eigen::Index h1, Eigen::Index h2, Eigen::Index width, double* sigma, double* theta) const override {
      for (Eigen::Index w1 = 0; w1 < width; ++w1)
        row(h1 * width + w1, h2 * width, width, sigma + w1 * width, theta + w1 * width);
    }
    void diagonal(Eigen::Index pixels, double* sigma, double* theta) const override {
      pairs(0, 0, pixels, sigma, theta);
    }
    void pairs(Eigen::Index p1, Eigen::Index p2, Eigen::Index count, double* sigma, double* theta) const override {
      if constexpr (closed) {
        closed_entries(m_phi, m_a.q.data() + p1, m_a.root.data() + p1, m_a.inverse_root.data() + p1, m_b.q.data() + p2,
                       m_b.root.data() + p2, m_b.inverse_root.data() + p2, count, sigma, theta);
      } else {
        for (Eigen::Index t = 0; t < count; ++t) generic(p1 + t, p2 + t, sigma[t], theta[t]);
      }
    }
    void padded_pairs(Eigen::Index first, Eigen::Index count, Eigen::Index offset1, Eigen::Index offset2, double* sigma,
                      double* theta) const override {
      if constexpr (closed) {
        const Eigen::Index i = first + offset1, j = first + offset2;
        closed_entries(m_phi, m_a.padded_q.data() + i, m_a.padded_root.data() + i, m_a.padded_inverse_root.data() + i,
                       m_b.padded_q.data() + j, m_b.padded_root.data() + j, m_b.padded_inverse_root.data() + j, count,
                       sigma + first, theta + first);
      } else {
        // Generic duals index their series by pixel: map padded indices back (padding skipped).
        for (Eigen::Index f = first; f < first + count; ++f) {
          const Eigen::Index p1 = m_a.unpad(f + offset1), p2 = m_b.unpad(f + offset2);
          if (p1 < 0 || p2 < 0) {
            sigma[f] = 0;
            theta[f] = 0;
          } else {
            generic(p1, p2, sigma[f], theta[f]);
          }
        }
      }
    }

    void row(Eigen::Index p1, Eigen::Index p2, Eigen::Index count, Eigen::Index room, double* sigma,
             double* theta) const override {
      row(p1, p2, closed ? room : count, sigma, theta);
    }

   private:
    /// Entries (p1, p2_0 + t), t < count.
    void row(Eigen::Index p1, Eigen::Index p2_0, Eigen::Index count, double* sigma, double* theta) const {
      if constexpr (closed) {
        const std::size_t i = static_cast<std::size_t>(p1);
        closed_row(m_phi, m_a.q[i], m_a.root[i], m_a.inverse_root[i], m_b.q.data() + p2_0, m_b.root.data() + p2_0,
                   m_b.inverse_root.data() + p2_0, count, sigma, theta);
      } else {
        for (Eigen::Index t = 0; t < count; ++t) generic(p1, p2_0 + t, sigma[t], theta[t]);
      }
    }
    /// One variance on the left, a row on the right: the loop the compiler vectorizes.
    static void closed_row(const Phi& phi_ref, double q1, double r1, double v1, const double* __restrict q2,
                           const double* __restrict r2, const double* __restrict v2, Eigen::Index count,
                           double* __restrict sigma, double* __restrict theta) {
      const Phi phi = phi_ref;
      for (Eigen::Index t = 0; t < count; ++t) {
        Dual<double> d;
        if constexpr (has_unit_dual_v<Phi, double>) {
          d = phi.unit_dual(sigma[t] * v1 * v2[t]);
          d.t *= r1 * r2[t];
        } else {
          (void)r1;
          (void)v1;
          (void)r2;
          (void)v2;
          d = phi.dual(q1, sigma[t], q2[t]);
        }
        sigma[t] = d.t;
        theta[t] *= d.t_dot;
      }
    }
    static void closed_entries(const Phi& phi_ref, const double* __restrict q1, const double* __restrict r1,
                               const double* __restrict v1, const double* __restrict q2, const double* __restrict r2,
                               const double* __restrict v2, Eigen::Index count, double* __restrict sigma,
                               double* __restrict theta) {
      const Phi phi = phi_ref;
      for (Eigen::Index t = 0; t < count; ++t) {
        Dual<double> d;
        if constexpr (has_unit_dual_v<Phi, double>) {
          d = phi.unit_dual(sigma[t] * v1[t] * v2[t]);
          d.t *= r1[t] * r2[t];
        } else {
          (void)r1;
          (void)v1;
          (void)r2;
          (void)v2;
          d = phi.dual(q1[t], sigma[t], q2[t]);
        }
        sigma[t] = d.t;
        theta[t] *= d.t_dot;
      }
    }
    void generic(Eigen::Index p1, Eigen::Index p2, double& sigma, double& theta) const {
      const std::size_t i1 = static_cast<std::size_t>(p1), i2 = static_cast<std::size_t>(p2);
      Dual<double> d;
      if (m_use_series) {
        const double r = sigma * m_a.inverse_root[i1] * m_b.inverse_root[i2];
        const double rho = r > 1 ? 1.0 : (r < -1 ? -1.0 : r);
        double a = 0, b = 0;
        for (int k = m_series[0].terms; k-- > 0;) a = a * rho + m_series[0].a_at(i1, k) * m_series[1].a_at(i2, k);
        for (int k = m_series[0].terms_dot; k-- > 0;) b = b * rho + m_series[0].b_at(i1, k) * m_series[1].b_at(i2, k);
        d = {a, b};
      } else {
        const double limit = m_a.root[i1] * m_b.root[i2];
        const double c = std::min(std::max(sigma, -limit), limit);
        const double q1 = m_a.q[i1], q2 = m_b.q[i2];
        const int order =
            m_options.quadrature_order > 0 ? m_options.quadrature_order : adaptive_quadrature_order(std::max(q1, q2));
        d = quadrature_dual(m_phi, Covariance2<double>{q1, c, q2}, gauss_hermite<double>(order));
      }
      sigma = d.t;
      theta *= d.t_dot;
    }

    const Phi& m_phi;
    const ChainLayer &m_a, &m_b;
    DualOptions m_options;
    /// A closed-form activation never compiles the series or quadrature path (ntk::Quadrature<Phi> forces it).
    static constexpr bool closed = has_closed_form_dual_v<Phi, double>;
    bool m_use_series = false;
    std::vector<HermiteSeries<double>> m_series;
  };

  Phi m_phi;
};

}  // namespace detail

/// An elementwise activation in an image architecture: any type with value() and derivative()
/// (closed-form dual used when it has one).
class ImageActivation {
 public:
  template <class Phi, class = std::enable_if_t<is_activation<Phi, double>::value>>
  explicit ImageActivation(Phi phi) : m_model(std::make_shared<detail::ImageActivationModel<Phi>>(std::move(phi))) {}
  template <class Phi>
  explicit ImageActivation(Activation<Phi> layer) : ImageActivation(std::move(layer.phi)) {}
  std::string name() const { return m_model->name(); }
  const detail::ImageActivationBase& model() const { return *m_model; }

 private:
  std::shared_ptr<const detail::ImageActivationBase> m_model;
};

namespace detail {

/// One axis of a window operation: output size and, per output o and tap d, the input index
/// (-1: a padded zero).
struct AxisMap {
  Eigen::Index in = 1, out = 1, taps = 1, stride = 1, pad = 0;
  bool contiguous = true;  // stride 1 and no wrap-around: tap(o, d) = o + d − pad when in range
  std::vector<Eigen::Index> tap;
  Eigen::Index at(Eigen::Index o, Eigen::Index d) const { return tap[static_cast<std::size_t>(o * taps + d)]; }
};

/// One tap d of a convolution along an axis, on a row of Σ and one of Θ: ds[o] += ss[i] and
/// dt[o] += st[i] for every output o whose tap d reads input i (none where it reads padding).
inline void add_tap(const AxisMap& cols, Eigen::Index d, const double* __restrict ss, const double* __restrict st,
                    Eigen::Index in_width, double* __restrict ds, double* __restrict dt) {
  const Eigen::Index out = cols.out;
  if (cols.contiguous) {  // i = o + d − pad
    const Eigen::Index shift = d - cols.pad;
    const Eigen::Index lo = std::max<Eigen::Index>(0, -shift), hi = std::min<Eigen::Index>(out, in_width - shift);
    for (Eigen::Index o = lo; o < hi; ++o) {
      ds[o] += ss[o + shift];
      dt[o] += st[o + shift];
    }
    return;
  }
  for (Eigen::Index o = 0; o < out; ++o) {
    const Eigen::Index i = cols.at(o, d);
    if (i >= 0) {
      ds[o] += ss[i];
      dt[o] += st[i];
    }
  }
}

/// Global average of Σ and Θ over their pixels: each becomes one entry.
inline void average_to_one_pixel(std::vector<double>& sigma, std::vector<double>& theta) {
  double s = 0, t = 0;
  for (std::size_t e = 0; e < sigma.size(); ++e) {
    s += sigma[e];
    t += theta[e];
  }
  const double n = static_cast<double>(sigma.size());
  sigma.assign(1, s / n);
  theta.assign(1, t / n);
}

/// A Conv or Dense step on sums over its k taps (Σ_δ Σ(p+δ, p'+δ) and likewise Θ):
/// Σ' = scale ΣΣ + bias and Θ' = scale ΣΘ + (tw ΣΣ + tb), with scale = σ_w² / k and bias = σ_b².
/// NTK parametrization: tw = scale, tb = bias (the bracket is Σ'); standard: tw = C, the input
/// channels (the fan-in C k times the tap mean), tb = 1 with a bias, 0 without (layers.hpp).
struct Affine {
  double scale = 1, bias = 0, tw = 1, tb = 0;
};

/// The affine step after the taps (n entries of tap sums): Σ' = scale Σ + bias,
/// Θ' = scale Θ + (tw Σ + tb) (Affine).
inline void finish_affine(double* __restrict ds, double* __restrict dt, Eigen::Index n, const Affine& a) {
  for (Eigen::Index o = 0; o < n; ++o) {
    const double x = ds[o];
    ds[o] = a.scale * x + a.bias;
    dt[o] = a.scale * dt[o] + (a.tw * x + a.tb);
  }
}

inline AxisMap axis_map(Eigen::Index in, Eigen::Index taps, Eigen::Index stride, Padding padding) {
  AxisMap m;
  m.in = in;
  m.taps = taps;
  m.stride = stride;
  if (padding == Padding::valid) {
    m.out = (in - taps) / stride + 1;
    m.pad = 0;
  } else {
    m.out = (in + stride - 1) / stride;
    m.pad = std::max<Eigen::Index>((m.out - 1) * stride + taps - in, 0) / 2;
  }
  m.contiguous = stride == 1 && padding != Padding::circular;
  m.tap.resize(static_cast<std::size_t>(m.out * taps));
  for (Eigen::Index o = 0; o < m.out; ++o)
    for (Eigen::Index d = 0; d < taps; ++d) {
      Eigen::Index i = o * stride + d - m.pad;
      if (padding == Padding::circular) i = ((i % in) + in) % in;
      m.tap[static_cast<std::size_t>(o * taps + d)] = (i >= 0 && i < in) ? i : -1;
    }
  return m;
}

/// A layer with its geometry resolved against the shape it receives.
/// Architectures flatten into a list of these; a Residual becomes residual_begin, its branch's
/// layers, residual_end.
struct ResolvedLayer {
  enum class Kind {
    conv,
    dense,
    pool,
    global_pool,
    flatten,
    activation,
    layer_norm,
    residual_begin,
    residual_end
  } kind;
  ImageShape in, out;     // residual_end: in is the branch's output, out the residual's input
  AxisMap rows, columns;  // conv / pool: height and width axes
  double sigma_w = 1, sigma_b = 0;
  Parametrization parametrization = Parametrization::ntk;
  Affine affine;           // conv / dense: the kernel step
  double scale = 1;        // residual_end: α of y = x + α f(x)
  double epsilon = 0;      // layer_norm
  Eigen::Index width = 0;  // conv channels / dense width (finite world)
  const ImageActivationBase* activation = nullptr;
  std::size_t chain = 0;  // activation, layer_norm: index of its variances in a diagonal chain
  std::string label;      // the layer's index in error messages: "3", or "3.1" inside a branch
};

inline const char* kind_name(ResolvedLayer::Kind kind) {
  using K = ResolvedLayer::Kind;
  switch (kind) {
    case K::conv:
      return "conv";
    case K::dense:
      return "dense";
    case K::pool:
      return "avgpool";
    case K::global_pool:
      return "gap";
    case K::flatten:
      return "flatten";
    case K::activation:
      return "activation";
    case K::layer_norm:
      return "layernorm";
    case K::residual_begin:
    case K::residual_end:
      return "residual";
  }
  return "layer";
}

}  // namespace detail

/// LayerNorm over the channels of every pixel, as stax's LayerNorm(axis=-1) (no learned scale or
/// offset): the finite network maps a pixel's channel vector x to (x − mean(x)) / sqrt(var(x) + ε)
/// (biased variance over the channels); the kernel divides Σ(p, p') and Θ(p, p') by
/// sqrt((q(p) + ε)(q'(p') + ε)), q(p) = Σ(x, x)(p, p) at the layer's input.  The mean term vanishes
/// at infinite width only for a zero-mean Gaussian input (after Conv or Dense): as stax, any
/// other input (the network input, an activation's output) is refused.
struct LayerNorm {
  double epsilon = 1e-12;
};

struct Residual;
/// One layer of an image architecture.
using ImageLayer = std::variant<Conv, AvgPool, GlobalAvgPool, Flatten, Dense, ImageActivation, LayerNorm, Residual>;

/// A residual block y = x + α f(x) with f the branch (stax: FanOut(2) >> parallel(f, Identity) >>
/// FanInSum, which is α = 1).  Kernels add: Σ = Σ_x + α² Σ_f(x), Θ = Θ_x + α² Θ_f(x).  The
/// branch must keep the height and width (and, in the finite world, the channels), and as in
/// stax's FanInSum both x and f(x) must be zero-mean Gaussian at infinite width: x and the
/// branch's output come from a Conv or Dense (through pooling, LayerNorm or residual blocks),
/// not from the input or an activation.
struct Residual {
  std::vector<ImageLayer> branch;
  double scale = 1;
};

/// An image architecture: a declared input shape and a list of layers, validated at construction.
class ImageArchitecture {
 public:
  using Layer = ImageLayer;

  /// Throws std::invalid_argument (naming the layer) for a non-positive input shape, filter,
  /// window or stride, a VALID window larger than its input, bad σ's, no layers, an empty or
  /// shape-changing residual branch, or a LayerNorm or residual sum of a non-Gaussian input.
  ImageArchitecture(ImageShape input, std::vector<Layer> layers) : m_input(input), m_layers(std::move(layers)) {
    const char* fn = "ImageArchitecture";
    detail::check_at_least<Eigen::Index>(fn, "input height", input.height, 1);
    detail::check_at_least<Eigen::Index>(fn, "input width", input.width, 1);
    detail::check_at_least<Eigen::Index>(fn, "input channels", input.channels, 1);
    if (m_layers.empty()) detail::fail<std::invalid_argument>(fn, "architecture has no layers (got 0)");
    ImageShape shape = input;
    bool gaussian = false;  // the input is not a zero-mean Gaussian
    resolve(m_layers, "", shape, gaussian);
    m_output = shape;
    // Covariance lines: up to the first GlobalAvgPool or Flatten only stride-1, non-circular
    // convolutions, dense layers and activations (a LayerNorm or residual block before the
    // readout pooling sends the architecture to the matching-pixel or full engine).
    for (std::size_t l = 0; l < m_resolved.size(); ++l) {
      const auto& r = m_resolved[l];
      using K = detail::ResolvedLayer::Kind;
      if (r.kind == K::activation || r.kind == K::dense) continue;
      if (r.kind == K::conv && r.rows.contiguous && r.columns.contiguous) {
        m_line_columns = std::max({m_line_columns, r.columns.pad, r.columns.taps - 1 - r.columns.pad});
        m_line_rows = std::max({m_line_rows, r.rows.pad, r.rows.taps - 1 - r.rows.pad});
        continue;
      }
      if (r.kind == K::global_pool || r.kind == K::flatten) m_line_split = l;
      break;
    }
    m_line_stride = (input.width + 2 * m_line_columns + 7) / 8 * 8;
  }

  /// Geometry of the padded covariance lines: row stride, margin columns, margin rows.
  Eigen::Index line_stride() const { return m_line_stride; }
  Eigen::Index line_columns() const { return m_line_columns; }
  Eigen::Index line_rows() const { return m_line_rows; }
  /// The GlobalAvgPool or Flatten that ends a prefix whose pixel-pair covariances separate into
  /// lines of constant pixel offset (see ImagePairEngine::run_lines), or npos.
  std::size_t line_split() const { return m_line_split; }
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  /// The shape of the output.  image_kernel and ImageNetwork need one pixel (end with
  /// GlobalAvgPool or Flatten, then Dense); pixel_kernels takes any.
  const ImageShape& output_shape() const { return m_output; }
  /// Throws std::invalid_argument unless the output is one pixel.
  void check_flat(const char* function) const {
    if (m_output.pixels() != 1)
      detail::fail<std::invalid_argument>(function,
                                          "the architecture's output must be one pixel: end with "
                                          "GlobalAvgPool or Flatten, then Dense (got ",
                                          m_output.height, "x", m_output.width, ")");
  }

  const ImageShape& input_shape() const { return m_input; }
  const std::vector<Layer>& layers() const { return m_layers; }
  std::size_t size() const { return m_layers.size(); }
  /// True when some layer pools pixels (AvgPool, GlobalAvgPool over more than one pixel): the
  /// kernel then needs every pixel pair; otherwise only matching pixels.
  bool needs_pixel_pairs() const { return m_pooling; }
  const std::vector<detail::ResolvedLayer>& resolved() const { return m_resolved; }
  /// The number of per-image variance layers (activations and LayerNorms).
  std::size_t activation_count() const { return m_activations; }

 private:
  /// Appends the resolved form of `layers` (labels prefix + index) from `shape`, updating it and
  /// whether the current values are zero-mean Gaussian at infinite width (stax's is_gaussian).
  void resolve(const std::vector<Layer>& layers, const std::string& prefix, ImageShape& shape, bool& gaussian) {
    const char* fn = "ImageArchitecture";
    for (std::size_t l = 0; l < layers.size(); ++l) {
      detail::ResolvedLayer r;
      r.in = shape;
      r.label = prefix + std::to_string(l);
      const std::string where = "layer " + r.label + " ";
      const auto window = [&](Eigen::Index fh, Eigen::Index fw, Eigen::Index sh, Eigen::Index sw, Padding padding,
                              const char* what) {
        if (fh < 1 || fw < 1)
          detail::fail<std::invalid_argument>(fn, where, "(", what, "): window must be at least 1x1 (got ", fh, "x", fw,
                                              ")");
        if (sh < 1 || sw < 1)
          detail::fail<std::invalid_argument>(fn, where, "(", what, "): stride must be at least 1 (got ", sh, "x", sw,
                                              ")");
        if (padding == Padding::valid && (fh > shape.height || fw > shape.width))
          detail::fail<std::invalid_argument>(fn, where, "(", what, "): VALID window ", fh, "x", fw,
                                              " is larger than its input ", shape.height, "x", shape.width);
        r.rows = detail::axis_map(shape.height, fh, sh, padding);
        r.columns = detail::axis_map(shape.width, fw, sw, padding);
      };
      // Conv and Dense: the kernel step's coefficients (Affine), after the geometry is set.
      const auto affine = [&](double sigma_w, double sigma_b, Parametrization parametrization, const char* what) {
        r.parametrization = parametrization;
        r.affine.scale = sigma_w * sigma_w / static_cast<double>(r.rows.taps * r.columns.taps);
        r.affine.bias = sigma_b * sigma_b;
        r.affine.tw = r.affine.scale;
        r.affine.tb = r.affine.bias;
        if (parametrization == Parametrization::standard) {
          if (!m_channels_known)
            detail::fail<std::invalid_argument>(
                fn, where, "(", what,
                ", standard parametrization): its NTK scales with its fan-in, so the Conv or Dense before it needs "
                "its channels or width (got 0)");
          r.affine.tw = static_cast<double>(r.in.channels);
          r.affine.tb = sigma_b > 0 ? 1 : 0;
        }
      };
      const Layer& layer = layers[l];
      if (const auto* conv = std::get_if<Conv>(&layer)) {
        r.kind = detail::ResolvedLayer::Kind::conv;
        window(conv->filter_height, conv->filter_width, conv->stride_height, conv->stride_width, conv->padding, "conv");
        detail::check_positive(fn, "Conv sigma_w", conv->sigma_w);
        detail::check_nonnegative(fn, "Conv sigma_b", conv->sigma_b);
        detail::check_at_least<Eigen::Index>(fn, "Conv channels", conv->channels, 0);
        r.sigma_w = conv->sigma_w;
        r.sigma_b = conv->sigma_b;
        r.width = conv->channels;
        affine(conv->sigma_w, conv->sigma_b, conv->parametrization, "conv");
        shape = {r.rows.out, r.columns.out, std::max<Eigen::Index>(conv->channels, 1)};
        m_channels_known = conv->channels > 0;
        gaussian = true;
      } else if (const auto* pool = std::get_if<AvgPool>(&layer)) {
        r.kind = detail::ResolvedLayer::Kind::pool;
        const Eigen::Index sh = pool->stride_height > 0 ? pool->stride_height : pool->window_height;
        const Eigen::Index sw = pool->stride_width > 0 ? pool->stride_width : pool->window_width;
        if (pool->stride_height < 0 || pool->stride_width < 0)
          detail::fail<std::invalid_argument>(fn, where,
                                              "(avgpool): stride must be at least 1, or 0 for the window (got ",
                                              pool->stride_height, "x", pool->stride_width, ")");
        window(pool->window_height, pool->window_width, sh, sw, pool->padding, "avgpool");
        shape = {r.rows.out, r.columns.out, shape.channels};
        m_pooling = true;
      } else if (std::holds_alternative<GlobalAvgPool>(layer)) {
        r.kind = detail::ResolvedLayer::Kind::global_pool;
        shape = {1, 1, shape.channels};
        if (r.in.pixels() > 1) m_pooling = true;
      } else if (std::holds_alternative<Flatten>(layer)) {
        r.kind = detail::ResolvedLayer::Kind::flatten;
        shape = {1, 1, shape.size()};
      } else if (const auto* dense = std::get_if<Dense>(&layer)) {
        r.kind = detail::ResolvedLayer::Kind::dense;
        dense->check(fn);
        r.sigma_w = dense->sigma_w;
        r.sigma_b = dense->sigma_b;
        r.width = dense->width;
        r.rows = detail::axis_map(shape.height, 1, 1, Padding::valid);
        r.columns = detail::axis_map(shape.width, 1, 1, Padding::valid);
        affine(dense->sigma_w, dense->sigma_b, dense->parametrization, "dense");
        shape = {shape.height, shape.width, std::max<Eigen::Index>(dense->width, 1)};
        m_channels_known = dense->width > 0;
        gaussian = true;
      } else if (const auto* norm = std::get_if<LayerNorm>(&layer)) {
        r.kind = detail::ResolvedLayer::Kind::layer_norm;
        if (!(norm->epsilon >= 0) || !std::isfinite(norm->epsilon))
          detail::fail<std::invalid_argument>(fn, where, "(layernorm): epsilon must be finite and >= 0 (got ",
                                              norm->epsilon, ")");
        if (!gaussian)
          detail::fail<std::invalid_argument>(
              fn, where,
              "(layernorm): LayerNorm needs a zero-mean Gaussian input (after a Conv or Dense), not the network "
              "input or an activation's output: as in stax, the channel mean does not vanish there and the kernel "
              "of (x - mean) / std has no closed form");
        r.epsilon = norm->epsilon;
        r.chain = m_activations++;
      } else if (const auto* res = std::get_if<Residual>(&layer)) {
        if (res->branch.empty())
          detail::fail<std::invalid_argument>(fn, where,
                                              "(residual): empty branch (y = x + a f(x) needs a layer in f)");
        if (!std::isfinite(res->scale))
          detail::fail<std::invalid_argument>(fn, where, "(residual): scale must be finite (got ", res->scale, ")");
        if (!gaussian)
          detail::fail<std::invalid_argument>(
              fn, where,
              "(residual): the residual's input must be zero-mean Gaussian (after a Conv or Dense), not the network "
              "input or an activation's output; as stax's FanInSum, the sum's kernel needs both terms Gaussian");
        r.kind = detail::ResolvedLayer::Kind::residual_begin;
        r.out = shape;
        m_resolved.push_back(r);
        const std::size_t first = m_resolved.size();
        ImageShape branch_shape = shape;
        bool branch_gaussian = gaussian;
        const bool channels_known = m_channels_known;
        resolve(res->branch, r.label + ".", branch_shape, branch_gaussian);
        m_channels_known = channels_known;  // y = x + a f(x) has x's channels
        if (branch_shape.height != shape.height || branch_shape.width != shape.width) {
          std::size_t culprit = first;
          while (culprit + 1 < m_resolved.size() && m_resolved[culprit].out.height == shape.height &&
                 m_resolved[culprit].out.width == shape.width)
            ++culprit;
          const auto& c = m_resolved[culprit];
          detail::fail<std::invalid_argument>(fn, where, "(residual): branch layer ", c.label, " (",
                                              detail::kind_name(c.kind), ") changes ", shape.height, "x", shape.width,
                                              " to ", c.out.height, "x", c.out.width,
                                              "; a residual branch must keep its input's height and width");
        }
        if (!branch_gaussian)
          detail::fail<std::invalid_argument>(
              fn, where,
              "(residual): the branch must end with a zero-mean Gaussian output (a Conv or Dense, possibly followed by "
              "pooling or LayerNorm), not an activation; as stax's FanInSum, the sum's kernel needs both terms "
              "Gaussian");
        detail::ResolvedLayer end;
        end.kind = detail::ResolvedLayer::Kind::residual_end;
        end.in = branch_shape;
        end.out = shape;
        end.scale = res->scale;
        end.label = r.label;
        m_resolved.push_back(end);
        continue;
      } else {
        r.kind = detail::ResolvedLayer::Kind::activation;
        r.activation = &std::get<ImageActivation>(layer).model();
        r.chain = m_activations++;
        gaussian = false;
      }
      r.out = shape;
      m_resolved.push_back(r);
    }
  }

  ImageShape m_input, m_output;
  std::vector<Layer> m_layers;
  std::vector<detail::ResolvedLayer> m_resolved;
  bool m_pooling = false;
  bool m_channels_known = true;  // while resolving: the current channel count is a real width
  std::size_t m_activations = 0;
  std::size_t m_line_split = npos;
  Eigen::Index m_line_stride = 8, m_line_columns = 1, m_line_rows = 1;
};

namespace detail {
template <class T>
ImageArchitecture::Layer to_image_layer(T layer) {
  if constexpr (is_activation_layer<T>::value) {
    return ImageActivation(std::move(layer));
  } else {
    return ImageArchitecture::Layer(std::move(layer));
  }
}
}  // namespace detail

/// Compile-time composition: image_serial(shape, Conv{...}, activation(Relu{}), ..., Dense(...)).
template <class... Layers>
ImageArchitecture image_serial(ImageShape input, Layers... layers) {
  return ImageArchitecture(input, std::vector<ImageArchitecture::Layer>{detail::to_image_layer(std::move(layers))...});
}

/// A residual block y = x + f(x) (stax's FanInSum) from the branch's layers: residual(Conv{...},
/// activation(Relu{}), Conv{...}).
template <class... Layers>
Residual residual(Layers... layers) {
  return Residual{std::vector<ImageLayer>{detail::to_image_layer(std::move(layers))...}, 1.0};
}

/// y = x + α f(x): kernels Σ_x + α² Σ_f, Θ_x + α² Θ_f.
template <class... Layers>
Residual scaled_residual(double scale, Layers... layers) {
  return Residual{std::vector<ImageLayer>{detail::to_image_layer(std::move(layers))...}, scale};
}

/// Options of image kernels.
struct ImageKernelOptions {
  DualOptions dual{};
  /// OpenMP threads over pairs of images; 0 uses the OpenMP default; at most max_threads().
  int threads = 0;
  void check(const char* function) const {
    dual.check(function);
    detail::check_threads(function, threads);
  }
};

namespace detail {

using RowMajorMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// The covariance recursion for one pair of images, with buffers reused across pairs.
/// A Conv or Dense followed by an activation is one pass: each output block (or pixel row) goes
/// through the activation's dual while it is in cache.
class ImagePairEngine {
 public:
  ImagePairEngine(const ImageArchitecture& arch, const DualOptions& options) : m_arch(arch), m_options(options) {}

  /// Runs the recursion for images a and b (rows of H·W·C).  When `record` is not null (a = b)
  /// the variances at each activation are recorded there; chain_a / chain_b are read otherwise.
  /// Returns (Σ, Θ) of the output's first pixel pair.
  Dual<double> run(const double* a, const double* b, const ImageChain* chain_a, const ImageChain* chain_b,
                   ImageChain* record) {
    if (m_arch.line_split() != ImageArchitecture::npos) return run_lines(a, b, chain_a, chain_b, record);
    if (!m_arch.needs_pixel_pairs()) return run_diagonal(a, b, chain_a, chain_b, record);
    return run_full(a, b, chain_a, chain_b, record);
  }

  /// Every pixel pair whatever the architecture; the output covariances stay in sigma()/theta()
  /// in the [h1][h2][w1][w2] layout.
  Dual<double> run_full(const double* a, const double* b, const ImageChain* chain_a, const ImageChain* chain_b,
                        ImageChain* record) {
    const ImageShape& s0 = m_arch.input_shape();
    Eigen::Index H = s0.height, W = s0.width;
    const Eigen::Index C = s0.channels, P = H * W;
    m_sigma.resize(static_cast<std::size_t>(P * P));
    const double inv_c = 1.0 / static_cast<double>(C);
    // Block (h1, h2) is rows h1 of a times rows h2 of b: x(h1, w1, :) · x'(h2, w2, :) / C.
    for (Eigen::Index h1 = 0; h1 < H; ++h1)
      for (Eigen::Index h2 = 0; h2 < H; ++h2) {
        double* block = m_sigma.data() + (h1 * H + h2) * W * W;
        for (Eigen::Index w1 = 0; w1 < W; ++w1) {
          const double* u = a + (h1 * W + w1) * C;
          for (Eigen::Index w2 = 0; w2 < W; ++w2) {
            const double* v = b + (h2 * W + w2) * C;
            double dot = 0;
            for (Eigen::Index c = 0; c < C; ++c) dot += u[c] * v[c];
            block[w1 * W + w2] = dot * inv_c;
          }
        }
      }
    m_theta.assign(m_sigma.size(), 0.0);
    const auto& layers = m_arch.resolved();
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const ResolvedLayer& layer = layers[l];
      switch (layer.kind) {
        case Kind::conv:
        case Kind::dense: {
          std::unique_ptr<ActivationStep> step;
          if (record == nullptr && l + 1 < layers.size() && layers[l + 1].kind == Kind::activation) {
            const std::size_t c = layers[l + 1].chain;
            step = layers[l + 1].activation->prepare(chain_a->layers[c], chain_b->layers[c], m_options);
          }
          conv_full(layer, H, W, step.get());
          H = layer.out.height;
          W = layer.out.width;
          if (step) ++l;  // the activation was applied block by block
          break;
        }
        case Kind::pool:
          pool(m_sigma, H, W, layer.rows, layer.columns);
          pool(m_theta, H, W, layer.rows, layer.columns);
          H = layer.out.height;
          W = layer.out.width;
          break;
        case Kind::global_pool: {
          average_to_one_pixel(m_sigma, m_theta);
          H = W = 1;
          break;
        }
        case Kind::flatten: {
          double s = 0, t = 0;
          for (Eigen::Index h = 0; h < H; ++h)
            for (Eigen::Index w = 0; w < W; ++w) {
              const std::size_t e = static_cast<std::size_t>(((h * H + h) * W + w) * W + w);
              s += m_sigma[e];
              t += m_theta[e];
            }
          const double n = static_cast<double>(H * W);
          m_sigma.assign(1, s / n);
          m_theta.assign(1, t / n);
          H = W = 1;
          break;
        }
        case Kind::activation: {
          if (record != nullptr) record_full(H, W, record);
          const ChainLayer& ca = record != nullptr ? record->layers.back() : chain_a->layers[layer.chain];
          const ChainLayer& cb = record != nullptr ? record->layers.back() : chain_b->layers[layer.chain];
          const std::unique_ptr<ActivationStep> step = layer.activation->prepare(ca, cb, m_options);
          for (Eigen::Index h1 = 0; h1 < H; ++h1)
            for (Eigen::Index h2 = 0; h2 < H; ++h2) {
              const std::size_t base = static_cast<std::size_t>((h1 * H + h2) * W * W);
              step->block(h1, h2, W, m_sigma.data() + base, m_theta.data() + base);
            }
          break;
        }
        case Kind::layer_norm: {
          if (record != nullptr) record_full(H, W, record);
          const ChainLayer& ca = record != nullptr ? record->layers.back() : chain_a->layers[layer.chain];
          const ChainLayer& cb = record != nullptr ? record->layers.back() : chain_b->layers[layer.chain];
          const double eps = layer.epsilon;
          for (Eigen::Index h1 = 0; h1 < H; ++h1)
            for (Eigen::Index h2 = 0; h2 < H; ++h2)
              for (Eigen::Index w1 = 0; w1 < W; ++w1) {
                const double qa = ca.q[static_cast<std::size_t>(h1 * W + w1)] + eps;
                const std::size_t base = static_cast<std::size_t>(((h1 * H + h2) * W + w1) * W);
                for (Eigen::Index w2 = 0; w2 < W; ++w2) {
                  const double f = 1 / std::sqrt(qa * (cb.q[static_cast<std::size_t>(h2 * W + w2)] + eps));
                  m_sigma[base + static_cast<std::size_t>(w2)] *= f;
                  m_theta[base + static_cast<std::size_t>(w2)] *= f;
                }
              }
          break;
        }
        case Kind::residual_begin:
          m_saved.emplace_back(m_sigma, m_theta);
          break;
        case Kind::residual_end:
          add_residual(layer.scale);
          break;
      }
    }
    return {m_sigma[0], m_theta[0]};
  }

  const std::vector<double>& sigma() const { return m_sigma; }
  const std::vector<double>& theta() const { return m_theta; }

 private:
  using Kind = ResolvedLayer::Kind;

  /// Records the variances q(p) = Σ(p, p) of a full [H][H][W][W] covariance (a = b) as the next chain layer.
  void record_full(Eigen::Index H, Eigen::Index W, ImageChain* record) const {
    ChainLayer q;
    q.q.resize(static_cast<std::size_t>(H * W));
    for (Eigen::Index h = 0; h < H; ++h)
      for (Eigen::Index w = 0; w < W; ++w)
        q.q[static_cast<std::size_t>(h * W + w)] = m_sigma[static_cast<std::size_t>(((h * H + h) * W + w) * W + w)];
    q.finish();
    record->layers.push_back(std::move(q));
  }

  /// End of a residual block: (Σ, Θ) = saved + α² (Σ, Θ) (same layout: the branch keeps the shape).
  void add_residual(double scale) {
    const double a2 = scale * scale;
    const std::vector<double>& s = m_saved.back().first;
    const std::vector<double>& t = m_saved.back().second;
    for (std::size_t e = 0; e < m_sigma.size(); ++e) {
      m_sigma[e] = s[e] + a2 * m_sigma[e];
      m_theta[e] = t[e] + a2 * m_theta[e];
    }
    m_saved.pop_back();
  }

  /// Conv (or per-pixel Dense) on [H][H][W][W] covariances: for each output block (o1, o2) the
  /// height taps are summed into a W x W block in cache, then the width taps into the output;
  /// Σ' = scale A(Σ) + bias, Θ' = scale A(Θ) + Σ', then the fused activation if any.  Blocks are
  /// visited along diagonals o2 − o1 = const, where consecutive blocks share input blocks.
  void conv_full(const ResolvedLayer& layer, Eigen::Index H, Eigen::Index W, const ActivationStep* post) {
    const AxisMap &rows = layer.rows, &cols = layer.columns;
    const Eigen::Index Ho = rows.out, Wo = cols.out, block_in = W * W, block_out = Wo * Wo;
    const Affine affine = layer.affine;
    m_next_sigma.resize(static_cast<std::size_t>(Ho * Ho * block_out));
    m_next_theta.resize(m_next_sigma.size());
    // Width taps read a local block whose rows are padded with zeros (contiguous case): row
    // length Wo + taps − 1, data at offset pad, so every tap is an unguarded shifted stream.
    const bool padded = cols.contiguous;
    const Eigen::Index stride = padded ? Wo + cols.taps - 1 : W, offset = padded ? cols.pad : 0;
    m_local_sigma.assign(static_cast<std::size_t>(W * stride), 0.0);
    m_local_theta.assign(static_cast<std::size_t>(W * stride), 0.0);
    m_sources_s.resize(static_cast<std::size_t>(rows.taps));
    m_sources_t.resize(static_cast<std::size_t>(rows.taps));
    m_rows_s.resize(static_cast<std::size_t>(cols.taps));
    m_rows_t.resize(static_cast<std::size_t>(cols.taps));
    const double** sources_s = m_sources_s.data();
    const double** sources_t = m_sources_t.data();
    for (Eigen::Index diagonal = -(Ho - 1); diagonal <= Ho - 1; ++diagonal)
      for (Eigen::Index o1 = std::max<Eigen::Index>(0, -diagonal); o1 < std::min(Ho, Ho - diagonal); ++o1) {
        const Eigen::Index o2 = o1 + diagonal;
        int count = 0;
        for (Eigen::Index d = 0; d < rows.taps; ++d) {
          const Eigen::Index i1 = rows.at(o1, d), i2 = rows.at(o2, d);
          if (i1 < 0 || i2 < 0) continue;
          sources_s[count] = m_sigma.data() + (i1 * H + i2) * block_in;
          sources_t[count] = m_theta.data() + (i1 * H + i2) * block_in;
          ++count;
        }
        sum_blocks(sources_s, sources_t, count, W, stride, offset);
        double* out_s = m_next_sigma.data() + (o1 * Ho + o2) * block_out;
        double* out_t = m_next_theta.data() + (o1 * Ho + o2) * block_out;
        if (padded) {
          width_pass_padded(m_local_sigma.data(), m_local_theta.data(), stride, cols, affine, out_s, out_t);
        } else {
          width_pass(m_local_sigma.data(), m_local_theta.data(), W, cols, affine, out_s, out_t);
        }
        if (post != nullptr) post->block(o1, o2, Wo, out_s, out_t);
      }
    m_sigma.swap(m_next_sigma);
    m_theta.swap(m_next_theta);
  }

  /// local(w1, offset + w2) = Σ_k source_k(w1, w2) for W x W sources (row stride `stride`).
  void sum_blocks(const double* const* ss, const double* const* st, int count, Eigen::Index W, Eigen::Index stride,
                  Eigen::Index offset) {
    for (Eigen::Index w1 = 0; w1 < W; ++w1) {
      double* __restrict ls = m_local_sigma.data() + w1 * stride + offset;
      double* __restrict lt = m_local_theta.data() + w1 * stride + offset;
      const Eigen::Index r = w1 * W;
      if (count == 0) {
        std::fill(ls, ls + W, 0.0);
        std::fill(lt, lt + W, 0.0);
      } else if (count == 3) {
        sum3(ss[0] + r, ss[1] + r, ss[2] + r, ls, W);
        sum3(st[0] + r, st[1] + r, st[2] + r, lt, W);
      } else {
        sum_rows(ss, r, count, ls, W);
        sum_rows(st, r, count, lt, W);
      }
    }
  }

  static void sum3(const double* __restrict a, const double* __restrict b, const double* __restrict c,
                   double* __restrict out, Eigen::Index n) {
    for (Eigen::Index w = 0; w < n; ++w) out[w] = a[w] + b[w] + c[w];
  }
  static void sum_rows(const double* const* sources, Eigen::Index r, int count, double* __restrict out,
                       Eigen::Index n) {
    const double* __restrict first = sources[0] + r;
    for (Eigen::Index w = 0; w < n; ++w) out[w] = first[w];
    for (int k = 1; k < count; ++k) {
      const double* __restrict src = sources[k] + r;
      for (Eigen::Index w = 0; w < n; ++w) out[w] += src[w];
    }
  }

  /// The contiguous width pass on a padded local block: out(o1, o2) = scale Σ_{d valid for o1}
  /// local(o1 + d − pad, o2 + d) + bias, and Θ likewise plus Σ'.
  void width_pass_padded(const double* __restrict in_s, const double* __restrict in_t, Eigen::Index stride,
                         const AxisMap& cols, const Affine& affine, double* __restrict out_s,
                         double* __restrict out_t) {
    const Eigen::Index Wo = cols.out;
    const double scale = affine.scale, bias = affine.bias, tw = affine.tw, tb = affine.tb;
    const double** rs = m_rows_s.data();
    const double** rt = m_rows_t.data();
    for (Eigen::Index o1 = 0; o1 < Wo; ++o1) {
      double* __restrict ds = out_s + o1 * Wo;
      double* __restrict dt = out_t + o1 * Wo;
      int count = 0;
      for (Eigen::Index d = 0; d < cols.taps; ++d) {
        const Eigen::Index i1 = cols.at(o1, d);
        if (i1 < 0) continue;
        rs[count] = in_s + i1 * stride + d;
        rt[count] = in_t + i1 * stride + d;
        ++count;
      }
      if (count == 3) {
        const double *a = rs[0], *b = rs[1], *c = rs[2], *x = rt[0], *y = rt[1], *z = rt[2];
        for (Eigen::Index o2 = 0; o2 < Wo; ++o2) {
          const double sum = a[o2] + b[o2] + c[o2];
          ds[o2] = scale * sum + bias;
          dt[o2] = scale * (x[o2] + y[o2] + z[o2]) + (tw * sum + tb);
        }
      } else {
        for (Eigen::Index o2 = 0; o2 < Wo; ++o2) {
          double sv = 0, tv = 0;
          for (int k = 0; k < count; ++k) {
            sv += rs[k][o2];
            tv += rt[k][o2];
          }
          ds[o2] = scale * sv + bias;
          dt[o2] = scale * tv + (tw * sv + tb);
        }
      }
    }
  }

  /// out(ow1, ow2) = scale Σ_d in(tap(ow1, d), tap(ow2, d)) + bias (Σ), scale Σ_d ... + Σ' (Θ).
  static void width_pass(const double* __restrict in_s, const double* __restrict in_t, Eigen::Index W,
                         const AxisMap& cols, const Affine& affine, double* __restrict out_s,
                         double* __restrict out_t) {
    const Eigen::Index Wo = cols.out;
    for (Eigen::Index o1 = 0; o1 < Wo; ++o1) {
      double* __restrict ds = out_s + o1 * Wo;
      double* __restrict dt = out_t + o1 * Wo;
      std::fill(ds, ds + Wo, 0.0);
      std::fill(dt, dt + Wo, 0.0);
      for (Eigen::Index d = 0; d < cols.taps; ++d) {
        const Eigen::Index i1 = cols.at(o1, d);
        if (i1 < 0) continue;
        add_tap(cols, d, in_s + i1 * W, in_t + i1 * W, W, ds, dt);
      }
      finish_affine(ds, dt, Wo, affine);
    }
  }

  /// AvgPool on a [H][H][W][W] tensor: M ⊗ M along each axis pair.
  void pool(std::vector<double>& t, Eigen::Index H, Eigen::Index W, const AxisMap& rows, const AxisMap& cols) {
    const Eigen::Index Ho = rows.out, Wo = cols.out;
    const double rk = 1.0 / static_cast<double>(rows.taps), ck = 1.0 / static_cast<double>(cols.taps);
    // First image's height index, then the second's (blocks of W x W).
    const Eigen::Index block = W * W;
    m_buffer.assign(static_cast<std::size_t>(Ho * H * block), 0.0);
    for (Eigen::Index o1 = 0; o1 < Ho; ++o1)
      for (Eigen::Index d = 0; d < rows.taps; ++d) {
        const Eigen::Index i1 = rows.at(o1, d);
        if (i1 < 0) continue;
        for (Eigen::Index h2 = 0; h2 < H; ++h2) {
          const double* src = t.data() + (i1 * H + h2) * block;
          double* dst = m_buffer.data() + (o1 * H + h2) * block;
          for (Eigen::Index e = 0; e < block; ++e) dst[e] += rk * src[e];
        }
      }
    t.assign(static_cast<std::size_t>(Ho * Ho * block), 0.0);
    for (Eigen::Index o1 = 0; o1 < Ho; ++o1)
      for (Eigen::Index o2 = 0; o2 < Ho; ++o2)
        for (Eigen::Index d = 0; d < rows.taps; ++d) {
          const Eigen::Index i2 = rows.at(o2, d);
          if (i2 < 0) continue;
          const double* src = m_buffer.data() + (o1 * H + i2) * block;
          double* dst = t.data() + (o1 * Ho + o2) * block;
          for (Eigen::Index e = 0; e < block; ++e) dst[e] += rk * src[e];
        }
    // Width: rows of each block, then columns.
    const Eigen::Index blocks = Ho * Ho;
    m_buffer.assign(static_cast<std::size_t>(blocks * Wo * W), 0.0);
    for (Eigen::Index b = 0; b < blocks; ++b)
      for (Eigen::Index o1 = 0; o1 < Wo; ++o1)
        for (Eigen::Index d = 0; d < cols.taps; ++d) {
          const Eigen::Index i1 = cols.at(o1, d);
          if (i1 < 0) continue;
          const double* src = t.data() + (b * W + i1) * W;
          double* dst = m_buffer.data() + (b * Wo + o1) * W;
          for (Eigen::Index w2 = 0; w2 < W; ++w2) dst[w2] += ck * src[w2];
        }
    t.assign(static_cast<std::size_t>(blocks * Wo * Wo), 0.0);
    for (Eigen::Index b = 0; b < blocks; ++b)
      for (Eigen::Index o1 = 0; o1 < Wo; ++o1) {
        const double* src = m_buffer.data() + (b * Wo + o1) * W;
        double* dst = t.data() + (b * Wo + o1) * Wo;
        for (Eigen::Index o2 = 0; o2 < Wo; ++o2)
          for (Eigen::Index d = 0; d < cols.taps; ++d) {
            const Eigen::Index i2 = cols.at(o2, d);
            if (i2 >= 0) dst[o2] += ck * src[i2];
          }
      }
  }

  // ---- matching pixels only (no pooling): vectors over p ----
  Dual<double> run_diagonal(const double* a, const double* b, const ImageChain* chain_a, const ImageChain* chain_b,
                            ImageChain* record) {
    const ImageShape& s0 = m_arch.input_shape();
    Eigen::Index H = s0.height, W = s0.width;
    start_diagonal(a, b);
    diagonal_layers(0, m_arch.resolved().size(), H, W, chain_a, chain_b, record);
    return {m_sigma[0], m_theta[0]};
  }

  /// Σ⁰(p, p) = x(p)·x'(p) / C, Θ⁰ = 0.
  void start_diagonal(const double* a, const double* b) {
    const ImageShape& s0 = m_arch.input_shape();
    const Eigen::Index C = s0.channels, P = s0.pixels();
    m_sigma.resize(static_cast<std::size_t>(P));
    const double inv_c = 1.0 / static_cast<double>(C);
    for (Eigen::Index p = 0; p < P; ++p) {
      double s = 0;
      for (Eigen::Index c = 0; c < C; ++c) s += a[p * C + c] * b[p * C + c];
      m_sigma[static_cast<std::size_t>(p)] = s * inv_c;
    }
    m_theta.assign(m_sigma.size(), 0.0);
  }

  /// Layers [from, to) on matching-pixel vectors (no pooling of more than one pixel among them).
  void diagonal_layers(std::size_t from, std::size_t to, Eigen::Index& H, Eigen::Index& W, const ImageChain* chain_a,
                       const ImageChain* chain_b, ImageChain* record) {
    const auto& layers = m_arch.resolved();
    for (std::size_t l = from; l < to; ++l) {
      const ResolvedLayer& layer = layers[l];
      switch (layer.kind) {
        case Kind::conv:
        case Kind::dense: {
          std::unique_ptr<ActivationStep> step;
          if (record == nullptr && l + 1 < to && layers[l + 1].kind == Kind::activation) {
            const std::size_t c = layers[l + 1].chain;
            step = layers[l + 1].activation->prepare(chain_a->layers[c], chain_b->layers[c], m_options);
          }
          conv_diagonal(layer, W, step.get());
          H = layer.out.height;
          W = layer.out.width;
          if (step) ++l;
          break;
        }
        case Kind::global_pool:  // over one pixel here
        case Kind::pool:         // unreachable: pooling selects another mode
          break;
        case Kind::flatten: {
          average_to_one_pixel(m_sigma, m_theta);
          H = W = 1;
          break;
        }
        case Kind::activation:
        case Kind::layer_norm: {
          if (record != nullptr) {
            ChainLayer q;
            q.q = m_sigma;
            q.finish();
            record->layers.push_back(std::move(q));
          }
          const ChainLayer& ca = record != nullptr ? record->layers.back() : chain_a->layers[layer.chain];
          const ChainLayer& cb = record != nullptr ? record->layers.back() : chain_b->layers[layer.chain];
          if (layer.kind == Kind::activation) {
            layer.activation->prepare(ca, cb, m_options)->diagonal(H * W, m_sigma.data(), m_theta.data());
          } else {
            for (std::size_t p = 0; p < m_sigma.size(); ++p) {
              const double f = 1 / std::sqrt((ca.q[p] + layer.epsilon) * (cb.q[p] + layer.epsilon));
              m_sigma[p] *= f;
              m_theta[p] *= f;
            }
          }
          break;
        }
        case Kind::residual_begin:
          m_saved.emplace_back(m_sigma, m_theta);
          break;
        case Kind::residual_end:
          add_residual(layer.scale);
          break;
      }
    }
  }

  // ---- lines of constant pixel offset (stride-1 convolutions, then GlobalAvgPool or Flatten) ----
  /// Before the first pooling, entry (p, p') of a stride-1 convolution depends only on entries
  /// with the same offset p' − p: the P x P' covariances separate into (2H − 1)(2W − 1) lines,
  /// each an image of (H − |δh|) x (W − |δw|) entries that goes through every layer up to the
  /// GlobalAvgPool while it stays in L1 cache; the pooled value is the sum over all lines.  A
  /// Flatten needs the line δ = 0 only.  A line is stored with zero margins (rows of stride S,
  /// see ImageArchitecture::line_stride) so a convolution is shifted whole-row streams and an
  /// activation one vector loop over the line; a column mask re-zeroes the margins.
  Dual<double> run_lines(const double* a, const double* b, const ImageChain* chain_a, const ImageChain* chain_b,
                         ImageChain* record) {
    const auto& layers = m_arch.resolved();
    const std::size_t split = m_arch.line_split();
    const bool global = layers[split].kind == Kind::global_pool;
    const ImageShape& s0 = m_arch.input_shape();
    const Eigen::Index H = s0.height, W = s0.width, C = s0.channels;
    const Eigen::Index S = m_arch.line_stride(), M = m_arch.line_columns(), R = m_arch.line_rows();
    if (record != nullptr) {  // the variances before the pooling come from matching pixels
      Eigen::Index h = H, w = W;
      start_diagonal(a, a);
      diagonal_layers(0, split, h, w, nullptr, nullptr, record);
      for (std::size_t l = 0; l < split; ++l)
        if (layers[l].kind == Kind::activation)
          record->layers[layers[l].chain].pad(layers[l].in.height, layers[l].in.width, S, M, R);
      chain_a = chain_b = record;
    }
    m_steps.resize(m_arch.activation_count());
    for (std::size_t l = 0; l < split; ++l)
      if (layers[l].kind == Kind::activation) {
        const std::size_t c = layers[l].chain;
        m_steps[c] = layers[l].activation->prepare(chain_a->layers[c], chain_b->layers[c], m_options);
      }
    if (global) return run_block_lines(a, b, chain_a, chain_b, record);
    const double inv_c = 1.0 / static_cast<double>(C);
    const std::size_t size = static_cast<std::size_t>((H + 2 * R + 2) * S);
    m_mask.resize(static_cast<std::size_t>(S));
    double total_s = 0, total_t = 0;
    const Eigen::Index reach_h = global ? H - 1 : 0, reach_w = global ? W - 1 : 0;
    for (Eigen::Index dh = -reach_h; dh <= reach_h; ++dh)
      for (Eigen::Index dw = -reach_w; dw <= reach_w; ++dw) {
        const Eigen::Index h1 = std::max<Eigen::Index>(0, -dh), h2 = std::max<Eigen::Index>(0, dh);
        const Eigen::Index w1 = std::max<Eigen::Index>(0, -dw), w2 = std::max<Eigen::Index>(0, dw);
        Eigen::Index nh = H - std::abs(dh), nw = W - std::abs(dw);
        m_line_s.assign(size, 0.0);
        m_line_t.assign(size, 0.0);
        m_scratch_s.assign(size, 0.0);
        m_scratch_t.assign(size, 0.0);
        for (Eigen::Index i = 0; i < nh; ++i)
          for (Eigen::Index j = 0; j < nw; ++j) {
            const double* u = a + ((i + h1) * W + j + w1) * C;
            const double* v = b + ((i + h2) * W + j + w2) * C;
            double dot = 0;
            for (Eigen::Index c = 0; c < C; ++c) dot += u[c] * v[c];
            m_line_s[static_cast<std::size_t>((i + R) * S + M + j)] = dot * inv_c;
          }
        set_mask(nw);
        bool alive = true;
        for (std::size_t l = 0; l < split && alive; ++l) {
          const ResolvedLayer& layer = layers[l];
          if (layer.kind == Kind::activation) {
            // Chain index of line entry f: f + h1 S + w1 (first image), f + h2 S + w2 (second).
            m_steps[layer.chain]->padded_pairs(R * S, nh * S, h1 * S + w1, h2 * S + w2, m_line_s.data(),
                                               m_line_t.data());
            apply_mask(R, nh);
          } else {
            alive = conv_line(layer, dh, dw, nh, nw);
          }
        }
        if (!alive) continue;
        for (std::size_t f = static_cast<std::size_t>(R * S); f < static_cast<std::size_t>((R + nh) * S); ++f) {
          total_s += m_line_s[f];
          total_t += m_line_t[f];
        }
      }
    const double pooled = static_cast<double>(layers[split].in.pixels());
    const double divisor = global ? pooled * pooled : pooled;
    m_sigma.assign(1, total_s / divisor);
    m_theta.assign(1, total_t / divisor);
    Eigen::Index h = 1, w = 1;
    diagonal_layers(split + 1, layers.size(), h, w, chain_a, chain_b, record);
    return {m_sigma[0], m_theta[0]};
  }

  /// GlobalAvgPool after stride-1 layers: lines of constant height offset δh, each a sequence of
  /// nh = H − |δh| blocks (h, h + δh) of W x W pixel pairs, go through every layer up to the
  /// pooling while they stay in L2 cache.  A block is stored with zero margins (rows of stride
  /// Sb) so the width taps of a convolution are shifted streams along its diagonal (offset
  /// Sb + 1 per tap); the activation runs on the block's rows as it is produced.
  Dual<double> run_block_lines(const double* a, const double* b, const ImageChain* chain_a, const ImageChain* chain_b,
                               ImageChain* record) {
    const auto& layers = m_arch.resolved();
    const std::size_t split = m_arch.line_split();
    const ImageShape& s0 = m_arch.input_shape();
    const Eigen::Index H = s0.height, W = s0.width, C = s0.channels;
    const Eigen::Index M = m_arch.line_columns();
    const Eigen::Index room = (W + 7) / 8 * 8;  // whole vectors per block row
    const Eigen::Index Sb = std::max(W, room) + 2 * M, rows = W + 2 * M;
    const Eigen::Index block = rows * Sb;
    const Eigen::Index guard = (Sb + 1) * (M + 1);  // reads of the diagonal shifts before / after a block
    m_block_sb = Sb;
    m_block_m = M;
    m_block_size = block;
    m_block_guard = guard;
    const double inv_c = 1.0 / static_cast<double>(C);
    m_bl_s.resize(static_cast<std::size_t>(H * block));
    m_bl_t.resize(m_bl_s.size());
    m_tmp_s.assign(static_cast<std::size_t>(block + 2 * guard), 0.0);
    m_tmp_t.assign(m_tmp_s.size(), 0.0);
    m_out_s.resize(static_cast<std::size_t>(block));
    m_out_t.resize(m_out_s.size());
    m_prev_s.resize(m_out_s.size());
    m_prev_t.resize(m_out_s.size());
    m_block_mask.resize(static_cast<std::size_t>(block));
    double total_s = 0, total_t = 0;
    for (Eigen::Index dh = -(H - 1); dh <= H - 1; ++dh) {
      const Eigen::Index h1 = std::max<Eigen::Index>(0, -dh), h2 = std::max<Eigen::Index>(0, dh);
      Eigen::Index nh = H - std::abs(dh), nw = W;
      std::fill(m_bl_s.begin(), m_bl_s.begin() + nh * block, 0.0);
      std::fill(m_bl_t.begin(), m_bl_t.begin() + nh * block, 0.0);
      for (Eigen::Index o = 0; o < nh; ++o) {
        double* bs = m_bl_s.data() + o * block;
        for (Eigen::Index w1 = 0; w1 < W; ++w1) {
          const double* u = a + ((h1 + o) * W + w1) * C;
          for (Eigen::Index w2 = 0; w2 < W; ++w2) {
            const double* v = b + ((h2 + o) * W + w2) * C;
            double dot = 0;
            for (Eigen::Index c = 0; c < C; ++c) dot += u[c] * v[c];
            bs[(w1 + M) * Sb + M + w2] = dot * inv_c;
          }
        }
      }
      set_block_mask(nw);
      bool alive = true;
      for (std::size_t l = 0; l < split && alive; ++l) {
        const ResolvedLayer& layer = layers[l];
        if (layer.kind == Kind::activation) {
          const ActivationStep& step = *m_steps[layer.chain];
          for (Eigen::Index o = 0; o < nh; ++o)
            activate_block(step, layer, h1 + o, h2 + o, nw, m_bl_s.data() + o * block, m_bl_t.data() + o * block);
          continue;
        }
        const ActivationStep* post = nullptr;
        const ResolvedLayer* post_layer = nullptr;
        if (l + 1 < split && layers[l + 1].kind == Kind::activation) {
          post_layer = &layers[l + 1];
          post = m_steps[post_layer->chain].get();
        }
        alive = conv_block_line(layer, dh, h1, h2, nh, nw, post, post_layer);
        if (post != nullptr) ++l;
      }
      if (!alive) continue;
      for (std::size_t f = 0; f < static_cast<std::size_t>(nh * block); ++f) {
        total_s += m_bl_s[f];
        total_t += m_bl_t[f];
      }
    }
    const double pooled = static_cast<double>(layers[split].in.pixels());
    m_sigma.assign(1, total_s / (pooled * pooled));
    m_theta.assign(1, total_t / (pooled * pooled));
    Eigen::Index h = 1, w = 1;
    diagonal_layers(split + 1, layers.size(), h, w, chain_a, chain_b, record);
    return {m_sigma[0], m_theta[0]};
  }

  /// Ones on the nw x nw pixel pairs of a block, zeros on its margins.
  void set_block_mask(Eigen::Index nw) {
    std::fill(m_block_mask.begin(), m_block_mask.end(), 0.0);
    for (Eigen::Index w1 = 0; w1 < nw; ++w1)
      std::fill_n(m_block_mask.begin() + (w1 + m_block_m) * m_block_sb + m_block_m, nw, 1.0);
  }

  /// The activation step on the nw x nw entries of block (h1, h2); margins re-zeroed.
  void activate_block(const ActivationStep& step, const ResolvedLayer& layer, Eigen::Index h1, Eigen::Index h2,
                      Eigen::Index nw, double* bs, double* bt) const {
    const Eigen::Index width = layer.in.width, Sb = m_block_sb, M = m_block_m;
    const Eigen::Index room = (nw + 7) / 8 * 8;
    for (Eigen::Index w1 = 0; w1 < nw; ++w1) {
      double* rs = bs + (w1 + M) * Sb + M;
      double* rt = bt + (w1 + M) * Sb + M;
      step.row(h1 * width + w1, h2 * width, nw, room, rs, rt);
      for (Eigen::Index t = nw; t < room; ++t) rs[t] = rt[t] = 0.0;
    }
  }

  /// One stride-1 convolution (or per-pixel Dense) on a block line, block by block with one block
  /// of delay before writing back (block o reads old blocks o − pad .. o + taps − 1 − pad), the
  /// following activation fused.  False when VALID shrinking leaves no block.
  bool conv_block_line(const ResolvedLayer& layer, Eigen::Index dh, Eigen::Index h1, Eigen::Index h2, Eigen::Index& nh,
                       Eigen::Index& nw, const ActivationStep* post, const ResolvedLayer* post_layer) {
    const AxisMap &rows = layer.rows, &cols = layer.columns;
    const Eigen::Index oh = layer.out.height - std::abs(dh), ow = layer.out.width;
    if (oh <= 0 || ow <= 0) return false;
    const Eigen::Index Sb = m_block_sb, block = m_block_size, guard = m_block_guard;
    const Affine affine = layer.affine;
    const double scale = affine.scale, bias = affine.bias, tw = affine.tw, tb = affine.tb;
    if (ow != nw) set_block_mask(ow);
    const double* __restrict mask = m_block_mask.data();
    // Output o reads old blocks o − pad .. o + taps − 1 − pad, so output j may replace old block j
    // once output j + pad is done: a ring of pad + 1 outputs waits.
    const Eigen::Index ring = rows.pad + 1;
    m_sources_s.resize(static_cast<std::size_t>(rows.taps));
    m_sources_t.resize(static_cast<std::size_t>(rows.taps));
    m_ring_s.resize(static_cast<std::size_t>(ring * block));
    m_ring_t.resize(m_ring_s.size());
    for (Eigen::Index o = 0; o < oh; ++o) {
      // Height taps: old blocks o + d − pad (those inside [0, nh)).
      double* __restrict ts = m_tmp_s.data() + guard;
      double* __restrict tt = m_tmp_t.data() + guard;
      int count = 0;
      for (Eigen::Index d = 0; d < rows.taps; ++d) {
        const Eigen::Index i = o + d - rows.pad;
        if (i < 0 || i >= nh) continue;
        m_sources_s[static_cast<std::size_t>(count)] = m_bl_s.data() + i * block;
        m_sources_t[static_cast<std::size_t>(count)] = m_bl_t.data() + i * block;
        ++count;
      }
      if (count == 0) {
        std::fill(ts, ts + block, 0.0);
        std::fill(tt, tt + block, 0.0);
      } else if (count == 3) {
        sum3(m_sources_s[0], m_sources_s[1], m_sources_s[2], ts, block);
        sum3(m_sources_t[0], m_sources_t[1], m_sources_t[2], tt, block);
      } else {
        sum_rows(m_sources_s.data(), 0, count, ts, block);
        sum_rows(m_sources_t.data(), 0, count, tt, block);
      }
      // Width taps along the block's diagonal, then scale, bias, mask.
      double* __restrict os = m_ring_s.data() + (o % ring) * block;
      double* __restrict ot = m_ring_t.data() + (o % ring) * block;
      const std::ptrdiff_t step = static_cast<std::ptrdiff_t>(Sb + 1);
      const std::ptrdiff_t first = -static_cast<std::ptrdiff_t>(cols.pad) * step;
      if (cols.taps == 3) {
        finish3(ts + first, ts + first + step, ts + first + 2 * step, mask, scale, bias, block, os);
        finish3_theta(tt + first, tt + first + step, tt + first + 2 * step, ts + first, step, mask, affine, block, ot);
      } else {
        for (Eigen::Index f = 0; f < block; ++f) {
          const std::ptrdiff_t g = f + first;
          double x = 0, y = 0;
          for (Eigen::Index d = 0; d < cols.taps; ++d) {
            x += ts[g + d * step];
            y += tt[g + d * step];
          }
          os[f] = (scale * x + bias) * mask[f];
          ot[f] = (scale * y + (tw * x + tb)) * mask[f];
        }
      }
      if (post != nullptr) activate_block(*post, *post_layer, h1 + o, h2 + o, ow, os, ot);
      const Eigen::Index done = o - rows.pad;
      if (done >= 0) write_back(done, ring);
    }
    for (Eigen::Index done = std::max<Eigen::Index>(0, oh - (ring - 1)); done < oh; ++done) write_back(done, ring);
    if (oh < nh) {
      std::fill(m_bl_s.begin() + oh * block, m_bl_s.begin() + nh * block, 0.0);
      std::fill(m_bl_t.begin() + oh * block, m_bl_t.begin() + nh * block, 0.0);
    }
    nh = oh;
    nw = ow;
    return true;
  }

  /// out = (scale (a + b + c) + bias) mask.
  static void finish3(const double* __restrict a, const double* __restrict b, const double* __restrict c,
                      const double* __restrict mask, double scale, double bias, Eigen::Index n,
                      double* __restrict out) {
    for (Eigen::Index f = 0; f < n; ++f) out[f] = (scale * (a[f] + b[f] + c[f]) + bias) * mask[f];
  }
  /// out = (scale (a + b + c) + tw (s + s[step] + s[2 step]) + tb) mask: Θ' from the Θ taps a, b, c and
  /// the Σ taps at s.
  static void finish3_theta(const double* __restrict a, const double* __restrict b, const double* __restrict c,
                            const double* __restrict s, std::ptrdiff_t step, const double* __restrict mask,
                            const Affine& affine, Eigen::Index n, double* __restrict out) {
    const double scale = affine.scale, tw = affine.tw, tb = affine.tb;
    const double* __restrict s1 = s + step;
    const double* __restrict s2 = s + 2 * step;
    for (Eigen::Index f = 0; f < n; ++f)
      out[f] = (scale * (a[f] + b[f] + c[f]) + (tw * (s[f] + s1[f] + s2[f]) + tb)) * mask[f];
  }

  void write_back(Eigen::Index o, Eigen::Index ring) {
    const Eigen::Index block = m_block_size;
    std::copy_n(m_ring_s.begin() + (o % ring) * block, block, m_bl_s.begin() + o * block);
    std::copy_n(m_ring_t.begin() + (o % ring) * block, block, m_bl_t.begin() + o * block);
  }

  /// mask[c] = 1 on the columns of nw entries (M, M + nw), 0 on the margins.
  void set_mask(Eigen::Index nw) {
    const Eigen::Index M = m_arch.line_columns();
    for (Eigen::Index c = 0; c < static_cast<Eigen::Index>(m_mask.size()); ++c)
      m_mask[static_cast<std::size_t>(c)] = (c >= M && c < M + nw) ? 1.0 : 0.0;
  }
  /// Zeroes the margin columns of rows [R, R + nh) of the line.
  void apply_mask(Eigen::Index R, Eigen::Index nh) {
    const Eigen::Index S = m_arch.line_stride();
    const double* __restrict mask = m_mask.data();
    for (Eigen::Index r = R; r < R + nh; ++r) {
      double* __restrict ls = m_line_s.data() + r * S;
      double* __restrict lt = m_line_t.data() + r * S;
      for (Eigen::Index c = 0; c < S; ++c) {
        ls[c] *= mask[c];
        lt[c] *= mask[c];
      }
    }
  }

  /// A stride-1 convolution (or per-pixel Dense) on one line of nh x nw entries; false when the
  /// line has no entries left (VALID shrinking below its offset).
  bool conv_line(const ResolvedLayer& layer, Eigen::Index dh, Eigen::Index dw, Eigen::Index& nh, Eigen::Index& nw) {
    const AxisMap &rows = layer.rows, &cols = layer.columns;
    const Eigen::Index oh = layer.out.height - std::abs(dh), ow = layer.out.width - std::abs(dw);
    if (oh <= 0 || ow <= 0) return false;
    const Eigen::Index S = m_arch.line_stride(), R = m_arch.line_rows();
    const Affine affine = layer.affine;
    const double scale = affine.scale, bias = affine.bias, tw = affine.tw, tb = affine.tb;
    if (ow != nw) set_mask(ow);
    const double* __restrict mask = m_mask.data();
    if (rows.taps == 1 && cols.taps == 1 && rows.pad == 0 && cols.pad == 0) {
      for (Eigen::Index r = R; r < R + nh; ++r) {
        double* __restrict ls = m_line_s.data() + r * S;
        double* __restrict lt = m_line_t.data() + r * S;
        for (Eigen::Index c = 0; c < S; ++c) {
          const double x = ls[c];
          ls[c] = (scale * x + bias) * mask[c];
          lt[c] = (scale * lt[c] + (tw * x + tb)) * mask[c];
        }
      }
      return true;
    }
    // Height taps: whole rows, flat over the output rows.
    const std::size_t first = static_cast<std::size_t>(R * S), last = static_cast<std::size_t>((R + oh) * S);
    {
      double* __restrict ts = m_scratch_s.data();
      double* __restrict tt = m_scratch_t.data();
      const double* __restrict ls = m_line_s.data();
      const double* __restrict lt = m_line_t.data();
      const std::ptrdiff_t up = static_cast<std::ptrdiff_t>(rows.pad * S);
      if (rows.taps == 3) {
        const std::ptrdiff_t step = static_cast<std::ptrdiff_t>(S);
        for (std::size_t f = first; f < last; ++f) {
          const std::ptrdiff_t g = static_cast<std::ptrdiff_t>(f) - up;
          ts[f] = ls[g] + ls[g + step] + ls[g + 2 * step];
          tt[f] = lt[g] + lt[g + step] + lt[g + 2 * step];
        }
      } else {
        for (std::size_t f = first; f < last; ++f) {
          double a = 0, b = 0;
          for (Eigen::Index d = 0; d < rows.taps; ++d) {
            const std::ptrdiff_t g = static_cast<std::ptrdiff_t>(f) - up + static_cast<std::ptrdiff_t>(d * S);
            a += ls[g];
            b += lt[g];
          }
          ts[f] = a;
          tt[f] = b;
        }
      }
    }
    // Width taps, then Σ' = scale A(Σ) + bias and Θ' = scale A(Θ) + Σ' on the entries, 0 on margins.
    {
      const double* __restrict ts = m_scratch_s.data();
      const double* __restrict tt = m_scratch_t.data();
      double* __restrict ls = m_line_s.data();
      double* __restrict lt = m_line_t.data();
      const std::ptrdiff_t left = static_cast<std::ptrdiff_t>(cols.pad);
      for (Eigen::Index r = R; r < R + oh; ++r) {
        const std::ptrdiff_t base = static_cast<std::ptrdiff_t>(r * S);
        if (cols.taps == 3) {
          for (Eigen::Index c = 0; c < S; ++c) {
            const std::ptrdiff_t g = base + c - left;
            const double x = ts[g] + ts[g + 1] + ts[g + 2];
            ls[base + c] = (scale * x + bias) * mask[c];
            lt[base + c] = (scale * (tt[g] + tt[g + 1] + tt[g + 2]) + (tw * x + tb)) * mask[c];
          }
        } else {
          for (Eigen::Index c = 0; c < S; ++c) {
            const std::ptrdiff_t g = base + c - left;
            double a = 0, b = 0;
            for (Eigen::Index d = 0; d < cols.taps; ++d) {
              a += ts[g + d];
              b += tt[g + d];
            }
            ls[base + c] = (scale * a + bias) * mask[c];
            lt[base + c] = (scale * b + (tw * a + tb)) * mask[c];
          }
        }
      }
      // Rows a VALID convolution dropped.
      if (oh < nh) {
        std::fill(m_line_s.begin() + static_cast<std::ptrdiff_t>(last),
                  m_line_s.begin() + static_cast<std::ptrdiff_t>((R + nh) * S), 0.0);
        std::fill(m_line_t.begin() + static_cast<std::ptrdiff_t>(last),
                  m_line_t.begin() + static_cast<std::ptrdiff_t>((R + nh) * S), 0.0);
      }
    }
    nh = oh;
    nw = ow;
    return true;
  }

  /// Conv on matching pixels: out(oh, ow) = scale Σ_{dh, dw} in(tap(oh, dh), tap(ow, dw)) + bias.
  void conv_diagonal(const ResolvedLayer& layer, Eigen::Index W, const ActivationStep* post) {
    const AxisMap &rows = layer.rows, &cols = layer.columns;
    const Eigen::Index Ho = rows.out, Wo = cols.out;
    const Affine affine = layer.affine;
    const double scale = affine.scale, bias = affine.bias, tw = affine.tw, tb = affine.tb;
    if (rows.taps == 1 && cols.taps == 1 && rows.contiguous && cols.contiguous && rows.pad == 0 && cols.pad == 0) {
      double* __restrict s = m_sigma.data();
      double* __restrict t = m_theta.data();
      for (std::size_t e = 0; e < m_sigma.size(); ++e) {
        const double x = s[e];
        s[e] = scale * x + bias;
        t[e] = scale * t[e] + (tw * x + tb);
      }
    } else {
      // Height taps: rows of W pixels.
      m_local_sigma.assign(static_cast<std::size_t>(Ho * W), 0.0);
      m_local_theta.assign(static_cast<std::size_t>(Ho * W), 0.0);
      for (Eigen::Index o = 0; o < Ho; ++o)
        for (Eigen::Index d = 0; d < rows.taps; ++d) {
          const Eigen::Index i = rows.at(o, d);
          if (i < 0) continue;
          double* __restrict ds = m_local_sigma.data() + o * W;
          double* __restrict dt = m_local_theta.data() + o * W;
          const double* __restrict ss = m_sigma.data() + i * W;
          const double* __restrict st = m_theta.data() + i * W;
          for (Eigen::Index w = 0; w < W; ++w) {
            ds[w] += ss[w];
            dt[w] += st[w];
          }
        }
      // Width taps, one output row at a time.
      m_next_sigma.resize(static_cast<std::size_t>(Ho * Wo));
      m_next_theta.resize(m_next_sigma.size());
      for (Eigen::Index o = 0; o < Ho; ++o) {
        const double* __restrict ss = m_local_sigma.data() + o * W;
        const double* __restrict st = m_local_theta.data() + o * W;
        double* __restrict ds = m_next_sigma.data() + o * Wo;
        double* __restrict dt = m_next_theta.data() + o * Wo;
        std::fill(ds, ds + Wo, 0.0);
        std::fill(dt, dt + Wo, 0.0);
        for (Eigen::Index d = 0; d < cols.taps; ++d) add_tap(cols, d, ss, st, W, ds, dt);
        finish_affine(ds, dt, Wo, affine);
      }
      m_sigma.swap(m_next_sigma);
      m_theta.swap(m_next_theta);
    }
    if (post != nullptr) post->diagonal(Ho * Wo, m_sigma.data(), m_theta.data());
  }

  const ImageArchitecture& m_arch;
  DualOptions m_options;
  Eigen::MatrixXd m_gram;
  std::vector<double> m_sigma, m_theta, m_next_sigma, m_next_theta, m_local_sigma, m_local_theta, m_buffer;
  std::vector<const double*> m_sources_s, m_sources_t, m_rows_s, m_rows_t;   // taps of one output
  std::vector<double> m_line_s, m_line_t, m_scratch_s, m_scratch_t, m_mask;  // one covariance line
  std::vector<double> m_bl_s, m_bl_t, m_tmp_s, m_tmp_t, m_out_s, m_out_t, m_prev_s, m_prev_t, m_ring_s, m_ring_t,
      m_block_mask;  // one block line
  Eigen::Index m_block_sb = 0, m_block_m = 0, m_block_size = 0, m_block_guard = 0;
  std::vector<std::unique_ptr<ActivationStep>> m_steps;                      // per activation layer
  std::vector<std::pair<std::vector<double>, std::vector<double>>> m_saved;  // (Σ, Θ) before open residual blocks
};

template <class D>
void check_images(const char* function, const char* name, const ImageArchitecture& arch,
                  const Eigen::MatrixBase<D>& x) {
  static_assert(std::is_same_v<typename D::Scalar, double>, "ntk: image kernels take double data");
  detail::check_nonempty(function, name, x);
  if (x.cols() != arch.input_shape().size())
    fail<std::invalid_argument>(function, name, " must have ", arch.input_shape().size(), " columns for shape ",
                                arch.input_shape().str(), " (H x W x C, channels last) (got ", x.cols(), ")");
  detail::check_finite(function, name, x);
}

/// Gram matrices between the rows of x1 and x2 (symmetric: x2 is x1, one triangle).
inline Kernels<double> image_gram(const char* function, const ImageArchitecture& arch, const RowMajorMatrix& x1,
                                  const RowMajorMatrix& x2, bool symmetric, KernelKind kind,
                                  const ImageKernelOptions& options) {
  const Eigen::Index n1 = x1.rows(), n2 = x2.rows();
  std::vector<ImageChain> chain1(static_cast<std::size_t>(n1)), chain2(symmetric ? 0 : static_cast<std::size_t>(n2));
  Eigen::VectorXd self_s1(n1), self_t1(n1);
  const int threads = options.threads;
  (void)threads;
  // Diagonal chains: once per image.
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads > 0 ? threads : omp_get_max_threads())
#endif
  {
    ImagePairEngine engine(arch, options.dual);
#if defined(_OPENMP)
#pragma omp for schedule(dynamic)
#endif
    for (Eigen::Index i = 0; i < n1; ++i) {
      const Dual<double> d =
          engine.run(x1.row(i).data(), x1.row(i).data(), nullptr, nullptr, &chain1[static_cast<std::size_t>(i)]);
      self_s1[i] = d.t;
      self_t1[i] = d.t_dot;
    }
    if (!symmetric) {
#if defined(_OPENMP)
#pragma omp for schedule(dynamic)
#endif
      for (Eigen::Index j = 0; j < n2; ++j)
        engine.run(x2.row(j).data(), x2.row(j).data(), nullptr, nullptr, &chain2[static_cast<std::size_t>(j)]);
    }
  }
  const std::vector<ImageChain>& c2 = symmetric ? chain1 : chain2;
  Eigen::MatrixXd sigma(n1, n2), theta(n1, n2);
  const Eigen::Index pairs = n1 * n2;
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads > 0 ? threads : omp_get_max_threads())
#endif
  {
    ImagePairEngine engine(arch, options.dual);
#if defined(_OPENMP)
#pragma omp for schedule(dynamic)
#endif
    for (Eigen::Index e = 0; e < pairs; ++e) {
      const Eigen::Index i = e % n1, j = e / n1;
      if (symmetric && i > j) continue;
      Dual<double> d;
      if (symmetric && i == j) {
        d = {self_s1[i], self_t1[i]};
      } else {
        d = engine.run(x1.row(i).data(), x2.row(j).data(), &chain1[static_cast<std::size_t>(i)],
                       &c2[static_cast<std::size_t>(j)], nullptr);
      }
      sigma(i, j) = d.t;
      theta(i, j) = d.t_dot;
    }
  }
  if (symmetric)
    for (Eigen::Index j = 0; j < n2; ++j)
      for (Eigen::Index i = j + 1; i < n1; ++i) {
        sigma(i, j) = sigma(j, i);
        theta(i, j) = theta(j, i);
      }
  if (!sigma.allFinite() || !theta.allFinite())
    fail<std::overflow_error>(function,
                              "the kernel overflows double (got a non-finite entry); reduce depth or sigma_w");
  Kernels<double> result;
  if (kind != KernelKind::ntk) result.nngp = std::move(sigma);
  if (kind != KernelKind::nngp) result.ntk = std::move(theta);
  return result;
}

}  // namespace detail

/// NNGP and/or NTK of an image architecture between the rows of x1 (n1 x H·W·C) and x2
/// (n2 x H·W·C), channels last; n1 x n2 matrices.  Cost per pair O(P k L) without pooling,
/// O(P² k L) with (P pixels, k filter size, L layers); memory O(P²) per thread plus the per-image
/// diagonal chains O((n1 + n2) P L).
/// Throws std::invalid_argument (empty input, wrong column count for the declared shape, bad
/// options), std::domain_error (non-finite entries), std::overflow_error (result out of range).
template <class D1, class D2>
Kernels<double> image_kernel(const ImageArchitecture& arch, const Eigen::MatrixBase<D1>& x1,
                             const Eigen::MatrixBase<D2>& x2, KernelKind kind = KernelKind::both,
                             const ImageKernelOptions& options = {}) {
  options.check("image_kernel");
  arch.check_flat("image_kernel");
  detail::check_images("image_kernel", "x1", arch, x1);
  detail::check_images("image_kernel", "x2", arch, x2);
  const detail::RowMajorMatrix a = x1, b = x2;
  return detail::image_gram("image_kernel", arch, a, b, false, kind, options);
}

/// The symmetric case x2 = x1 (one triangle computed).
template <class D>
Kernels<double> image_kernel(const ImageArchitecture& arch, const Eigen::MatrixBase<D>& x,
                             KernelKind kind = KernelKind::both, const ImageKernelOptions& options = {}) {
  options.check("image_kernel");
  arch.check_flat("image_kernel");
  detail::check_images("image_kernel", "x", arch, x);
  const detail::RowMajorMatrix a = x;
  return detail::image_gram("image_kernel", arch, a, a, true, kind, options);
}

/// The pixel-by-pixel NNGP and NTK of the architecture's output between two images a and b
/// (rows of H·W·C): P_out x P_out matrices, entry (p, p') = (h W + w, h' W + w').  Every pixel pair
/// is computed (O(P² k L)).  Throws as image_kernel (but any output shape is allowed).
template <class D1, class D2>
Kernels<double> pixel_kernels(const ImageArchitecture& arch, const Eigen::MatrixBase<D1>& a,
                              const Eigen::MatrixBase<D2>& b, const ImageKernelOptions& options = {}) {
  options.check("pixel_kernels");
  detail::check_images("pixel_kernels", "a", arch, a);
  detail::check_images("pixel_kernels", "b", arch, b);
  if (a.rows() != 1 || b.rows() != 1)
    detail::fail<std::invalid_argument>("pixel_kernels", "a and b must be single images (got ", a.rows(), " and ",
                                        b.rows(), " rows)");
  const Eigen::VectorXd ra = a.row(0).transpose(), rb = b.row(0).transpose();
  detail::ImagePairEngine engine(arch, options.dual);
  detail::ImageChain ca, cb;
  engine.run_full(ra.data(), ra.data(), nullptr, nullptr, &ca);
  engine.run_full(rb.data(), rb.data(), nullptr, nullptr, &cb);
  engine.run_full(ra.data(), rb.data(), &ca, &cb, nullptr);
  const Eigen::Index H = arch.output_shape().height, W = arch.output_shape().width, P = H * W;
  Kernels<double> out;
  out.nngp.resize(P, P);
  out.ntk.resize(P, P);
  for (Eigen::Index h1 = 0; h1 < H; ++h1)
    for (Eigen::Index h2 = 0; h2 < H; ++h2)
      for (Eigen::Index w1 = 0; w1 < W; ++w1)
        for (Eigen::Index w2 = 0; w2 < W; ++w2) {
          const std::size_t e = static_cast<std::size_t>(((h1 * H + h2) * W + w1) * W + w2);
          out.nngp(h1 * W + w1, h2 * W + w2) = engine.sigma()[e];
          out.ntk(h1 * W + w1, h2 * W + w2) = engine.theta()[e];
        }
  if (!out.nngp.allFinite() || !out.ntk.allFinite())
    detail::fail<std::overflow_error>("pixel_kernels", "the kernel overflows double (got a non-finite entry)");
  return out;
}

// ---------------------------------------------------------------------------------------------
// The finite world.
// ---------------------------------------------------------------------------------------------

/// A finite image network with parameters θ ~ N(0, 1) in the NTK parametrization (a layer with
/// Parametrization::standard holds W = σ_w w / sqrt(fan-in) and b = σ_b β themselves, unscaled in
/// the forward pass, no bias term when σ_b = 0).
/// Every Conv needs channels >= 1 and every Dense width >= 1; the last layer's width is the
/// number of outputs k; a residual branch must end with its input's channel count.  Parameter
/// order: layers in order (a residual branch's layers in place); a Conv holds its weights
/// w(c', dh, dw, c) (C_out x (kh kw C_in), row-major) then its biases; a Dense w(c', c) then
/// biases.  Jacobian rows are sample-major (row i k + o).
class ImageNetwork {
 public:
  using Matrix = Eigen::MatrixXd;
  using RowMajor = detail::RowMajorMatrix;

  /// Throws std::invalid_argument for a Conv without channels or a Dense without width.
  ImageNetwork(ImageArchitecture arch, std::uint64_t seed) : m_arch(std::move(arch)) {
    m_arch.check_flat("ImageNetwork");
    Eigen::Index offset = 0;
    for (std::size_t l = 0; l < m_arch.resolved().size(); ++l) {
      const auto& r = m_arch.resolved()[l];
      Info info;
      info.offset = offset;
      if (r.kind == detail::ResolvedLayer::Kind::conv || r.kind == detail::ResolvedLayer::Kind::dense) {
        if (r.width < 1)
          detail::fail<std::invalid_argument>("ImageNetwork", "layer ", r.label, " needs at least 1 ",
                                              r.kind == detail::ResolvedLayer::Kind::conv ? "channel" : "unit",
                                              " for a finite network (got ", r.width, ")");
        const Eigen::Index fan_in = r.rows.taps * r.columns.taps * r.in.channels;
        info.fan_in = fan_in;
        info.weight_scale = r.sigma_w / std::sqrt(static_cast<double>(fan_in));
        info.bias_scale = r.sigma_b;
        if (r.parametrization == Parametrization::standard) {  // θ = (W, b) drawn at these scales
          info.weight_init = info.weight_scale;
          info.bias_init = r.sigma_b;
          info.weight_scale = 1;
          info.bias_scale = r.sigma_b > 0 ? 1 : 0;
        }
        offset += r.width * fan_in + r.width;
      }
      if (r.kind == detail::ResolvedLayer::Kind::residual_end && r.in.channels != r.out.channels)
        detail::fail<std::invalid_argument>("ImageNetwork", "layer ", r.label, " (residual): the branch ends with ",
                                            r.in.channels, " channels but its input has ", r.out.channels,
                                            "; y = x + a f(x) needs equal shapes");
      m_info.push_back(info);
    }
    m_outputs = m_arch.resolved().back().out.channels;
    m_theta.resize(offset);
    NormalGenerator generator(seed);
    for (Eigen::Index p = 0; p < offset; ++p) m_theta[p] = generator.normal();
    for (std::size_t l = 0; l < m_info.size(); ++l) {
      const Info& info = m_info[l];
      const Eigen::Index weights = m_arch.resolved()[l].width * info.fan_in;
      m_theta.segment(info.offset, weights) *= info.weight_init;
      m_theta.segment(info.offset + weights, m_arch.resolved()[l].width) *= info.bias_init;
    }
  }

  Eigen::Index parameter_count() const { return m_theta.size(); }
  Eigen::Index output_dimension() const { return m_outputs; }
  const Eigen::VectorXd& parameters() const { return m_theta; }
  const ImageArchitecture& architecture() const { return m_arch; }
  /// Replaces θ.  Throws std::invalid_argument for a wrong length, std::domain_error for
  /// non-finite values; θ is unchanged then.
  void set_parameters(const Eigen::Ref<const Eigen::VectorXd>& theta) {
    if (theta.size() != m_theta.size())
      detail::fail<std::invalid_argument>("ImageNetwork::set_parameters", "theta must have ", m_theta.size(),
                                          " entries (got ", theta.size(), ")");
    detail::check_finite("ImageNetwork::set_parameters", "theta", theta);
    m_theta = theta;
  }

  /// f(X): n x k for the rows of X (n x H·W·C).
  template <class D>
  Matrix forward(const Eigen::MatrixBase<D>& x) const {
    detail::check_images("ImageNetwork::forward", "x", m_arch, x);
    Matrix out(x.rows(), m_outputs);
    std::vector<Tape> tape;
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
      const Eigen::VectorXd row = x.row(i).transpose();
      out.row(i) = run_forward(row.data(), tape).row(0);
    }
    return out;
  }

  /// ∇θ f as an (n k) x p matrix (rows sample-major), by backpropagation per sample.
  template <class D>
  Matrix jacobian(const Eigen::MatrixBase<D>& x) const {
    detail::check_images("ImageNetwork::jacobian", "x", m_arch, x);
    const Eigen::Index n = x.rows(), k = m_outputs;
    Matrix jac = Matrix::Zero(n * k, m_theta.size());
    std::vector<Tape> tape;
    Eigen::VectorXd grad(m_theta.size());
    for (Eigen::Index i = 0; i < n; ++i) {
      const Eigen::VectorXd row = x.row(i).transpose();
      run_forward(row.data(), tape);
      for (Eigen::Index o = 0; o < k; ++o) {
        grad.setZero();
        RowMajor seed = RowMajor::Zero(1, k);
        seed(0, o) = 1;
        run_backward(seed, tape, grad);
        jac.row(i * k + o) = grad.transpose();
      }
    }
    return jac;
  }

  /// Empirical NTK J(x1) J(x2)ᵀ averaged over the k outputs (n1 x n2), from explicit Jacobians.
  template <class D1, class D2>
  Matrix empirical_ntk(const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2) const {
    const Matrix j1 = jacobian(x1), j2 = jacobian(x2);
    const Eigen::Index k = m_outputs;
    Matrix result = Matrix::Zero(x1.rows(), x2.rows());
    for (Eigen::Index o = 0; o < k; ++o) {
      Matrix a(x1.rows(), j1.cols()), b(x2.rows(), j2.cols());
      for (Eigen::Index i = 0; i < x1.rows(); ++i) a.row(i) = j1.row(i * k + o);
      for (Eigen::Index i = 0; i < x2.rows(); ++i) b.row(i) = j2.row(i * k + o);
      result.noalias() += a * b.transpose();
    }
    return result / static_cast<double>(k);
  }

 private:
  struct Info {
    Eigen::Index offset = 0, fan_in = 0;
    double weight_scale = 0, bias_scale = 0;  // multipliers of w and β in the forward pass
    double weight_init = 1, bias_init = 1;    // scales of their draws (standard parametrization)
  };
  /// What the backward pass needs of one layer: its input (P x C, row-major) and, for
  /// activations, φ'(z); for convolutions the patch matrix.
  struct Tape {
    RowMajor input, derivative, patches;  // layer_norm: derivative holds the normalized output
    Eigen::VectorXd inverse_std;          // layer_norm: 1 / sqrt(var + ε) per pixel
  };

  static void build_patches(const RowMajor& x, const detail::ResolvedLayer& r, RowMajor& patches) {
    const Eigen::Index C = r.in.channels, Ho = r.out.height, Wo = r.out.width, W = r.in.width;
    const Eigen::Index kh = r.rows.taps, kw = r.columns.taps;
    patches.setZero(Ho * Wo, kh * kw * C);
    for (Eigen::Index oh = 0; oh < Ho; ++oh)
      for (Eigen::Index ow = 0; ow < Wo; ++ow)
        for (Eigen::Index dh = 0; dh < kh; ++dh) {
          const Eigen::Index ih = r.rows.at(oh, dh);
          if (ih < 0) continue;
          for (Eigen::Index dw = 0; dw < kw; ++dw) {
            const Eigen::Index iw = r.columns.at(ow, dw);
            if (iw < 0) continue;
            patches.row(oh * Wo + ow).segment((dh * kw + dw) * C, C) = x.row(ih * W + iw);
          }
        }
  }

  RowMajor run_forward(const double* image, std::vector<Tape>& tape) const {
    using Kind = detail::ResolvedLayer::Kind;
    const ImageShape& s0 = m_arch.input_shape();
    RowMajor x = Eigen::Map<const RowMajor>(image, s0.pixels(), s0.channels);
    tape.assign(m_arch.resolved().size(), Tape{});
    std::vector<RowMajor> saved;  // inputs of the open residual blocks
    for (std::size_t l = 0; l < m_arch.resolved().size(); ++l) {
      const auto& r = m_arch.resolved()[l];
      const Info& info = m_info[l];
      Tape& t = tape[l];
      t.input = x;
      switch (r.kind) {
        case Kind::conv:
        case Kind::dense: {
          const Eigen::Map<const RowMajor> w(m_theta.data() + info.offset, r.width, info.fan_in);
          const Eigen::Map<const Eigen::VectorXd> beta(m_theta.data() + info.offset + r.width * info.fan_in, r.width);
          if (r.kind == Kind::conv) {
            build_patches(x, r, t.patches);
          } else {
            t.patches = x;
          }
          RowMajor z = info.weight_scale * (t.patches * w.transpose());
          z.rowwise() += (info.bias_scale * beta).transpose();
          x = std::move(z);
          break;
        }
        case Kind::activation: {
          RowMajor h(x.rows(), x.cols());
          t.derivative.resize(x.rows(), x.cols());
          r.activation->forward(x.data(), h.data(), t.derivative.data(), x.size());
          x = std::move(h);
          break;
        }
        case Kind::pool: {
          const Eigen::Index Ho = r.out.height, Wo = r.out.width, W = r.in.width;
          const double scale = 1.0 / static_cast<double>(r.rows.taps * r.columns.taps);
          RowMajor y = RowMajor::Zero(Ho * Wo, x.cols());
          for (Eigen::Index oh = 0; oh < Ho; ++oh)
            for (Eigen::Index ow = 0; ow < Wo; ++ow)
              for (Eigen::Index dh = 0; dh < r.rows.taps; ++dh)
                for (Eigen::Index dw = 0; dw < r.columns.taps; ++dw) {
                  const Eigen::Index ih = r.rows.at(oh, dh), iw = r.columns.at(ow, dw);
                  if (ih >= 0 && iw >= 0) y.row(oh * Wo + ow) += scale * x.row(ih * W + iw);
                }
          x = std::move(y);
          break;
        }
        case Kind::global_pool: {
          RowMajor y = x.colwise().mean();
          x = std::move(y);
          break;
        }
        case Kind::flatten: {
          RowMajor y = Eigen::Map<const RowMajor>(x.data(), 1, x.size());
          x = std::move(y);
          break;
        }
        case Kind::layer_norm: {
          const Eigen::Index C = x.cols();
          t.inverse_std.resize(x.rows());
          for (Eigen::Index p = 0; p < x.rows(); ++p) {
            const double mean = x.row(p).mean();
            x.row(p).array() -= mean;
            const double var = x.row(p).squaredNorm() / static_cast<double>(C);
            t.inverse_std[p] = 1 / std::sqrt(var + r.epsilon);
            x.row(p) *= t.inverse_std[p];
          }
          t.derivative = x;
          break;
        }
        case Kind::residual_begin:
          saved.push_back(x);
          break;
        case Kind::residual_end:
          x = saved.back() + r.scale * x;
          saved.pop_back();
          break;
      }
    }
    return x;
  }

  /// Accumulates ∂(seed · f)/∂θ into grad.
  void run_backward(const RowMajor& seed, const std::vector<Tape>& tape, Eigen::VectorXd& grad) const {
    using Kind = detail::ResolvedLayer::Kind;
    RowMajor delta = seed;           // ∂/∂(output of layer l)
    std::vector<RowMajor> shortcut;  // the identity path's part of ∂/∂(input of open residual blocks)
    for (std::size_t l = m_arch.resolved().size(); l-- > 0;) {
      const auto& r = m_arch.resolved()[l];
      const Info& info = m_info[l];
      const Tape& t = tape[l];
      switch (r.kind) {
        case Kind::conv:
        case Kind::dense: {
          const Eigen::Map<const RowMajor> w(m_theta.data() + info.offset, r.width, info.fan_in);
          Eigen::Map<RowMajor> gw(grad.data() + info.offset, r.width, info.fan_in);
          gw.noalias() += info.weight_scale * (delta.transpose() * t.patches);
          Eigen::Map<Eigen::VectorXd>(grad.data() + info.offset + r.width * info.fan_in, r.width) +=
              info.bias_scale * delta.colwise().sum().transpose();
          if (l == 0) return;
          RowMajor dpatches = info.weight_scale * (delta * w);
          if (r.kind == Kind::dense) {
            delta = std::move(dpatches);
          } else {
            const Eigen::Index C = r.in.channels, Wo = r.out.width, W = r.in.width;
            RowMajor dx = RowMajor::Zero(r.in.pixels(), C);
            for (Eigen::Index oh = 0; oh < r.out.height; ++oh)
              for (Eigen::Index ow = 0; ow < Wo; ++ow)
                for (Eigen::Index dh = 0; dh < r.rows.taps; ++dh) {
                  const Eigen::Index ih = r.rows.at(oh, dh);
                  if (ih < 0) continue;
                  for (Eigen::Index dw = 0; dw < r.columns.taps; ++dw) {
                    const Eigen::Index iw = r.columns.at(ow, dw);
                    if (iw < 0) continue;
                    dx.row(ih * W + iw) += dpatches.row(oh * Wo + ow).segment((dh * r.columns.taps + dw) * C, C);
                  }
                }
            delta = std::move(dx);
          }
          break;
        }
        case Kind::activation:
          delta = (delta.array() * t.derivative.array()).matrix();
          break;
        case Kind::pool: {
          const Eigen::Index Wo = r.out.width, W = r.in.width;
          const double scale = 1.0 / static_cast<double>(r.rows.taps * r.columns.taps);
          RowMajor dx = RowMajor::Zero(r.in.pixels(), t.input.cols());
          for (Eigen::Index oh = 0; oh < r.out.height; ++oh)
            for (Eigen::Index ow = 0; ow < Wo; ++ow)
              for (Eigen::Index dh = 0; dh < r.rows.taps; ++dh)
                for (Eigen::Index dw = 0; dw < r.columns.taps; ++dw) {
                  const Eigen::Index ih = r.rows.at(oh, dh), iw = r.columns.at(ow, dw);
                  if (ih >= 0 && iw >= 0) dx.row(ih * W + iw) += scale * delta.row(oh * Wo + ow);
                }
          delta = std::move(dx);
          break;
        }
        case Kind::global_pool: {
          RowMajor dx = delta.replicate(r.in.pixels(), 1) / static_cast<double>(r.in.pixels());
          delta = std::move(dx);
          break;
        }
        case Kind::flatten: {
          RowMajor dx = Eigen::Map<const RowMajor>(delta.data(), r.in.pixels(), r.in.channels);
          delta = std::move(dx);
          break;
        }
        case Kind::layer_norm: {
          // y = (x − μ) s, s = 1/sqrt(var + ε): ∂x = s (∂y − mean(∂y) − y mean(∂y ⊙ y)) per pixel.
          const RowMajor& y = t.derivative;
          for (Eigen::Index p = 0; p < delta.rows(); ++p) {
            const double mean = delta.row(p).mean();
            const double projection = delta.row(p).dot(y.row(p)) / static_cast<double>(delta.cols());
            delta.row(p) = t.inverse_std[p] * (delta.row(p).array() - mean - projection * y.row(p).array()).matrix();
          }
          break;
        }
        case Kind::residual_end:
          shortcut.push_back(delta);
          delta *= r.scale;
          break;
        case Kind::residual_begin:
          delta += shortcut.back();
          shortcut.pop_back();
          break;
      }
    }
  }

  ImageArchitecture m_arch;
  std::vector<Info> m_info;
  Eigen::Index m_outputs = 1;
  Eigen::VectorXd m_theta;
};

}  // namespace ntk
