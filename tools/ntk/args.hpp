#pragma once
// Command-line parsing and activation names for the ntk tool.

#include <ntk/activations.hpp>

#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "io.hpp"

namespace ntk_cli {

/// "--name value" options and "--flag" switches of one subcommand; anything else is an error.
class Args {
 public:
  Args(const std::vector<std::string>& words, const std::set<std::string>& options,
       const std::set<std::string>& flags) {
    for (std::size_t i = 0; i < words.size(); ++i) {
      const std::string& w = words[i];
      if (w.rfind("--", 0) != 0) throw CliError("unexpected argument '" + w + "'");
      const std::string name = w.substr(2);
      if (flags.count(name)) {
        m_flags.insert(name);
      } else if (options.count(name)) {
        if (i + 1 >= words.size()) throw CliError("option --" + name + " needs a value");
        m_values[name] = words[++i];
      } else {
        throw CliError("unknown option '" + w + "'");
      }
    }
  }

  bool has(const std::string& name) const { return m_values.count(name) > 0; }
  bool flag(const std::string& name) const { return m_flags.count(name) > 0; }
  std::string text(const std::string& name, const std::string& fallback = "") const {
    const auto it = m_values.find(name);
    return it == m_values.end() ? fallback : it->second;
  }
  std::string required(const std::string& name) const {
    if (!has(name)) throw CliError("missing required option --" + name);
    return m_values.at(name);
  }
  double number(const std::string& name, double fallback) const {
    if (!has(name)) return fallback;
    double v;
    if (!parse_double(m_values.at(name), v) || !std::isfinite(v))
      throw CliError("--" + name + " must be a finite number (got '" + m_values.at(name) + "')");
    return v;
  }
  long integer(const std::string& name, long fallback) const {
    if (!has(name)) return fallback;
    const std::string& s = m_values.at(name);
    char* stop = nullptr;
    errno = 0;
    const long v = std::strtol(s.c_str(), &stop, 10);
    if (s.empty() || *stop != '\0' || errno == ERANGE)
      throw CliError("--" + name + " must be an integer (got '" + s + "')");
    return v;
  }

 private:
  std::map<std::string, std::string> m_values;
  std::set<std::string> m_flags;
};

/// Architecture flags shared by the subcommands, with the documented defaults.
struct Architecture {
  std::string activation = "relu";
  long depth = 3;
  double sigma_w = 1, sigma_b = 1;
  int quadrature = 0;
  int threads = 0;

  static Architecture from(const Args& a) {
    Architecture r;
    r.activation = a.text("activation", "relu");
    r.depth = a.integer("depth", 3);
    r.sigma_w = a.number("sigma-w", 1);
    r.sigma_b = a.number("sigma-b", 1);
    r.quadrature = static_cast<int>(a.integer("quadrature", 0));
    r.threads = static_cast<int>(a.integer("threads", 0));
    if (r.depth < 1) throw CliError("--depth must be at least 1 (got " + std::to_string(r.depth) + ")");
    if (a.has("quadrature") && r.quadrature < 1)
      throw CliError("--quadrature must be at least 1 (got " + std::to_string(r.quadrature) + ")");
    if (r.threads < 0) throw CliError("--threads must be >= 0 (got " + std::to_string(r.threads) + ")");
    return r;
  }
};

inline const std::set<std::string> architecture_options = {"activation", "depth", "sigma-w", "sigma-b",
                                                           "quadrature", "threads"};

inline std::vector<double> number_list(const std::string& text, const std::string& what) {
  std::vector<double> out;
  for (const auto& cell : split(text, ',')) {
    double v;
    if (!parse_double(cell, v) || !std::isfinite(v))
      throw CliError(what + ": bad number '" + cell + "'");
    out.push_back(v);
  }
  if (out.empty()) throw CliError(what + ": empty list");
  return out;
}

/// Calls f(phi) with the activation named `name`: relu, leaky_relu:SLOPE, abs, erf, tanh, sigmoid
/// (centered), gelu, identity, sin, cos, softplus, hermite:c0,c1,... (from h_0), opt:D.
template <class F>
void with_activation(const std::string& name, F&& f) {
  const auto colon = name.find(':');
  const std::string head = name.substr(0, colon);
  const std::string tail = colon == std::string::npos ? "" : name.substr(colon + 1);
  auto no_parameter = [&] {
    if (colon != std::string::npos) throw CliError("activation '" + head + "' takes no parameter");
  };
  if (head == "relu") { no_parameter(); f(ntk::Relu{}); }
  else if (head == "leaky_relu") {
    f(ntk::LeakyRelu{tail.empty() ? 0.01 : number_list(tail, "leaky_relu slope").at(0)});
  }
  else if (head == "abs") { no_parameter(); f(ntk::Abs{}); }
  else if (head == "erf") { no_parameter(); f(ntk::Erf{}); }
  else if (head == "tanh") { no_parameter(); f(ntk::Tanh{}); }
  else if (head == "sigmoid") { no_parameter(); f(ntk::Sigmoid{}); }
  else if (head == "gelu") { no_parameter(); f(ntk::Gelu{}); }
  else if (head == "identity") { no_parameter(); f(ntk::Identity{}); }
  else if (head == "sin") { no_parameter(); f(ntk::Sin{}); }
  else if (head == "cos") { no_parameter(); f(ntk::Cos{}); }
  else if (head == "softplus") { no_parameter(); f(ntk::Softplus{}); }
  else if (head == "hermite") { f(ntk::Hermite(number_list(tail, "hermite coefficients"))); }
  else if (head == "opt") {
    if (tail.empty()) throw CliError("activation 'opt' needs a dimension, e.g. opt:2");
    f(ntk::OptimalActivation(number_list(tail, "opt dimension").at(0)));
  } else {
    throw CliError("unknown activation '" + name +
                   "' (known: relu, leaky_relu:SLOPE, abs, erf, tanh, sigmoid, gelu, identity, sin, "
                   "cos, softplus, hermite:c0,c1,..., opt:D)");
  }
}

}  // namespace ntk_cli
