#pragma once
/// \file spec.hpp
/// Run-time architecture descriptions: a shape string and a SPEC string, the form the
/// command-line tool (--shape, --architecture) and the Python package take.
///
/// Shape: "H,W,C" (an image, channels last), "L,C" (a 1-D signal: 1 x L x C) or "D" (a vector:
/// 1 x 1 x D).
///
/// SPEC: layers separated by ',', a layer's fields by ':'.
///   conv[:FILTER][:CHANNELS][:OPTION...]   FILTER N or NxM (N means NxN on images, 1xN on
///        signals; default 3), CHANNELS for finite networks (default 0: kernels only); options
///        same | valid | circular (default same), stride=S or stride=SxT, sw=σ_w (1), sb=σ_b (0),
///        param=ntk | param=standard (the parametrization, layers.hpp; default ntk)
///   avgpool[:WINDOW][:OPTION...]            WINDOW N or NxM (default 2), stride=... (default the
///        window), same | valid | circular (default valid)
///   gap (or globalavgpool)                 mean over pixels
///   flatten
///   dense[:WIDTH][:sw=σ_w][:sb=σ_b][:param=P]  per pixel on images; WIDTH default 1, σ_w 1, σ_b 0
///   an activation by its name in activation_names.hpp, parameters separated by ':' instead of
///        ',': relu, tanh, leaky_relu:SLOPE, abrelu:A:B, polynomial:C0:C1:..., hermite:C0:C1:...
///   layernorm[:eps=ε]                      LayerNorm over the channels of every pixel (ε 1e-12)
///   res[:ALPHA](LAYER,...) (or residual)   y = x + α f(x), f the layers inside (any SPEC layers,
///        nested residuals too); α default 1 (stax's FanInSum)
/// Example: "conv:3x3:64,relu,avgpool:2,conv:3x3:64,relu,gap,dense:10";
/// a residual network: "conv:3x3:16,res(relu,conv:3x3:16,relu,conv:3x3:16),layernorm,relu,gap,dense".
/// Layers inside a residual are named by their path in errors: layer 1.2 is the third of layer 1's branch.
/// Every malformed case throws std::invalid_argument naming the layer, the field and the problem.

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "activation_names.hpp"
#include "activations.hpp"
#include "conv.hpp"
#include "errors.hpp"
#include "layers.hpp"

namespace ntk {
namespace detail {

inline std::vector<std::string> split_fields(const std::string& text, char separator) {
  std::vector<std::string> out;
  std::string::size_type start = 0;
  for (;;) {
    const auto end = text.find(separator, start);
    out.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) return out;
    start = end + 1;
  }
}

/// A whole-string integer >= 1.
inline bool parse_positive(const std::string& text, Eigen::Index& value) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos || text.size() > 12) return false;
  value = static_cast<Eigen::Index>(std::strtoll(text.c_str(), nullptr, 10));
  return value >= 1;
}

/// A whole-string finite number.
inline bool parse_number(const std::string& text, double& value) {
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0]))) return false;
  char* end = nullptr;
  errno = 0;
  value = std::strtod(text.c_str(), &end);
  return end == text.c_str() + text.size() && errno == 0 && std::isfinite(value);
}

/// "N" or "NxM" as (height, width); N alone is N x N, or 1 x N when `one_dimensional`.
inline bool parse_window(const std::string& text, bool one_dimensional, Eigen::Index& height, Eigen::Index& width) {
  const auto x = text.find('x');
  if (x == std::string::npos) {
    if (!parse_positive(text, width)) return false;
    height = one_dimensional ? 1 : width;
    return true;
  }
  return parse_positive(text.substr(0, x), height) && parse_positive(text.substr(x + 1), width);
}

class SpecParser {
 public:
  SpecParser(std::string index, std::string layer) : m_index(std::move(index)), m_layer(std::move(layer)) {}

  [[noreturn]] void bad(const std::string& what) const {
    fail<std::invalid_argument>("parse_architecture", "layer ", m_index, " '", m_layer, "': ", what);
  }
  double number(const std::string& text, const char* what) const {
    double v;
    if (!parse_number(text, v)) bad(std::string("bad ") + what + " '" + text + "' (expected a finite number)");
    return v;
  }
  Parametrization parametrization(const std::string& text) const {
    if (text == "ntk") return Parametrization::ntk;
    if (text == "standard") return Parametrization::standard;
    bad("bad parametrization '" + text + "' (expected ntk or standard)");
  }
  Eigen::Index positive(const std::string& text, const char* what) const {
    Eigen::Index v;
    if (!parse_positive(text, v)) bad(std::string("bad ") + what + " '" + text + "' (expected an integer >= 1)");
    return v;
  }
  void arity(const std::vector<std::string>& fields, std::size_t low, std::size_t high) const {
    const std::size_t given = fields.size() - 1;
    if (given < low || given > high) {
      if (low == high && low == 0) bad("takes no parameters (got " + std::to_string(given) + ")");
      bad("takes " + std::to_string(low) + (high > low ? " to " + std::to_string(high) : std::string()) +
          " parameters (got " + std::to_string(given) + ")");
    }
  }

 private:
  std::string m_index;
  std::string m_layer;
};

/// Splits a SPEC at the commas outside parentheses.  Throws std::invalid_argument for unbalanced
/// parentheses (naming the whole SPEC).
inline std::vector<std::string> split_layers(const std::string& spec) {
  std::vector<std::string> out;
  std::string::size_type start = 0;
  int depth = 0;
  for (std::string::size_type i = 0; i < spec.size(); ++i) {
    if (spec[i] == '(') {
      ++depth;
    } else if (spec[i] == ')') {
      if (--depth < 0)
        fail<std::invalid_argument>("parse_architecture", "unbalanced parentheses in '", spec, "': a ')' at character ",
                                    i, " closes nothing");
    } else if (spec[i] == ',' && depth == 0) {
      out.push_back(spec.substr(start, i - start));
      start = i + 1;
    }
  }
  if (depth > 0)
    fail<std::invalid_argument>("parse_architecture", "unbalanced parentheses in '", spec, "': ", depth,
                                " '(' never closed");
  out.push_back(spec.substr(start));
  return out;
}

inline Padding parse_padding(const std::string& text, bool& matched) {
  matched = true;
  if (text == "same") return Padding::same;
  if (text == "valid") return Padding::valid;
  if (text == "circular") return Padding::circular;
  matched = false;
  return Padding::same;
}

inline ImageArchitecture::Layer parse_layer(const std::string& index, const std::string& text, bool one_dimensional,
                                            bool quadrature) {
  const SpecParser p(index, text);
  if (text.empty()) p.bad("empty layer (two commas in a row, or a trailing comma)");
  using L = ImageArchitecture::Layer;
  const auto open = text.find('(');
  if (open != std::string::npos) {  // res[:ALPHA](LAYER,...): split_layers balanced the parentheses
    const std::vector<std::string> f = split_fields(text.substr(0, open), ':');
    if (f[0] != "res" && f[0] != "residual")
      p.bad("unexpected '(' after '" + f[0] + "' (only res(...) or residual(...) takes a branch)");
    std::string::size_type close = open;
    for (int depth = 0; close < text.size(); ++close) {
      depth += text[close] == '(' ? 1 : (text[close] == ')' ? -1 : 0);
      if (depth == 0) break;
    }
    if (close + 1 != text.size())
      p.bad("unexpected text '" + text.substr(close + 1) +
            "' after the branch's ')' (expected res[:ALPHA](LAYER,...))");
    Residual r;
    if (f.size() > 2) p.bad("takes 0 to 1 parameters (got " + std::to_string(f.size() - 1) + ")");
    if (f.size() == 2) r.scale = p.number(f[1], "scale");
    const std::string inner = text.substr(open + 1, close - open - 1);
    if (inner.empty()) p.bad("empty residual branch (expected res(LAYER,...))");
    const std::vector<std::string> parts = split_layers(inner);
    for (std::size_t l = 0; l < parts.size(); ++l)
      r.branch.push_back(parse_layer(index + "." + std::to_string(l), parts[l], one_dimensional, quadrature));
    return r;
  }
  const std::vector<std::string> f = split_fields(text, ':');
  const std::string& head = f[0];
  if (head == "res" || head == "residual") p.bad("a residual needs its branch in parentheses: res(LAYER,...)");
  if (head == "layernorm") {
    LayerNorm norm;
    for (std::size_t k = 1; k < f.size(); ++k) {
      if (f[k].rfind("eps=", 0) == 0) {
        norm.epsilon = p.number(f[k].substr(4), "eps");
      } else {
        p.bad("unexpected field '" + f[k] + "' (known: eps=)");
      }
    }
    return norm;
  }
  if (head == "conv" || head == "avgpool") {
    const bool conv = head == "conv";
    Eigen::Index fh = conv ? (one_dimensional ? 1 : 3) : (one_dimensional ? 1 : 2), fw = conv ? 3 : 2;
    Eigen::Index channels = 0, sh = conv ? 1 : 0, sw = conv ? 1 : 0;
    Padding padding = conv ? Padding::same : Padding::valid;
    double sigma_w = 1, sigma_b = 0;
    Parametrization parametrization = Parametrization::ntk;
    int positional = 0;
    for (std::size_t k = 1; k < f.size(); ++k) {
      const std::string& field = f[k];
      bool is_padding;
      const Padding pad = parse_padding(field, is_padding);
      if (is_padding) {
        padding = pad;
      } else if (field.rfind("stride=", 0) == 0) {
        if (!parse_window(field.substr(7), one_dimensional, sh, sw))
          p.bad("bad stride '" + field.substr(7) + "' (expected N or NxM, integers >= 1)");
      } else if (conv && field.rfind("sw=", 0) == 0) {
        sigma_w = p.number(field.substr(3), "sw");
      } else if (conv && field.rfind("sb=", 0) == 0) {
        sigma_b = p.number(field.substr(3), "sb");
      } else if (conv && field.rfind("param=", 0) == 0) {
        parametrization = p.parametrization(field.substr(6));
      } else if (field.find('=') != std::string::npos) {
        p.bad("unknown option '" + field + "' (known: stride=, same, valid, circular" +
              std::string(conv ? ", sw=, sb=, param=)" : ")"));
      } else if (positional == 0) {
        if (!parse_window(field, one_dimensional, fh, fw))
          p.bad(std::string("bad ") + (conv ? "filter" : "window") + " '" + field +
                "' (expected N or NxM, integers >= 1)");
        ++positional;
      } else if (positional == 1 && conv) {
        channels = p.positive(field, "channel count");
        ++positional;
      } else {
        p.bad("unexpected field '" + field + "'");
      }
    }
    if (conv) {
      Conv c;
      c.channels = channels;
      c.filter_height = fh;
      c.filter_width = fw;
      c.stride_height = sh;
      c.stride_width = sw;
      c.padding = padding;
      c.sigma_w = sigma_w;
      c.sigma_b = sigma_b;
      c.parametrization = parametrization;
      return c;
    }
    return AvgPool{fh, fw, sh, sw, padding};
  }
  if (head == "gap" || head == "globalavgpool") {
    p.arity(f, 0, 0);
    return GlobalAvgPool{};
  }
  if (head == "flatten") {
    p.arity(f, 0, 0);
    return Flatten{};
  }
  if (head == "dense") {
    Eigen::Index width = 1;
    double sigma_w = 1, sigma_b = 0;
    Parametrization parametrization = Parametrization::ntk;
    bool have_width = false;
    for (std::size_t k = 1; k < f.size(); ++k) {
      if (f[k].rfind("sw=", 0) == 0) {
        sigma_w = p.number(f[k].substr(3), "sw");
      } else if (f[k].rfind("sb=", 0) == 0) {
        sigma_b = p.number(f[k].substr(3), "sb");
      } else if (f[k].rfind("param=", 0) == 0) {
        parametrization = p.parametrization(f[k].substr(6));
      } else if (!have_width && f[k].find('=') == std::string::npos) {
        width = p.positive(f[k], "width");
        have_width = true;
      } else {
        p.bad("unexpected field '" + f[k] + "' (known: WIDTH, sw=, sb=, param=)");
      }
    }
    return Dense(sigma_w, sigma_b, width, parametrization);
  }
  // Activations: by name (activation_names.hpp), parameters ':'-separated here.
  std::string name = head;
  for (std::size_t k = 1; k < f.size(); ++k) name += (k == 1 ? ":" : ",") + f[k];
  try {
    return with_activation(name, quadrature, [](const auto& phi) { return L(ImageActivation(phi)); });
  } catch (const std::invalid_argument& e) {
    const std::string message = e.what();
    if (message.find("unknown activation") == std::string::npos) p.bad(message);
  } catch (const std::domain_error& e) {
    p.bad(e.what());
  }
  p.bad("unknown layer '" + head +
        "' (known: conv, avgpool, gap, flatten, dense, layernorm, res(...), and the "
        "activations " +
        activation_names + ")");
}

}  // namespace detail

/// "H,W,C", "L,C" or "D" as an ImageShape.  Throws std::invalid_argument for anything else.
inline ImageShape parse_shape(const std::string& text) {
  const std::vector<std::string> fields = detail::split_fields(text, ',');
  std::vector<Eigen::Index> v;
  for (const auto& field : fields) {
    Eigen::Index n;
    if (!detail::parse_positive(field, n))
      detail::fail<std::invalid_argument>("parse_shape", "bad dimension '", field, "' in '", text,
                                          "' (expected H,W,C, L,C or D with integers >= 1)");
    v.push_back(n);
  }
  if (v.size() > 3)
    detail::fail<std::invalid_argument>("parse_shape", "at most 3 dimensions H,W,C (got ", v.size(), " in '", text,
                                        "')");
  if (v.size() == 3) return {v[0], v[1], v[2]};
  if (v.size() == 2) return {1, v[0], v[1]};
  return {1, 1, v[0]};
}

/// The architecture described by `spec` (see the file comment) on inputs of `shape`.
/// Throws std::invalid_argument naming the layer for a malformed SPEC, plus ImageArchitecture's
/// shape errors (with the layer index).  With `quadrature`, activations with a closed-form dual are
/// wrapped in ntk::Quadrature (their kernels then come from the Mehler series or quadrature).
inline ImageArchitecture parse_architecture(const std::string& spec, const ImageShape& shape, bool quadrature = false) {
  if (spec.empty()) detail::fail<std::invalid_argument>("parse_architecture", "the SPEC is empty");
  std::vector<ImageArchitecture::Layer> layers;
  const std::vector<std::string> parts = detail::split_layers(spec);
  for (std::size_t l = 0; l < parts.size(); ++l)
    layers.push_back(detail::parse_layer(std::to_string(l), parts[l], shape.height == 1, quadrature));
  return ImageArchitecture(shape, std::move(layers));
}

}  // namespace ntk
