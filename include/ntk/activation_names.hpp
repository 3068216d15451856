#pragma once
/// \file activation_names.hpp
/// Activations by name, as the command-line tool and the Python package spell them:
///   relu, leaky_relu[:SLOPE] (0.01), abs, erf, tanh, sigmoid (centered), gelu, identity, sin, cos,
///   softplus, hermite:c0,c1,... (coefficients from h_0), opt:D (sphere dimension D >= 2),
///   and Neural Tangents' stax zoo: sign, abrelu:A,B, exp:A,B, gaussian:A,B, rbf:GAMMA,
///   monomial:N, rectified_monomial:N, polynomial:c0,c1,... (monomial coefficients from z^0).
/// with_activation(name, f) calls f with an object of the named activation type, so one generic
/// lambda serves every activation: with_activation("tanh", [&](const auto& phi) { ... });
/// with_activation(name, quadrature, f) wraps closed-form ones in ntk::Quadrature on request.

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "activations.hpp"
#include "errors.hpp"

namespace ntk {

/// The names with_activation accepts, for messages and help texts.
inline constexpr const char* activation_names =
    "relu, leaky_relu:SLOPE, abs, erf, tanh, sigmoid, gelu, identity, sin, cos, softplus, "
    "hermite:c0,c1,..., opt:D, sign, abrelu:A,B, exp:A,B, gaussian:A,B, rbf:GAMMA, monomial:N, "
    "rectified_monomial:N, polynomial:c0,c1,...";

namespace detail {

/// The finite numbers of a comma-separated list ("what" names it in messages).
inline std::vector<double> activation_parameters(const std::string& text, const std::string& what) {
  std::vector<double> out;
  std::size_t begin = 0;
  while (true) {
    const std::size_t end = text.find(',', begin);
    const std::string cell = text.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    char* stop = nullptr;
    errno = 0;
    const double v = std::strtod(cell.c_str(), &stop);
    if (cell.empty() || stop != cell.c_str() + cell.size() || errno == ERANGE || !std::isfinite(v))
      fail<std::invalid_argument>("with_activation", what, ": bad number '", cell, "'");
    out.push_back(v);
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  return out;
}

}  // namespace detail

/// Calls f(phi) with the activation named `name` (see the file comment) and returns what f returns.
/// Throws std::invalid_argument for an unknown name or a bad parameter (the activation types'
/// own checks apply too, e.g. opt:D needs D >= 2).
template <class F>
decltype(auto) with_activation(const std::string& name, F&& f) {
  const auto colon = name.find(':');
  const std::string head = name.substr(0, colon);
  const std::string tail = colon == std::string::npos ? "" : name.substr(colon + 1);
  const auto no_parameter = [&] {
    if (colon != std::string::npos)
      detail::fail<std::invalid_argument>("with_activation", "activation '", head, "' takes no parameter (got '", name,
                                          "')");
  };
  if (head == "relu") return no_parameter(), f(Relu{});
  if (head == "leaky_relu")
    return f(LeakyRelu{tail.empty() ? 0.01 : detail::activation_parameters(tail, "leaky_relu slope").at(0)});
  if (head == "abs") return no_parameter(), f(Abs{});
  if (head == "erf") return no_parameter(), f(Erf{});
  if (head == "tanh") return no_parameter(), f(Tanh{});
  if (head == "sigmoid") return no_parameter(), f(Sigmoid{});
  if (head == "gelu") return no_parameter(), f(Gelu{});
  if (head == "identity") return no_parameter(), f(Identity{});
  if (head == "sin") return no_parameter(), f(Sin{});
  if (head == "cos") return no_parameter(), f(Cos{});
  if (head == "softplus") return no_parameter(), f(Softplus{});
  if (head == "hermite") return f(Hermite(detail::activation_parameters(tail, "hermite coefficients")));
  if (head == "opt") {
    if (tail.empty())
      detail::fail<std::invalid_argument>("with_activation", "activation 'opt' needs a dimension, e.g. opt:2");
    return f(OptimalActivation(detail::activation_parameters(tail, "opt dimension").at(0)));
  }
  if (head == "sign") return no_parameter(), f(Sign{});
  const auto exactly = [&](std::size_t count, const char* what) {
    std::vector<double> v =
        tail.empty() ? std::vector<double>{} : detail::activation_parameters(tail, head + " " + what);
    if (v.size() != count)
      detail::fail<std::invalid_argument>("with_activation", "activation '", head, "' needs ", count, " ", what,
                                          " (got ", v.size(), " in '", name, "')");
    return v;
  };
  const auto degree = [&] {
    const double n = exactly(1, "degree")[0];
    if (n != std::floor(n) || n < 0 || n > 64)
      detail::fail<std::invalid_argument>("with_activation", "activation '", head, "' needs an integer degree (got '",
                                          tail, "')");
    return static_cast<int>(n);
  };
  if (head == "abrelu") {
    const auto v = exactly(2, "slopes");
    return f(ABRelu(v[0], v[1]));
  }
  if (head == "exp") {
    const auto v = exactly(2, "parameters");
    return f(Exp(v[0], v[1]));
  }
  if (head == "gaussian") {
    const auto v = exactly(2, "parameters");
    return f(Gaussian(v[0], v[1]));
  }
  if (head == "rbf") return f(Rbf(exactly(1, "gamma")[0]));
  if (head == "monomial") return f(Monomial(degree()));
  if (head == "rectified_monomial") return f(RectifiedMonomial(degree()));
  if (head == "polynomial") return f(Polynomial(detail::activation_parameters(tail, "polynomial coefficients")));
  detail::fail<std::invalid_argument>("with_activation", "unknown activation '", name, "' (known: ", activation_names,
                                      ")");
}

/// As with_activation(name, f), but when `quadrature` is true an activation with a closed-form dual
/// reaches f as ntk::Quadrature<Phi>, so its kernels come from Gauss–Hermite quadrature (a checking
/// mode: the command-line tool's --quadrature, Python's quadrature=).  Only code that calls this
/// overload compiles the quadrature path for the closed-form activations.
template <class F>
decltype(auto) with_activation(const std::string& name, bool quadrature, F&& f) {
  return with_activation(name, [&](const auto& phi) -> decltype(auto) {
    using Phi = std::decay_t<decltype(phi)>;
    if constexpr (has_closed_form_dual_v<Phi, double>) {
      if (quadrature) return f(Quadrature<Phi>{phi});
    }
    return f(phi);
  });
}

}  // namespace ntk
