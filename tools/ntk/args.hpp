#pragma once
// Command-line options of the ntk tool, declared through CLI11 (Debian libcli11-dev): each
// subcommand lists its options in one place (an Options builder over its CLI::App), CLI11 does the
// tokenizing, `--name=value`, per-command help and usage, and the builder converts every value with
// the tool's own checks so an error is one line naming the option:
//   - numbers are finite (subnormals accepted), integers are in a stated range (no truncation);
//   - choices are one of a fixed list; lists have no empty cells;
//   - an option given twice is an error (no silent override);
//   - an unknown option or a stray argument is an error.

#include <CLI/CLI.hpp>
#include <ntk/activations.hpp>
#include <ntk/kernel_options.hpp>
#include <ntk/quadrature.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <thread>

#if defined(_OPENMP)
#include <omp.h>
#endif
#include <type_traits>
#include <vector>

#include "io.hpp"

namespace ntk_cli {

/// Parses a whole integer in [lo, hi] (no sign tricks, no truncation) or throws naming `what`.
inline long long parse_integer(const std::string& text, long long lo, long long hi, const std::string& what) {
  long long v = 0;
  std::size_t i = 0;
  const bool negative = !text.empty() && text[0] == '-';
  if (negative || (!text.empty() && text[0] == '+')) i = 1;
  bool ok = i < text.size();
  bool overflow = false;
  for (; ok && i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') {
      ok = false;
      break;
    }
    const int digit = text[i] - '0';
    if (v > (std::numeric_limits<long long>::max() - digit) / 10)
      overflow = true;
    else
      v = v * 10 + digit;
  }
  if (!ok) throw CliError(what + " must be an integer (got '" + text + "')");
  if (negative) v = -v;
  if (overflow || v < lo || v > hi)
    throw CliError(what + " must be between " + std::to_string(lo) + " and " + std::to_string(hi) + " (got " + text +
                   ")");
  return v;
}

/// Parses a finite number (subnormals included) or throws naming `what`.
inline double parse_finite(const std::string& text, const std::string& what) {
  double v;
  if (!parse_double(text, v) || !std::isfinite(v))
    throw CliError(what + " must be a finite number (got '" + text + "')");
  return v;
}

/// Comma-separated finite numbers; an empty list or an empty cell is an error.
inline std::vector<double> number_list(const std::string& text, const std::string& what) {
  std::vector<double> out;
  for (const auto& cell : split(text, ',')) {
    double v;
    if (!parse_double(cell, v) || !std::isfinite(v)) throw CliError(what + ": bad number '" + cell + "'");
    out.push_back(v);
  }
  if (out.empty()) throw CliError(what + ": empty list");
  return out;
}

/// The options of one subcommand.  Each method declares `--name`, binds it to a variable and
/// states its conversion; the variable keeps its default when the option is absent.  Add an
/// option to a subcommand by one call here, in the subcommand's `add_*` function.
class Options {
 public:
  explicit Options(CLI::App* app) : m_app(app) {}

  CLI::App* app() const { return m_app; }

  /// A string value (a path, a name).
  Options& text(const std::string& name, std::string& target, const std::string& help) {
    return add(name, help, "TEXT", [&target](const std::string& v) { target = v; });
  }
  /// A string value that must be given.
  Options& required_text(const std::string& name, std::string& target, const std::string& help) {
    m_required.push_back(name);
    return add(name, help + " (required)", "TEXT", [&target](const std::string& v) { target = v; });
  }
  /// One of `choices`.  `names` is "name" or "name,alias" (an alias kept for compatibility).
  Options& choice(const std::string& names, std::string& target, std::vector<std::string> choices,
                  const std::string& help) {
    std::string list;
    for (const auto& c : choices) list += (list.empty() ? "" : "|") + c;
    const std::string name = names.substr(0, names.find(','));
    return add(names, help, list, [&target, choices, list, name](const std::string& v) {
      for (const auto& c : choices)
        if (v == c) {
          target = v;
          return;
        }
      throw CliError("--" + name + " must be " + list + " (got '" + v + "')");
    });
  }
  /// A finite number.
  Options& number(const std::string& name, double& target, const std::string& help) {
    return add(name, help, "NUMBER", [&target, name](const std::string& v) { target = parse_finite(v, "--" + name); });
  }
  /// An integer in [lo, hi].
  template <class Int>
  Options& integer(const std::string& name, Int& target, long long lo, long long hi, const std::string& help) {
    return add(name, help, "INT", [&target, lo, hi, name](const std::string& v) {
      target = static_cast<Int>(parse_integer(v, lo, hi, "--" + name));
    });
  }
  /// A value converted by `convert` (which throws CliError on a bad value).
  Options& custom(const std::string& name, const std::string& type, const std::string& help,
                  std::function<void(const std::string&)> convert) {
    return add(name, help, type, std::move(convert));
  }
  /// A switch.
  Options& flag(const std::string& name, bool& target, const std::string& help) {
    m_app->add_flag_function(
        "--" + name,
        [&target, name](std::int64_t count) {
          if (count > 1) throw CliError("--" + name + " given more than once");
          target = count > 0;
        },
        help);
    return *this;
  }

  /// Throws for a missing required option or a stray argument; called after parsing.
  void finish() const {
    for (const auto& name : m_required)
      if (m_app->count("--" + name) == 0) throw CliError("missing required option --" + name);
    const auto rest = m_app->remaining();
    if (!rest.empty()) {
      const std::string& w = rest.front();
      if (w.size() > 1 && w[0] == '-') throw CliError("unknown option '" + w.substr(0, w.find('=')) + "'");
      throw CliError("unexpected argument '" + w + "'");
    }
  }

 private:
  /// `names` is "name" or "name,alias": the messages use the first.
  Options& add(const std::string& names, const std::string& help, const std::string& type,
               std::function<void(const std::string&)> convert) {
    std::string flags = "--" + names;
    for (std::size_t at = flags.find(','); at != std::string::npos; at = flags.find(',', at + 3))
      flags.replace(at, 1, ",--");
    const std::string name = names.substr(0, names.find(','));
    m_app
        ->add_option_function<std::vector<std::string>>(
            flags,
            [name, convert](const std::vector<std::string>& values) {
              if (values.size() > 1) throw CliError("--" + name + " given more than once");
              convert(values.front());
            },
            help)
        ->expected(1)
        ->allow_extra_args(false)  // one value per occurrence: a stray word is an error, not a value
        ->type_name(type)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    return *this;
  }

  CLI::App* m_app;
  std::vector<std::string> m_required;
};

/// The processors this machine offers (the bound for --threads).
inline long processor_count() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<long>(n);
}

/// The deepest network the tool builds (bounded so a typo cannot allocate gigabytes).
inline constexpr long max_depth = 100000;

/// Architecture options shared by the subcommands, with the documented defaults.
struct Architecture {
  std::string activation = "relu";
  long depth = 3;
  double sigma_w = 1, sigma_b = 1;
  int quadrature = 0;
  int threads = 0;

  void add_to(Options& o) {
    o.custom("activation", "NAME", "activation (relu; see ntk --help)",
             [this](const std::string& v) {
               check_activation(v);
               activation = v;
             })
        .integer("depth", depth, 1, max_depth, "hidden layers (3)")
        .number("sigma-w", sigma_w, "weight scale (1)")
        .number("sigma-b", sigma_b, "bias scale (1)")
        .integer("quadrature", quadrature, 1, ntk::max_quadrature_order, "force Gauss-Hermite quadrature of this order")
        .integer("threads", threads, 0, processor_count(), "threads, at most the processors (0: all)");
  }
  static void check_activation(const std::string& name);
};

/// Calls f(phi) with the activation named `name`: relu, leaky_relu:SLOPE, abs, erf, tanh, sigmoid
/// (centered), gelu, identity, sin, cos, softplus, hermite:c0,c1,... (from h_0), opt:D.
template <class F>
void with_activation(const std::string& name, F&& f) {
  const auto colon = name.find(':');
  const std::string head = name.substr(0, colon);
  const bool has_tail = colon != std::string::npos;
  const std::string tail = has_tail ? name.substr(colon + 1) : "";
  auto no_parameter = [&] {
    if (has_tail) throw CliError("activation '" + head + "' takes no parameter (got '" + name + "')");
  };
  auto one = [&](const char* what) {
    const auto values = number_list(tail, std::string("activation ") + head + " " + what);
    if (values.size() != 1) throw CliError("activation '" + head + "' takes one " + what + " (got '" + tail + "')");
    return values[0];
  };
  if (head == "relu") {
    no_parameter();
    f(ntk::Relu{});
  } else if (head == "leaky_relu") {
    f(ntk::LeakyRelu{has_tail ? one("slope") : 0.01});
  } else if (head == "abs") {
    no_parameter();
    f(ntk::Abs{});
  } else if (head == "erf") {
    no_parameter();
    f(ntk::Erf{});
  } else if (head == "tanh") {
    no_parameter();
    f(ntk::Tanh{});
  } else if (head == "sigmoid") {
    no_parameter();
    f(ntk::Sigmoid{});
  } else if (head == "gelu") {
    no_parameter();
    f(ntk::Gelu{});
  } else if (head == "identity") {
    no_parameter();
    f(ntk::Identity{});
  } else if (head == "sin") {
    no_parameter();
    f(ntk::Sin{});
  } else if (head == "cos") {
    no_parameter();
    f(ntk::Cos{});
  } else if (head == "softplus") {
    no_parameter();
    f(ntk::Softplus{});
  } else if (head == "hermite") {
    if (!has_tail) throw CliError("activation 'hermite' needs coefficients, e.g. hermite:0,1");
    f(ntk::Hermite(number_list(tail, "activation hermite coefficients")));
  } else if (head == "opt") {
    if (!has_tail) throw CliError("activation 'opt' needs a dimension, e.g. opt:2");
    f(ntk::OptimalActivation(one("dimension")));
  } else {
    throw CliError("unknown activation '" + name +
                   "' (known: relu, leaky_relu:SLOPE, abs, erf, tanh, sigmoid, gelu, identity, sin, "
                   "cos, softplus, hermite:c0,c1,..., opt:D)");
  }
}

/// --threads for OpenMP (0: its default).
inline void set_threads(int threads) {
#if defined(_OPENMP)
  if (threads > 0) omp_set_num_threads(threads);
#else
  (void)threads;
#endif
}

/// The kernel options of the MLP options: threads and the quadrature order (0: adaptive; a
/// closed form is replaced by quadrature by with_kernel_activation).
inline ntk::KernelOptions kernel_options_of(const Architecture& arch) {
  ntk::KernelOptions options;
  options.threads = arch.threads;
  options.dual.quadrature_order = arch.quadrature;
  return options;
}

/// with_activation for the analytic kernels: under --quadrature an activation with a closed-form
/// dual reaches f as ntk::Quadrature<Phi>, so its kernels come from Gauss-Hermite quadrature.
template <class F>
void with_kernel_activation(const Architecture& arch, F&& f) {
  with_activation(arch.activation, [&](const auto& phi) {
    using Phi = std::decay_t<decltype(phi)>;
    if constexpr (ntk::has_closed_form_dual_v<Phi, double>) {
      if (arch.quadrature > 0) return f(ntk::Quadrature<Phi>{phi});
    }
    f(phi);
  });
}

/// Builds the activation once, so a bad name or parameter fails while parsing the options.
inline void Architecture::check_activation(const std::string& name) {
  with_activation(name, [](const auto&) {});
}

}  // namespace ntk_cli
