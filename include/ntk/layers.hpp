#pragma once
/// \file layers.hpp
/// The one description of an architecture that both worlds use (docs/architecture.md):
///   Dense            z = σ_w w x / sqrt(m_in) + σ_b β   (NTK parametrization, lecture eq. 2,
///                    with the fan-in m_in as divisor; the first layer divides by d)
///                    kernel state: Σ' = σ_w² Σ + σ_b²,  κ' = Σ' + σ_w² κ
///   Activation<Phi>  x = φ(z)
///                    kernel state: Σ' = L^φ(Σ),  κ' = κ · L^φ'(Σ)
/// Compose at compile time with serial(...), or at run time with mlp(phi, depth, ...).
/// `depth` counts hidden (Dense, Activation) pairs before the readout Dense, so Jacot's L = 4
/// network is depth 3.

#include <Eigen/Core>
#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "activations.hpp"
#include "errors.hpp"

namespace ntk {

/// How a Dense or Conv layer scales its trained parameters (stax's `parameterization`).
///  - ntk (the default, the lecture's eq. 2): z = σ_w w x / sqrt(m_in) + σ_b β with θ = (w, β) ~
///    N(0, 1) trained;
///  - standard: z = W x + b with W ~ N(0, σ_w² / m_in) and b ~ N(0, σ_b²) trained directly (no
///    bias parameter at all when σ_b = 0, stax's b_std=None).
/// Both give the same function at initialization, hence the same NNGP; their NTKs differ:
///    ntk:      Θ' = σ_w² Θ + (σ_w² Σ + σ_b²)
///    standard: Θ' = σ_w² Θ + (m_in Σ + [σ_b > 0])
/// with Σ the layer's input covariance per unit (x·x' / m_in).  The standard NTK grows with the
/// widths m_in of the finite network it describes (no finite limit as they grow), so a standard
/// layer needs the width of the layer before it; the first layer's m_in is the input dimension d.
enum class Parametrization { ntk, standard };

/// A fully connected layer.  `width` is its number of outputs, used by finite networks
/// (network.hpp), and by the infinite-width kernels only as the fan-in of a standard layer after it.
struct Dense {
  double sigma_w = 1;
  double sigma_b = 1;
  Eigen::Index width = 0;
  Parametrization parametrization = Parametrization::ntk;

  Dense() = default;
  Dense(double sigma_w_, double sigma_b_, Eigen::Index width_ = 0,
        Parametrization parametrization_ = Parametrization::ntk)
      : sigma_w(sigma_w_), sigma_b(sigma_b_), width(width_), parametrization(parametrization_) {}

  /// Throws std::invalid_argument unless σ_w > 0, σ_b >= 0 (finite) and width >= 0.
  void check(const char* function) const {
    detail::check_positive(function, "sigma_w", sigma_w);
    detail::check_nonnegative(function, "sigma_b", sigma_b);
    detail::check_at_least<Eigen::Index>(function, "width", width, 0);
  }
};

/// An elementwise nonlinearity φ applied to the previous layer's outputs.
template <class Phi>
struct Activation {
  Phi phi{};
};

template <class Phi>
Activation<Phi> activation(Phi phi) {
  return Activation<Phi>{std::move(phi)};
}

template <class T>
struct is_dense : std::is_same<T, Dense> {};
template <class T>
struct is_activation_layer : std::false_type {};
template <class Phi>
struct is_activation_layer<Activation<Phi>> : std::true_type {};

/// A compile-time composition of layers, applied left to right.
template <class... Layers>
struct Serial {
  static_assert(sizeof...(Layers) > 0, "ntk::Serial needs at least one layer");
  static_assert(((is_dense<Layers>::value || is_activation_layer<Layers>::value) && ...),
                "ntk::Serial: every layer must be ntk::Dense or ntk::Activation<Phi>");
  std::tuple<Layers...> layers;

  static constexpr std::size_t size() { return sizeof...(Layers); }

  /// Calls f(index, layer) for each layer in order.
  template <class F>
  void for_each_layer(F&& f) const {
    visit(f, std::index_sequence_for<Layers...>{});
  }

 private:
  template <class F, std::size_t... Ks>
  void visit(F& f, std::index_sequence<Ks...>) const {
    (f(Ks, std::get<Ks>(layers)), ...);
  }
  template <class F, std::size_t... Ks>
  void visit_reverse(F& f, std::index_sequence<Ks...>) const {
    constexpr std::size_t last = sizeof...(Layers) - 1;
    (f(last - Ks, std::get<last - Ks>(layers)), ...);
  }

 public:
  /// Calls f(index, layer) for each layer in reverse order.
  template <class F>
  void for_each_layer_reverse(F&& f) const {
    visit_reverse(f, std::index_sequence_for<Layers...>{});
  }
};

/// serial(Dense(...), activation(Relu{}), Dense(...)).
template <class... Layers>
Serial<Layers...> serial(Layers... layers) {
  return Serial<Layers...>{std::tuple<Layers...>(std::move(layers)...)};
}

/// A multilayer perceptron of run-time depth: `depth` hidden (Dense, Activation<Phi>) pairs and a
/// readout Dense.  dense[l] may be edited to give each layer its own σ_w, σ_b and width.
template <class Phi>
struct Mlp {
  std::vector<Dense> dense;  ///< depth + 1 affine layers; the last is the readout
  Activation<Phi> act{};

  std::size_t depth() const { return dense.empty() ? 0 : dense.size() - 1; }
  std::size_t size() const { return dense.empty() ? 0 : 2 * dense.size() - 1; }

  /// Calls f(index, layer) for each layer in order: Dense, Activation, ..., Dense.
  template <class F>
  void for_each_layer(F&& f) const {
    for (std::size_t l = 0; l < dense.size(); ++l) {
      f(2 * l, dense[l]);
      if (l + 1 < dense.size()) f(2 * l + 1, act);
    }
  }
  /// Calls f(index, layer) for each layer in reverse order.
  template <class F>
  void for_each_layer_reverse(F&& f) const {
    for (std::size_t l = dense.size(); l-- > 0;) {
      if (l + 1 < dense.size()) f(2 * l + 1, act);
      f(2 * l, dense[l]);
    }
  }
};

/// An MLP of `depth` hidden layers of `width` units (width matters for finite networks only),
/// weight and bias scales σ_w and σ_b in every layer, and `outputs` readout units.
/// Throws std::invalid_argument for depth < 1 or bad scales.
template <class Phi>
Mlp<Phi> mlp(Phi phi, long depth, Eigen::Index width = 0, double sigma_w = 1, double sigma_b = 1,
             Eigen::Index outputs = 1) {
  detail::check_at_least<long>("mlp", "depth", depth, 1);
  Mlp<Phi> net;
  net.act = Activation<Phi>{std::move(phi)};
  net.dense.assign(static_cast<std::size_t>(depth) + 1, Dense(sigma_w, sigma_b, width));
  net.dense.back().width = outputs;
  for (const auto& layer : net.dense) layer.check("mlp");
  return net;
}

/// The shape of an MLP by name, for mlp(phi, shape):
///   ntk::MlpShape shape;
///   shape.depth = 10;
///   shape.sigma_w = 1.5;
///   const auto net = ntk::mlp(ntk::Relu{}, shape);
struct MlpShape {
  long depth = 1;            ///< hidden (Dense, Activation) pairs before the readout
  Eigen::Index width = 0;    ///< hidden units (finite networks only)
  double sigma_w = 1;        ///< weight scale of every layer
  double sigma_b = 1;        ///< bias scale of every layer
  Eigen::Index outputs = 1;  ///< readout units
};

/// mlp() with every parameter named; the same checks.
template <class Phi>
Mlp<Phi> mlp(Phi phi, const MlpShape& shape) {
  return mlp(std::move(phi), shape.depth, shape.width, shape.sigma_w, shape.sigma_b, shape.outputs);
}

namespace detail {

/// Validates every Dense layer of an architecture; throws std::invalid_argument on an empty one.
template <class Arch>
void check_architecture(const char* function, const Arch& arch) {
  if (arch.size() == 0) fail<std::invalid_argument>(function, "architecture has no layers (got 0)");
  Eigen::Index previous_width = -1;  // -1: the input, whose dimension is the data's
  arch.for_each_layer([&](std::size_t l, const auto& layer) {
    if constexpr (std::is_same_v<std::decay_t<decltype(layer)>, Dense>) {
      layer.check(function);
      if (layer.parametrization == Parametrization::standard && previous_width == 0)
        fail<std::invalid_argument>(function, "layer ", l,
                                    " (dense, standard parametrization): its NTK scales with its fan-in, so the "
                                    "Dense layer before it needs a width (got 0)");
      previous_width = layer.width;
    } else if constexpr (is_activation_layer<std::decay_t<decltype(layer)>>::value) {
      check_activation_parameters(function, layer.phi);
    }
  });
}

}  // namespace detail
}  // namespace ntk
