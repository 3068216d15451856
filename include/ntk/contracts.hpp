#pragma once
/// \file contracts.hpp
/// What ntk needs from user types, checked at compile time where they are used (kernel(), Network,
/// dual()), with a message naming the missing member.  docs/architecture.md describes both
/// contracts; examples/custom_activation.cpp is a complete user-defined activation.
///
/// Activation (activations.hpp lists the optional members): `S value(S) const` and
/// `S derivative(S) const`, callable with the scalar type in use.
///
/// Architecture (layers.hpp: ntk::Serial<...> and ntk::Mlp<Phi> are the two models):
///   std::size_t size() const                 number of layers
///   void for_each_layer(F&& f) const         calls f(index, layer) in order, layer being
///                                            ntk::Dense or ntk::Activation<Phi>
///   void for_each_layer_reverse(F&& f) const the same backwards (finite networks only)

#include <cstddef>
#include <type_traits>
#include <utility>

#include "activations.hpp"
#include "detail/batch_values.hpp"
#include "layers.hpp"

namespace ntk {
namespace detail {

/// A visitor that accepts any layer, to probe for_each_layer.
struct AnyLayer {
  template <class Layer>
  void operator()(std::size_t, const Layer&) const {}
};

template <class Phi, class Scalar, class = void>
struct has_value : std::false_type {};
template <class Phi, class Scalar>
struct has_value<Phi, Scalar, std::void_t<decltype(std::declval<const Phi&>().value(Scalar()))>> : std::true_type {};
template <class Phi, class Scalar, class = void>
struct has_derivative : std::false_type {};
template <class Phi, class Scalar>
struct has_derivative<Phi, Scalar, std::void_t<decltype(std::declval<const Phi&>().derivative(Scalar()))>>
    : std::true_type {};

template <class Arch, class = void>
struct has_size : std::false_type {};
template <class Arch>
struct has_size<Arch, std::void_t<decltype(std::size_t(std::declval<const Arch&>().size()))>> : std::true_type {};
template <class Arch, class = void>
struct has_for_each_layer : std::false_type {};
template <class Arch>
struct has_for_each_layer<Arch, std::void_t<decltype(std::declval<const Arch&>().for_each_layer(AnyLayer{}))>>
    : std::true_type {};
template <class Arch, class = void>
struct has_for_each_layer_reverse : std::false_type {};
template <class Arch>
struct has_for_each_layer_reverse<Arch,
                                  std::void_t<decltype(std::declval<const Arch&>().for_each_layer_reverse(AnyLayer{}))>>
    : std::true_type {};

/// The activation contract; true, or a static_assert naming the missing member.
template <class Phi, class Scalar>
constexpr bool check_activation_contract() {
  static_assert(has_value<Phi, Scalar>::value,
                "ntk: the activation type needs a member `S value(S z) const` (phi(z)) callable "
                "with the scalar type (see docs/architecture.md)");
  static_assert(has_derivative<Phi, Scalar>::value,
                "ntk: the activation type needs a member `S derivative(S z) const` (phi'(z)) "
                "callable with the scalar type (see docs/architecture.md)");
  return has_value<Phi, Scalar>::value && has_derivative<Phi, Scalar>::value;
}

/// The activations inside the architectures ntk defines; other architectures are checked where
/// their layers are visited.
template <class Arch, class Scalar>
struct LayerContracts {
  static constexpr bool check() { return true; }
};
template <class Scalar, class... Layers>
struct LayerContracts<Serial<Layers...>, Scalar> {
  template <class Layer>
  static constexpr bool one() {
    if constexpr (is_activation_layer<Layer>::value) {
      return check_activation_contract<decltype(Layer::phi), Scalar>();
    } else {
      return true;
    }
  }
  static constexpr bool check() { return (one<Layers>() && ...); }
};
template <class Phi, class Scalar>
struct LayerContracts<Mlp<Phi>, Scalar> {
  static constexpr bool check() { return check_activation_contract<Phi, Scalar>(); }
};

/// The architecture contract as the infinite-width kernels use it (`reverse`: and as finite
/// networks use it); true, or a static_assert naming the missing member.
template <class Arch, class Scalar, bool reverse = false>
constexpr bool check_architecture_contract() {
  static_assert(has_size<Arch>::value,
                "ntk: the architecture type needs a member `std::size_t size() const` (number of "
                "layers; see docs/architecture.md)");
  static_assert(has_for_each_layer<Arch>::value,
                "ntk: the architecture type needs a member `for_each_layer(f) const` calling "
                "f(index, layer) for each layer in order (see docs/architecture.md)");
  static_assert(!reverse || has_for_each_layer_reverse<Arch>::value,
                "ntk: a finite network's architecture type needs a member "
                "`for_each_layer_reverse(f) const` (see docs/architecture.md)");
  return LayerContracts<Arch, Scalar>::check();
}

}  // namespace detail
}  // namespace ntk
