#pragma once
// --architecture SPEC --shape H,W,C: image architectures for `ntk kernel` and `ntk predict`.
#include <ntk/spec.hpp>

#include <optional>
#include <string>

#include "args.hpp"

namespace ntk_cli {

/// The image architecture of --architecture/--shape, or nothing when neither is given.
inline std::optional<ntk::ImageArchitecture> image_architecture(const Args& args) {
  if (!args.has("architecture")) {
    if (args.has("shape")) throw CliError("--shape needs --architecture SPEC");
    return std::nullopt;
  }
  if (!args.has("shape")) throw CliError("--architecture needs --shape H,W,C (channels last), L,C or D");
  for (const char* option : {"activation", "depth", "sigma-w", "sigma-b"})
    if (args.has(option))
      throw CliError(std::string("--") + option + " does not apply with --architecture (the SPEC sets every layer)");
  return ntk::parse_architecture(args.text("architecture"), ntk::parse_shape(args.text("shape")));
}

inline ntk::ImageKernelOptions image_options(const Architecture& arch) {
  ntk::ImageKernelOptions options;
  options.threads = arch.threads;
  if (arch.quadrature > 0) {
    options.dual.force_quadrature = true;
    options.dual.quadrature_order = arch.quadrature;
  }
  return options;
}

}  // namespace ntk_cli
