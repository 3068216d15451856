#pragma once
// --architecture SPEC --shape H,W,C: image architectures for `ntk kernel` and `ntk predict`.
#include <ntk/conv.hpp>
#include <ntk/kernel.hpp>
#include <ntk/spec.hpp>

#include <optional>
#include <string>

#include "args.hpp"

namespace ntk_cli {

/// The --architecture and --shape options of a subcommand.
struct ImageArgs {
  std::string architecture, shape;

  void add_to(Options& o) {
    o.text("architecture", architecture, "image architecture SPEC (see ntk --help); needs --shape")
        .text("shape", shape, "image shape H,W,C (channels last), L,C or D; with --architecture");
  }

  /// The image architecture, or nothing when neither option is given; throws for one without the
  /// other and for the MLP options beside --architecture.  `app` is the parsed subcommand;
  /// `quadrature` (--quadrature) wraps closed-form activations in ntk::Quadrature.
  std::optional<ntk::ImageArchitecture> resolve(const CLI::App& app, bool quadrature) const {
    if (app.count("--architecture") == 0) {
      if (app.count("--shape") > 0) throw CliError("--shape needs --architecture SPEC");
      return std::nullopt;
    }
    if (app.count("--shape") == 0) throw CliError("--architecture needs --shape H,W,C (channels last), L,C or D");
    for (const char* option : {"activation", "depth", "sigma-w", "sigma-b"})
      if (app.count(std::string("--") + option) > 0)
        throw CliError(std::string("--") + option + " does not apply with --architecture (the SPEC sets every layer)");
    return ntk::parse_architecture(architecture, ntk::parse_shape(shape), quadrature);
  }
};

/// The image-kernel options matching the MLP kernel options (threads, quadrature order).
inline ntk::ImageKernelOptions image_options(const ntk::KernelOptions& options) {
  ntk::ImageKernelOptions out;
  out.threads = options.threads;
  out.dual = options.dual;
  return out;
}

/// The kernels of the image architecture when there is one, else of the MLP `net` (x2 = x).
template <class Net, class D>
ntk::Kernels<double> kernels(const std::optional<ntk::ImageArchitecture>& image, const Net& net,
                             const Eigen::MatrixBase<D>& x, ntk::KernelKind kind, const ntk::KernelOptions& options) {
  if (image) return ntk::image_kernel(*image, x, kind, image_options(options));
  return ntk::kernel(net, x, kind, options);
}

/// The kernels between the rows of x1 and x2, as above.
template <class Net, class D1, class D2>
ntk::Kernels<double> kernels(const std::optional<ntk::ImageArchitecture>& image, const Net& net,
                             const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2, ntk::KernelKind kind,
                             const ntk::KernelOptions& options) {
  if (image) return ntk::image_kernel(*image, x1, x2, kind, image_options(options));
  return ntk::kernel(net, x1, x2, kind, options);
}

}  // namespace ntk_cli
