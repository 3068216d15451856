#pragma once
/// \file detail/steps.hpp
/// An architecture turned into evaluation steps, one per layer.  Not public API; see kernel.hpp.

#include <cstddef>
#include <tuple>
#include <utility>
#include <vector>

#include "../layers.hpp"
#include "layer_dual.hpp"

namespace ntk {
namespace detail {

/// A Dense layer as the kernel engine applies it: Σ' = w2 Σ + b2 and Θ' = w2 Θ + (tw Σ + tb),
/// Σ, Θ the layer's input.  NTK parametrization: tw = w2, tb = b2 (the bracket is Σ'); standard:
/// tw = the fan-in, tb = 1 with a bias, 0 without (layers.hpp, Parametrization).
template <class Scalar>
struct DenseStep {
  Scalar w2, b2, tw, tb;
  DenseStep() = default;
  DenseStep(const Dense& layer, double fan_in)
      : w2(static_cast<Scalar>(layer.sigma_w * layer.sigma_w)), b2(static_cast<Scalar>(layer.sigma_b * layer.sigma_b)) {
    const bool standard = layer.parametrization == Parametrization::standard;
    tw = standard ? static_cast<Scalar>(fan_in) : w2;
    tb = standard ? Scalar(layer.sigma_b > 0 ? 1 : 0) : b2;
  }
};

template <class Layer, class Scalar>
struct StepFor {
  using type = DenseStep<Scalar>;
};
template <class Phi, class Scalar>
struct StepFor<Activation<Phi>, Scalar> {
  using type = LayerDual<Phi, Scalar>;
};

/// Per-layer evaluation steps of an architecture: Dense becomes a DenseStep, Activation<Phi> its
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
  std::vector<DenseStep<Scalar>> m_dense;
  std::vector<LayerDual<Phi, Scalar>> m_duals;
};

}  // namespace detail
}  // namespace ntk
