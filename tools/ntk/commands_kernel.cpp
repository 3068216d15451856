// ntk kernel, ntk empirical, ntk constants.
#include <ntk/deep_limit.hpp>
#include <ntk/kernel.hpp>
#include <ntk/network.hpp>

#include <cmath>
#include <cstdio>
#include <iostream>

#include "args.hpp"
#include "commands.hpp"
#include "image.hpp"
#include "io.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ntk_cli {

namespace {

void set_threads(int threads) {
#if defined(_OPENMP)
  if (threads > 0) omp_set_num_threads(threads);
#else
  (void)threads;
#endif
}

std::set<std::string> with_architecture(std::set<std::string> extra) {
  extra.insert(architecture_options.begin(), architecture_options.end());
  return extra;
}

}  // namespace

int run_kernel(const Words& words) {
  const Args args(words, with_architecture({"x", "x2", "kind", "out", "architecture", "shape"}), {});
  const Architecture arch = Architecture::from(args);
  const std::optional<ntk::ImageArchitecture> image = image_architecture(args);
  set_threads(arch.threads);
  const std::string kind = args.text("kind", "ntk");
  if (kind != "ntk" && kind != "nngp") throw CliError("--kind must be ntk or nngp (got '" + kind + "')");
  const Eigen::MatrixXd x = read_matrix(args.required("x"));
  const bool two = args.has("x2");
  const Eigen::MatrixXd x2 = two ? read_matrix(args.text("x2")) : Eigen::MatrixXd();
  if (two && x2.cols() != x.cols())
    throw CliError("--x and --x2 must have the same number of columns (got " + std::to_string(x.cols()) +
                   " and " + std::to_string(x2.cols()) + ")");
  ntk::KernelOptions options;
  options.threads = arch.threads;
  if (arch.quadrature > 0) {
    options.dual.force_quadrature = true;
    options.dual.quadrature_order = arch.quadrature;
  }
  const auto which = kind == "ntk" ? ntk::KernelKind::ntk : ntk::KernelKind::nngp;
  const auto compute = [&](auto& out) {
    if (image) {
      const auto k = two ? ntk::image_kernel(*image, x, x2, which, image_options(arch))
                         : ntk::image_kernel(*image, x, which, image_options(arch));
      out = which == ntk::KernelKind::ntk ? k.ntk : k.nngp;
      return;
    }
    with_activation(arch.activation, [&](const auto& phi) {
      const auto net = ntk::mlp(phi, arch.depth, 0, arch.sigma_w, arch.sigma_b);
      if (two)
        ntk::kernel_into(net, x, x2, which, out, options);
      else
        ntk::kernel_into(net, x, which, out, options);
    });
  };
  const std::string path = args.text("out");
  const Eigen::Index columns = two ? x2.rows() : x.rows();
  if (ends_with(path, ".npy")) {  // computed straight into the output file's pages
    write_npy_computed(path, x.rows(), columns, compute);
  } else {
    Eigen::MatrixXd out(x.rows(), columns);
    compute(out);
    write_matrix(path, out);
  }
  return 0;
}

int run_empirical(const Words& words) {
  const Args args(words, with_architecture({"x", "x2", "width", "seed", "outputs", "out"}), {});
  const Architecture arch = Architecture::from(args);
  set_threads(arch.threads);
  const long width = args.integer("width", 512), outputs = args.integer("outputs", 1);
  const long seed = args.integer("seed", 0);
  if (width < 1) throw CliError("--width must be at least 1 (got " + std::to_string(width) + ")");
  if (outputs < 1) throw CliError("--outputs must be at least 1 (got " + std::to_string(outputs) + ")");
  const Eigen::MatrixXd x = read_matrix(args.required("x"));
  const Eigen::MatrixXd x2 = args.has("x2") ? read_matrix(args.text("x2")) : x;
  if (x2.cols() != x.cols())
    throw CliError("--x and --x2 must have the same number of columns (got " + std::to_string(x.cols()) +
                   " and " + std::to_string(x2.cols()) + ")");
  Eigen::MatrixXd out;
  with_activation(arch.activation, [&](const auto& phi) {
    using Phi = std::decay_t<decltype(phi)>;
    const auto arch_ = ntk::mlp(phi, arch.depth, width, arch.sigma_w, arch.sigma_b, outputs);
    const ntk::Network<ntk::Mlp<Phi>> net(arch_, x.cols(), static_cast<std::uint64_t>(seed));
    out = net.empirical_ntk(x, x2);
  });
  write_matrix(args.text("out"), out);
  return 0;
}

int run_constants(const Words& words) {
  const Args args(words, with_architecture({}), {});
  const Architecture arch = Architecture::from(args);
  ntk::LimitConstants c;
  with_activation(arch.activation, [&](const auto& phi) { c = ntk::limit_constants(phi); });
  char buffer[64];
  auto row = [&](const char* key, double v) {
    std::snprintf(buffer, sizeof buffer, "%.17g", v);
    return std::string(key) + "," + buffer + "\n";
  };
  std::string text = row("E_phi", c.E_phi) + row("E_dphi", c.E_dphi) + row("E_dphi2", c.E_dphi2) +
                     row("E_phi2", c.E_phi2) + row("A", c.A) + row("A_prime", c.A_prime) + row("B", c.B);
  text += std::isnan(c.alpha) ? std::string("alpha,\n") : row("alpha", c.alpha);
  text += std::string("regime,") + ntk::to_string(c.regime) + "\n";
  std::cout << text;
  return 0;
}

}  // namespace ntk_cli
