#pragma once
/// \file conv.hpp
/// Image architectures in both worlds: convolutions (1-D and 2-D), average pooling, global
/// average pooling, flattening, per-pixel dense layers and elementwise activations; their
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
///    Dense:       the same with k = 1, δ = 0
///    AvgPool:     Σ' = M Σ Mᵀ, Θ' = M Θ Mᵀ (M the pooling matrix of one image)
///    GlobalAvgPool: Σ' = mean_{p,p'} Σ(p, p');  Flatten: Σ' = mean_p Σ(p, p)  (Θ likewise)
///    Activation:  Σ'(p, p') = L^φ at [[q(p), Σ(p,p')], [Σ(p,p'), q'(p')]],  Θ' = Θ ⊙ L^φ'
/// where q(p) = Σ(x, x)(p, p) comes from the diagonal chain of each image, computed once per image.
/// Without pooling before the readout (Flatten, no AvgPool/GlobalAvgPool) only the diagonal
/// p = p' is ever needed: O(P k L) per pair (the CNTK-V).  With pooling the whole P x P' matrix:
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

/// A 2-D (or, with filter_height 1 on height-1 images, 1-D) convolution in the NTK
/// parametrization.  `channels` (output channels) matters for finite networks only.
struct Conv {
  Eigen::Index channels = 0;
  Eigen::Index filter_height = 3, filter_width = 3;
  Eigen::Index stride_height = 1, stride_width = 1;
  Padding padding = Padding::same;
  double sigma_w = 1, sigma_b = 0;
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

/// A run-time activation: the per-layer operations both worlds need, behind one virtual call per
/// layer (the loops inside are templated on the activation).
class ImageActivationBase {
 public:
  virtual ~ImageActivationBase() = default;
  virtual std::string name() const = 0;
  /// h = φ(z), d = φ'(z) for n values.
  virtual void forward(const double* z, double* h, double* d, Eigen::Index n) const = 0;
  /// The activation step on `count` entries: entry e has variances q1[i1[e]] (or q1[e] when i1
  /// is null), q2[..] likewise, covariance sigma[e]; sigma <- L^φ, theta *= L^φ'.
  /// Full layout: entries ((h1 H + h2) W + w1) W + w2, q1 over (h1 W + w1), q2 over (h2 W + w2).
  virtual void kernel_full(const double* q1, const double* q2, Eigen::Index height, Eigen::Index width,
                           double* sigma, double* theta, const DualOptions& options) const = 0;
  /// Diagonal layout: entry p pairs pixel p of both images.
  virtual void kernel_diagonal(const double* q1, const double* q2, Eigen::Index pixels, double* sigma,
                               double* theta, const DualOptions& options) const = 0;
  /// (E[φ(√q Z)²], E[φ'(√q Z)²]) for the variances q[0, n) (the diagonal chain).
  virtual void kernel_self(const double* q, Eigen::Index n, double* sigma, double* theta,
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
  void kernel_full(const double* q1, const double* q2, Eigen::Index height, Eigen::Index width, double* sigma,
                   double* theta, const DualOptions& options) const override {
    const Eigen::Index pixels = height * width;
    Prepared prepared(m_phi, q1, q2, pixels, pixels, options);
    for (Eigen::Index h1 = 0; h1 < height; ++h1)
      for (Eigen::Index h2 = 0; h2 < height; ++h2)
        for (Eigen::Index w1 = 0; w1 < width; ++w1) {
          const Eigen::Index base = ((h1 * height + h2) * width + w1) * width;
          prepared.row(h1 * width + w1, h2 * width, width, sigma + base, theta + base);
        }
  }
  void kernel_diagonal(const double* q1, const double* q2, Eigen::Index pixels, double* sigma, double* theta,
                       const DualOptions& options) const override {
    Prepared prepared(m_phi, q1, q2, pixels, pixels, options);
    for (Eigen::Index p = 0; p < pixels; ++p) prepared.row(p, p, 1, sigma + p, theta + p);
  }
  void kernel_self(const double* q, Eigen::Index n, double* sigma, double* theta,
                   const DualOptions& options) const override {
    for (Eigen::Index p = 0; p < n; ++p) {
      Dual<double> d{};
      bool done = false;
      if constexpr (has_closed_form_dual_v<Phi, double>) {
        if (!options.force_quadrature) {
          d = m_phi.dual(q[p], q[p], q[p]);
          done = true;
        }
      }
      if (!done) {
        const int order = options.quadrature_order > 0 ? options.quadrature_order : adaptive_quadrature_order(q[p]);
        const auto& rule = gauss_hermite<double>(order);
        const double sd = std::sqrt(q[p]);
        d = {0, 0};
        for (int i = 0; i < rule.order(); ++i) {
          const double z = sd * rule.nodes()[static_cast<std::size_t>(i)], w = rule.weights()[static_cast<std::size_t>(i)];
          const double v = m_phi.value(z), g = m_phi.derivative(z);
          d.t += w * v * v;
          d.t_dot += w * g * g;
        }
      }
      sigma[p] = d.t;
      if (theta != nullptr) theta[p] *= d.t_dot;
    }
  }

 private:
  /// One layer's dual prepared for the variances of both images: closed form, Mehler series, or
  /// product quadrature per entry.
  class Prepared {
   public:
    Prepared(const Phi& phi, const double* q1, const double* q2, Eigen::Index n1, Eigen::Index n2,
             const DualOptions& options)
        : m_phi(phi), m_q1(q1), m_q2(q2), m_options(options) {
      m_root1.resize(static_cast<std::size_t>(n1));
      m_root2.resize(static_cast<std::size_t>(n2));
      m_inverse1.resize(static_cast<std::size_t>(n1));
      m_inverse2.resize(static_cast<std::size_t>(n2));
      for (Eigen::Index p = 0; p < n1; ++p) {
        m_root1[static_cast<std::size_t>(p)] = std::sqrt(q1[p]);
        m_inverse1[static_cast<std::size_t>(p)] = q1[p] > 0 ? 1 / m_root1[static_cast<std::size_t>(p)] : 0.0;
      }
      for (Eigen::Index p = 0; p < n2; ++p) {
        m_root2[static_cast<std::size_t>(p)] = std::sqrt(q2[p]);
        m_inverse2[static_cast<std::size_t>(p)] = q2[p] > 0 ? 1 / m_root2[static_cast<std::size_t>(p)] : 0.0;
      }
      if constexpr (has_closed_form_dual_v<Phi, double>) {
        if (!options.force_quadrature) {
          m_closed = true;
          return;
        }
      }
      if (options.quadrature_order == 0) {
        std::vector<VarianceSet<double>> sets{{q1, static_cast<std::size_t>(n1)}, {q2, static_cast<std::size_t>(n2)}};
        m_series = hermite_series(phi, sets, options.series_tolerance);
        m_use_series = m_series[0].converged;
      }
    }
    /// Entries (p1, p2_0 + t) for t < count.
    void row(Eigen::Index p1, Eigen::Index p2_0, Eigen::Index count, double* sigma, double* theta) const {
      const std::size_t i1 = static_cast<std::size_t>(p1);
      if constexpr (has_closed_form_dual_v<Phi, double>) {
        if (m_closed) {
          const Phi phi = m_phi;
          const double r1 = m_root1[i1], v1 = m_inverse1[i1], q1 = m_q1[p1];
          const double* r2 = m_root2.data() + p2_0;
          const double* v2 = m_inverse2.data() + p2_0;
          const double* q2 = m_q2 + p2_0;
          for (Eigen::Index t = 0; t < count; ++t) {
            Dual<double> d;
            if constexpr (has_unit_dual_v<Phi, double>) {
              d = phi.unit_dual(sigma[t] * v1 * v2[t]);
              d.t *= r1 * r2[t];
            } else {
              d = phi.dual(q1, sigma[t], q2[t]);
            }
            sigma[t] = d.t;
            theta[t] *= d.t_dot;
          }
          return;
        }
      }
      for (Eigen::Index t = 0; t < count; ++t) {
        const std::size_t i2 = static_cast<std::size_t>(p2_0 + t);
        Dual<double> d;
        if (m_use_series) {
          const double r = sigma[t] * m_inverse1[i1] * m_inverse2[i2];
          const double rho = r > 1 ? 1.0 : (r < -1 ? -1.0 : r);
          double a = 0, b = 0;
          for (int k = m_series[0].terms; k-- > 0;) a = a * rho + m_series[0].a_at(i1, k) * m_series[1].a_at(i2, k);
          for (int k = m_series[0].terms_dot; k-- > 0;) b = b * rho + m_series[0].b_at(i1, k) * m_series[1].b_at(i2, k);
          d = {a, b};
        } else {
          const double limit = m_root1[i1] * m_root2[i2];
          const double c = std::min(std::max(sigma[t], -limit), limit);
          const int order = m_options.quadrature_order > 0
                                ? m_options.quadrature_order
                                : adaptive_quadrature_order(std::max(m_q1[p1], m_q2[p2_0 + t]));
          d = quadrature_dual(m_phi, Covariance2<double>{m_q1[p1], c, m_q2[p2_0 + t]}, gauss_hermite<double>(order));
        }
        sigma[t] = d.t;
        theta[t] *= d.t_dot;
      }
    }

   private:
    const Phi& m_phi;
    const double *m_q1, *m_q2;
    DualOptions m_options;
    std::vector<double> m_root1, m_root2, m_inverse1, m_inverse2;
    bool m_closed = false, m_use_series = false;
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
struct ResolvedLayer {
  enum class Kind { conv, dense, pool, global_pool, flatten, activation } kind;
  ImageShape in, out;
  AxisMap rows, columns;  // conv / pool: height and width axes
  double sigma_w = 1, sigma_b = 0;
  Eigen::Index width = 0;  // conv channels / dense width (finite world)
  const ImageActivationBase* activation = nullptr;
  std::size_t chain = 0;  // activation: index of its variances in a diagonal chain
};

}  // namespace detail

/// An image architecture: a declared input shape and a list of layers, validated at construction.
class ImageArchitecture {
 public:
  using Layer = std::variant<Conv, AvgPool, GlobalAvgPool, Flatten, Dense, ImageActivation>;

  /// Throws std::invalid_argument (naming the layer) for a non-positive input shape, filter,
  /// window or stride, a VALID window larger than its input, bad σ's or no layers.
  ImageArchitecture(ImageShape input, std::vector<Layer> layers) : m_input(input), m_layers(std::move(layers)) {
    const char* fn = "ImageArchitecture";
    check_at_least<Eigen::Index>(fn, "input height", input.height, 1);
    check_at_least<Eigen::Index>(fn, "input width", input.width, 1);
    check_at_least<Eigen::Index>(fn, "input channels", input.channels, 1);
    if (m_layers.empty()) detail::fail<std::invalid_argument>(fn, "architecture has no layers (got 0)");
    ImageShape shape = input;
    for (std::size_t l = 0; l < m_layers.size(); ++l) {
      detail::ResolvedLayer r;
      r.in = shape;
      const std::string where = "layer " + std::to_string(l) + " ";
      const auto window = [&](Eigen::Index fh, Eigen::Index fw, Eigen::Index sh, Eigen::Index sw, Padding padding,
                              const char* what) {
        if (fh < 1 || fw < 1)
          detail::fail<std::invalid_argument>(fn, where, "(", what, "): window must be at least 1x1 (got ", fh, "x", fw, ")");
        if (sh < 1 || sw < 1)
          detail::fail<std::invalid_argument>(fn, where, "(", what, "): stride must be at least 1 (got ", sh, "x", sw, ")");
        if (padding == Padding::valid && (fh > shape.height || fw > shape.width))
          detail::fail<std::invalid_argument>(fn, where, "(", what, "): VALID window ", fh, "x", fw,
                                              " is larger than its input ", shape.height, "x", shape.width);
        r.rows = detail::axis_map(shape.height, fh, sh, padding);
        r.columns = detail::axis_map(shape.width, fw, sw, padding);
      };
      if (const auto* conv = std::get_if<Conv>(&m_layers[l])) {
        r.kind = detail::ResolvedLayer::Kind::conv;
        window(conv->filter_height, conv->filter_width, conv->stride_height, conv->stride_width, conv->padding, "conv");
        check_positive(fn, "Conv sigma_w", conv->sigma_w);
        check_nonnegative(fn, "Conv sigma_b", conv->sigma_b);
        check_at_least<Eigen::Index>(fn, "Conv channels", conv->channels, 0);
        r.sigma_w = conv->sigma_w;
        r.sigma_b = conv->sigma_b;
        r.width = conv->channels;
        shape = {r.rows.out, r.columns.out, std::max<Eigen::Index>(conv->channels, 1)};
      } else if (const auto* pool = std::get_if<AvgPool>(&m_layers[l])) {
        r.kind = detail::ResolvedLayer::Kind::pool;
        const Eigen::Index sh = pool->stride_height > 0 ? pool->stride_height : pool->window_height;
        const Eigen::Index sw = pool->stride_width > 0 ? pool->stride_width : pool->window_width;
        if (pool->stride_height < 0 || pool->stride_width < 0)
          detail::fail<std::invalid_argument>(fn, where, "(avgpool): stride must be at least 1, or 0 for the window (got ",
                                              pool->stride_height, "x", pool->stride_width, ")");
        window(pool->window_height, pool->window_width, sh, sw, pool->padding, "avgpool");
        shape = {r.rows.out, r.columns.out, shape.channels};
        m_pooling = true;
      } else if (std::holds_alternative<GlobalAvgPool>(m_layers[l])) {
        r.kind = detail::ResolvedLayer::Kind::global_pool;
        shape = {1, 1, shape.channels};
        if (r.in.pixels() > 1) m_pooling = true;
      } else if (std::holds_alternative<Flatten>(m_layers[l])) {
        r.kind = detail::ResolvedLayer::Kind::flatten;
        shape = {1, 1, shape.size()};
      } else if (const auto* dense = std::get_if<Dense>(&m_layers[l])) {
        r.kind = detail::ResolvedLayer::Kind::dense;
        dense->check(fn);
        r.sigma_w = dense->sigma_w;
        r.sigma_b = dense->sigma_b;
        r.width = dense->width;
        r.rows = detail::axis_map(shape.height, 1, 1, Padding::valid);
        r.columns = detail::axis_map(shape.width, 1, 1, Padding::valid);
        shape = {shape.height, shape.width, std::max<Eigen::Index>(dense->width, 1)};
      } else {
        r.kind = detail::ResolvedLayer::Kind::activation;
        r.activation = &std::get<ImageActivation>(m_layers[l]).model();
        r.chain = m_activations++;
      }
      r.out = shape;
      m_resolved.push_back(r);
    }
    m_output = shape;
  }

  /// The shape of the output.  image_kernel and ImageNetwork need one pixel (end with
  /// GlobalAvgPool or Flatten, then Dense); pixel_kernels takes any.
  const ImageShape& output_shape() const { return m_output; }
  /// Throws std::invalid_argument unless the output is one pixel.
  void check_flat(const char* function) const {
    if (m_output.pixels() != 1)
      detail::fail<std::invalid_argument>(function, "the architecture's output must be one pixel: end with "
                                          "GlobalAvgPool or Flatten, then Dense (got ", m_output.height, "x",
                                          m_output.width, ")");
  }

  const ImageShape& input_shape() const { return m_input; }
  const std::vector<Layer>& layers() const { return m_layers; }
  std::size_t size() const { return m_layers.size(); }
  /// True when some layer pools pixels (AvgPool, GlobalAvgPool over more than one pixel): the
  /// kernel then needs every pixel pair; otherwise only matching pixels.
  bool needs_pixel_pairs() const { return m_pooling; }
  const std::vector<detail::ResolvedLayer>& resolved() const { return m_resolved; }
  std::size_t activation_count() const { return m_activations; }

 private:
  ImageShape m_input, m_output;
  std::vector<Layer> m_layers;
  std::vector<detail::ResolvedLayer> m_resolved;
  bool m_pooling = false;
  std::size_t m_activations = 0;
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

/// Options of image kernels.
struct ImageKernelOptions {
  DualOptions dual{};
  /// OpenMP threads over pairs of images; 0 uses the OpenMP default.
  int threads = 0;
  void check(const char* function) const {
    dual.check(function);
    check_at_least(function, "threads", threads, 0);
  }
};

namespace detail {

/// Per-image variances q(p) = Σ(x, x)(p, p) at the input of every activation layer.
struct ImageChain {
  std::vector<std::vector<double>> q;
};

/// The covariance recursion for one pair of images, with buffers reused across pairs.
class ImagePairEngine {
 public:
  ImagePairEngine(const ImageArchitecture& arch, const DualOptions& options) : m_arch(arch), m_options(options) {}

  /// Runs the recursion for images a and b (rows of length H W C).  When `record` is not null
  /// (a = b), the variances at each activation are recorded there; chain_a / chain_b are used
  /// otherwise.  Returns (Σ, Θ) of the output.
  Dual<double> run(const double* a, const double* b, const ImageChain* chain_a, const ImageChain* chain_b,
                   ImageChain* record) {
    return m_arch.needs_pixel_pairs() ? run_full(a, b, chain_a, chain_b, record)
                                      : run_diagonal(a, b, chain_a, chain_b, record);
  }

  /// Every pixel pair whatever the architecture; the output covariances stay in sigma()/theta()
  /// in the [h1][h2][w1][w2] layout.
  Dual<double> run_full(const double* a, const double* b, const ImageChain* chain_a, const ImageChain* chain_b,
                        ImageChain* record);
  const std::vector<double>& sigma() const { return m_sigma; }
  const std::vector<double>& theta() const { return m_theta; }

 private:
  using Kind = ResolvedLayer::Kind;

  // ---- full P x P' covariances, layout [h1][h2][w1][w2] ----
  Dual<double> run_full_impl(const double* a, const double* b, const ImageChain* chain_a, const ImageChain* chain_b,
                             ImageChain* record) {
    const ImageShape& s0 = m_arch.input_shape();
    Eigen::Index H = s0.height, W = s0.width;
    const Eigen::Index C = s0.channels, P = H * W;
    using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const Eigen::Map<const RowMajor> xa(a, P, C), xb(b, P, C);
    m_gram.noalias() = xa * xb.transpose();  // P x P, row p1, column p2
    m_sigma.resize(static_cast<std::size_t>(P * P));
    const double inv_c = 1.0 / static_cast<double>(C);
    for (Eigen::Index h1 = 0; h1 < H; ++h1)
      for (Eigen::Index h2 = 0; h2 < H; ++h2)
        for (Eigen::Index w1 = 0; w1 < W; ++w1)
          for (Eigen::Index w2 = 0; w2 < W; ++w2)
            m_sigma[static_cast<std::size_t>(((h1 * H + h2) * W + w1) * W + w2)] = m_gram(h1 * W + w1, h2 * W + w2) * inv_c;
    m_theta.assign(m_sigma.size(), 0.0);
    for (const ResolvedLayer& layer : m_arch.resolved()) {
      switch (layer.kind) {
        case Kind::conv:
        case Kind::dense: {
          const double scale = layer.sigma_w * layer.sigma_w / static_cast<double>(layer.rows.taps * layer.columns.taps);
          const double bias = layer.sigma_b * layer.sigma_b;
          if (layer.rows.taps == 1 && layer.columns.taps == 1 && layer.rows.contiguous && layer.columns.contiguous) {
            for (std::size_t e = 0; e < m_sigma.size(); ++e) {
              m_sigma[e] = scale * m_sigma[e] + bias;
              m_theta[e] = scale * m_theta[e] + m_sigma[e];
            }
          } else {
            joint(m_sigma, H, W, layer.rows, layer.columns);
            joint(m_theta, H, W, layer.rows, layer.columns);
            for (std::size_t e = 0; e < m_sigma.size(); ++e) {
              m_sigma[e] = scale * m_sigma[e] + bias;
              m_theta[e] = scale * m_theta[e] + m_sigma[e];
            }
          }
          H = layer.out.height;
          W = layer.out.width;
          break;
        }
        case Kind::pool:
          pool(m_sigma, H, W, layer.rows, layer.columns);
          pool(m_theta, H, W, layer.rows, layer.columns);
          H = layer.out.height;
          W = layer.out.width;
          break;
        case Kind::global_pool: {
          double s = 0, t = 0;
          for (std::size_t e = 0; e < m_sigma.size(); ++e) {
            s += m_sigma[e];
            t += m_theta[e];
          }
          const double n = static_cast<double>(m_sigma.size());
          m_sigma.assign(1, s / n);
          m_theta.assign(1, t / n);
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
          const Eigen::Index pixels = H * W;
          if (record != nullptr) {
            std::vector<double> q(static_cast<std::size_t>(pixels));
            for (Eigen::Index h = 0; h < H; ++h)
              for (Eigen::Index w = 0; w < W; ++w)
                q[static_cast<std::size_t>(h * W + w)] = m_sigma[static_cast<std::size_t>(((h * H + h) * W + w) * W + w)];
            record->q.push_back(std::move(q));
            const auto& rq = record->q.back();
            layer.activation->kernel_full(rq.data(), rq.data(), H, W, m_sigma.data(), m_theta.data(), m_options);
          } else {
            layer.activation->kernel_full(chain_a->q[layer.chain].data(), chain_b->q[layer.chain].data(), H, W,
                                          m_sigma.data(), m_theta.data(), m_options);
          }
          break;
        }
      }
    }
    return {m_sigma[0], m_theta[0]};
  }

  /// Conv's A on a [H][H][W][W] tensor: out(o1, o2) = Σ_d in(tap(o1, d), tap(o2, d)) per axis.
  void joint(std::vector<double>& t, Eigen::Index H, Eigen::Index W, const AxisMap& rows, const AxisMap& cols) {
    const Eigen::Index Ho = rows.out, Wo = cols.out, block_in = W * W;
    // Height axis: whole W x W blocks.
    m_buffer.assign(static_cast<std::size_t>(Ho * Ho * block_in), 0.0);
    for (Eigen::Index o1 = 0; o1 < Ho; ++o1)
      for (Eigen::Index o2 = 0; o2 < Ho; ++o2) {
        double* dst = m_buffer.data() + (o1 * Ho + o2) * block_in;
        for (Eigen::Index d = 0; d < rows.taps; ++d) {
          const Eigen::Index i1 = rows.at(o1, d), i2 = rows.at(o2, d);
          if (i1 < 0 || i2 < 0) continue;
          const double* src = t.data() + (i1 * H + i2) * block_in;
          for (Eigen::Index e = 0; e < block_in; ++e) dst[e] += src[e];
        }
      }
    // Width axis inside each block.
    const Eigen::Index block_out = Wo * Wo;
    t.assign(static_cast<std::size_t>(Ho * Ho * block_out), 0.0);
    for (Eigen::Index blk = 0; blk < Ho * Ho; ++blk) {
      const double* in = m_buffer.data() + blk * block_in;
      double* out = t.data() + blk * block_out;
      for (Eigen::Index o1 = 0; o1 < Wo; ++o1)
        for (Eigen::Index d = 0; d < cols.taps; ++d) {
          const Eigen::Index i1 = cols.at(o1, d);
          if (i1 < 0) continue;
          const double* src = in + i1 * W;
          double* dst = out + o1 * Wo;
          if (cols.contiguous) {  // i2 = o2 + d − pad
            const Eigen::Index shift = d - cols.pad;
            const Eigen::Index lo = std::max<Eigen::Index>(0, -shift), hi = std::min<Eigen::Index>(Wo, W - shift);
            for (Eigen::Index o2 = lo; o2 < hi; ++o2) dst[o2] += src[o2 + shift];
          } else {
            for (Eigen::Index o2 = 0; o2 < Wo; ++o2) {
              const Eigen::Index i2 = cols.at(o2, d);
              if (i2 >= 0) dst[o2] += src[i2];
            }
          }
        }
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
    const Eigen::Index C = s0.channels, P = H * W;
    m_sigma.resize(static_cast<std::size_t>(P));
    const double inv_c = 1.0 / static_cast<double>(C);
    for (Eigen::Index p = 0; p < P; ++p) {
      double s = 0;
      for (Eigen::Index c = 0; c < C; ++c) s += a[p * C + c] * b[p * C + c];
      m_sigma[static_cast<std::size_t>(p)] = s * inv_c;
    }
    m_theta.assign(m_sigma.size(), 0.0);
    for (const ResolvedLayer& layer : m_arch.resolved()) {
      switch (layer.kind) {
        case Kind::conv:
        case Kind::dense: {
          const double scale = layer.sigma_w * layer.sigma_w / static_cast<double>(layer.rows.taps * layer.columns.taps);
          const double bias = layer.sigma_b * layer.sigma_b;
          if (!(layer.rows.taps == 1 && layer.columns.taps == 1)) {
            window_sum(m_sigma, W, layer.rows, layer.columns);
            window_sum(m_theta, W, layer.rows, layer.columns);
          }
          for (std::size_t e = 0; e < m_sigma.size(); ++e) {
            m_sigma[e] = scale * m_sigma[e] + bias;
            m_theta[e] = scale * m_theta[e] + m_sigma[e];
          }
          H = layer.out.height;
          W = layer.out.width;
          break;
        }
        case Kind::global_pool:  // over one pixel (pooling over more is the full mode)
          break;
        case Kind::pool:  // unreachable: pooling selects the full mode
          break;
        case Kind::flatten: {
          double s = 0, t = 0;
          for (std::size_t e = 0; e < m_sigma.size(); ++e) {
            s += m_sigma[e];
            t += m_theta[e];
          }
          const double n = static_cast<double>(m_sigma.size());
          m_sigma.assign(1, s / n);
          m_theta.assign(1, t / n);
          H = W = 1;
          break;
        }
        case Kind::activation:
          if (record != nullptr) {
            record->q.push_back(m_sigma);
            const auto& rq = record->q.back();
            layer.activation->kernel_diagonal(rq.data(), rq.data(), H * W, m_sigma.data(), m_theta.data(), m_options);
          } else {
            layer.activation->kernel_diagonal(chain_a->q[layer.chain].data(), chain_b->q[layer.chain].data(), H * W,
                                              m_sigma.data(), m_theta.data(), m_options);
          }
          break;
      }
    }
    (void)H;
    return {m_sigma[0], m_theta[0]};
  }

  /// out(oh, ow) = Σ_{dh, dw} in(tap(oh, dh), tap(ow, dw)) on a vector over pixels (row-major).
  void window_sum(std::vector<double>& t, Eigen::Index W, const AxisMap& rows, const AxisMap& cols) {
    const Eigen::Index Ho = rows.out, Wo = cols.out;
    m_buffer.assign(static_cast<std::size_t>(Ho * W), 0.0);
    for (Eigen::Index o = 0; o < Ho; ++o)
      for (Eigen::Index d = 0; d < rows.taps; ++d) {
        const Eigen::Index i = rows.at(o, d);
        if (i < 0) continue;
        for (Eigen::Index w = 0; w < W; ++w) m_buffer[static_cast<std::size_t>(o * W + w)] += t[static_cast<std::size_t>(i * W + w)];
      }
    t.assign(static_cast<std::size_t>(Ho * Wo), 0.0);
    for (Eigen::Index o = 0; o < Ho; ++o)
      for (Eigen::Index ow = 0; ow < Wo; ++ow) {
        double s = 0;
        for (Eigen::Index d = 0; d < cols.taps; ++d) {
          const Eigen::Index i = cols.at(ow, d);
          if (i >= 0) s += m_buffer[static_cast<std::size_t>(o * W + i)];
        }
        t[static_cast<std::size_t>(o * Wo + ow)] = s;
      }
  }

  const ImageArchitecture& m_arch;
  DualOptions m_options;
  Eigen::MatrixXd m_gram;
  std::vector<double> m_sigma, m_theta, m_buffer;
};

inline Dual<double> ImagePairEngine::run_full(const double* a, const double* b, const ImageChain* chain_a,
                                              const ImageChain* chain_b, ImageChain* record) {
  return run_full_impl(a, b, chain_a, chain_b, record);
}

template <class D>
void check_images(const char* function, const char* name, const ImageArchitecture& arch, const Eigen::MatrixBase<D>& x) {
  static_assert(std::is_same_v<typename D::Scalar, double>, "ntk: image kernels take double data");
  check_nonempty(function, name, x);
  if (x.cols() != arch.input_shape().size())
    fail<std::invalid_argument>(function, name, " must have ", arch.input_shape().size(), " columns for shape ",
                                arch.input_shape().str(), " (H x W x C, channels last) (got ", x.cols(), ")");
  check_finite(function, name, x);
}

using RowMajorMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

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
      const Dual<double> d = engine.run(x1.row(i).data(), x1.row(i).data(), nullptr, nullptr, &chain1[static_cast<std::size_t>(i)]);
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
    fail<std::overflow_error>(function, "the kernel overflows double (got a non-finite entry); reduce depth or sigma_w");
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

/// A finite image network with parameters θ ~ N(0, 1) in the NTK parametrization.
/// Every Conv needs channels >= 1 and every Dense width >= 1; the last layer's width is the
/// number of outputs k.  Parameter order: layers in order; a Conv holds its weights
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
          detail::fail<std::invalid_argument>("ImageNetwork", "layer ", l, " needs at least 1 ",
                                              r.kind == detail::ResolvedLayer::Kind::conv ? "channel" : "unit",
                                              " for a finite network (got ", r.width, ")");
        const Eigen::Index fan_in = r.rows.taps * r.columns.taps * r.in.channels;
        info.fan_in = fan_in;
        info.weight_scale = r.sigma_w / std::sqrt(static_cast<double>(fan_in));
        offset += r.width * fan_in + r.width;
      }
      m_info.push_back(info);
    }
    m_outputs = m_arch.resolved().back().out.channels;
    m_theta.resize(offset);
    NormalGenerator generator(seed);
    for (Eigen::Index p = 0; p < offset; ++p) m_theta[p] = generator.normal();
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
    check_finite("ImageNetwork::set_parameters", "theta", theta);
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
    double weight_scale = 0;
  };
  /// What the backward pass needs of one layer: its input (P x C, row-major) and, for
  /// activations, φ'(z); for convolutions the patch matrix.
  struct Tape {
    RowMajor input, derivative, patches;
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
          z.rowwise() += (r.sigma_b * beta).transpose();
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
      }
    }
    return x;
  }

  /// Accumulates ∂(seed · f)/∂θ into grad.
  void run_backward(const RowMajor& seed, const std::vector<Tape>& tape, Eigen::VectorXd& grad) const {
    using Kind = detail::ResolvedLayer::Kind;
    RowMajor delta = seed;  // ∂/∂(output of layer l)
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
              r.sigma_b * delta.colwise().sum().transpose();
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
      }
    }
  }

  ImageArchitecture m_arch;
  std::vector<Info> m_info;
  Eigen::Index m_outputs = 1;
  Eigen::VectorXd m_theta;
};

}  // namespace ntk
