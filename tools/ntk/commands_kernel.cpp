// ntk kernel, ntk empirical, ntk constants.
#include <ntk/deep_limit.hpp>
#include <ntk/kernel.hpp>
#include <ntk/network.hpp>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>

#include "args.hpp"
#include "commands.hpp"
#include "image.hpp"
#include "io.hpp"
#include "progress.hpp"

namespace ntk_cli {

namespace {

struct KernelArgs {
  std::string x, x2, kernel = "ntk", out;
  bool quiet = false, progress = false;
  Architecture arch;
  ImageArgs image_args;
  std::optional<ntk::ImageArchitecture> image;
};

void run_kernel(const KernelArgs& a) {
  set_threads(a.arch.threads);
  const Eigen::MatrixXd x = read_matrix(a.x);
  const bool two = !a.x2.empty();
  const Eigen::MatrixXd x2 = two ? read_matrix(a.x2) : Eigen::MatrixXd();
  if (two && x2.cols() != x.cols())
    throw CliError("--x and --x2 must have the same number of columns (got " + std::to_string(x.cols()) + " and " +
                   std::to_string(x2.cols()) + ")");
  const Eigen::Index columns = two ? x2.rows() : x.rows();
  const double entries = static_cast<double>(x.rows()) * static_cast<double>(columns);
  Destination out(a.out);
  if (!out.is_npy_file())
    check_memory(8 * entries, "the " + std::to_string(x.rows()) + " x " + std::to_string(columns) + " kernel");
  else if (entries * 8 > 9e18)
    throw CliError(a.out + ": the output is too large for a file");
  const ntk::KernelOptions options = kernel_options_of(a.arch);
  const auto which = a.kernel == "ntk" ? ntk::KernelKind::ntk : ntk::KernelKind::nngp;
  const auto compute = [&](auto& result) {
    if (a.image) {
      const ntk::Kernels<double> k = two ? ntk::image_kernel(*a.image, x, x2, which, image_options(options))
                                         : ntk::image_kernel(*a.image, x, which, image_options(options));
      result = which == ntk::KernelKind::ntk ? k.ntk : k.nngp;
      return;
    }
    Progress progress(a.quiet, a.progress);  // per block column of 1024 (MLP kernels)
    with_kernel_activation(a.arch, [&](const auto& phi) {
      const auto net = ntk::mlp(phi, a.arch.depth, 0, a.arch.sigma_w, a.arch.sigma_b);
      if (two)
        cross_into(net, x, x2, which, options, progress, result);
      else
        gram_into(net, x, which, options, progress, result);
    });
  };
  if (out.is_npy_file()) {  // computed straight into the output file's pages
    write_npy_computed(out.file(), x.rows(), columns, compute);
  } else {
    Eigen::MatrixXd result(x.rows(), columns);
    compute(result);
    out.write(result);
  }
}

struct EmpiricalArgs {
  std::string x, x2, out;
  long width = 512, outputs = 1;
  unsigned long long seed = 0;
  Architecture arch;
};

void run_empirical(const EmpiricalArgs& a) {
  set_threads(a.arch.threads);
  const Eigen::MatrixXd x = read_matrix(a.x);
  const Eigen::MatrixXd x2 = a.x2.empty() ? x : read_matrix(a.x2);
  if (x2.cols() != x.cols())
    throw CliError("--x and --x2 must have the same number of columns (got " + std::to_string(x.cols()) + " and " +
                   std::to_string(x2.cols()) + ")");
  // Parameters, the forward/backward states of both input sets and the output.
  const double w = static_cast<double>(a.width), k = static_cast<double>(a.outputs);
  const double depth = static_cast<double>(a.arch.depth);
  const double parameters = w * static_cast<double>(x.cols()) + (depth - 1) * w * w + w * k + depth * w + k;
  const double states = static_cast<double>(x.rows() + x2.rows()) * w * depth * (k + 2);
  check_memory(8 * (parameters + states + static_cast<double>(x.rows()) * static_cast<double>(x2.rows())),
               "the width-" + std::to_string(a.width) + " network");
  Destination destination(a.out);
  Eigen::MatrixXd out;
  with_activation(a.arch.activation, [&](const auto& phi) {
    using Phi = std::decay_t<decltype(phi)>;
    const auto arch = ntk::mlp(phi, a.arch.depth, a.width, a.arch.sigma_w, a.arch.sigma_b, a.outputs);
    const ntk::Network<ntk::Mlp<Phi>> net(arch, x.cols(), static_cast<std::uint64_t>(a.seed));
    out = net.empirical_ntk(x, x2);
  });
  destination.write(out);
}

void run_constants(const Architecture& arch) {
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
  write_stdout(text);
}

}  // namespace

void add_kernel(CLI::App& app) {
  auto a = std::make_shared<KernelArgs>();
  auto o = std::make_shared<Options>(app.add_subcommand("kernel", "analytic NTK or NNGP Gram matrix"));
  o->required_text("x", a->x, "rows of the first input set (CSV, .npy, - for stdin)")
      .text("x2", a->x2, "rows of the second input set (default: --x)")
      .choice("kernel,kind", a->kernel, {"ntk", "nngp"}, "which kernel (ntk); --kind is an alias")
      .text("out", a->out, "output file, .npy or CSV (default: stdout)")
      .flag("quiet", a->quiet, "no progress lines on stderr")
      .flag("progress", a->progress,
            "progress lines on stderr from the start, wherever stderr goes (default: on a terminal, after the first "
            "second)");
  a->arch.add_to(*o);
  a->image_args.add_to(*o);
  o->app()->callback([a, o] {
    o->finish();
    a->image = a->image_args.resolve(*o->app(), a->arch.quadrature > 0);
    run_kernel(*a);
  });
}

void add_empirical(CLI::App& app) {
  auto a = std::make_shared<EmpiricalArgs>();
  auto o = std::make_shared<Options>(app.add_subcommand("empirical", "empirical NTK of a random finite network"));
  o->required_text("x", a->x, "rows of the first input set (CSV, .npy, - for stdin)")
      .text("x2", a->x2, "rows of the second input set (default: --x)")
      .integer("width", a->width, 1, 1L << 20, "hidden width (512)")
      .integer("outputs", a->outputs, 1, 1L << 16, "network outputs; the kernel is averaged over them (1)")
      .integer("seed", a->seed, 0, std::numeric_limits<long long>::max(), "random seed (0)")
      .text("out", a->out, "output file, .npy or CSV (default: stdout)");
  a->arch.add_to(*o);
  o->app()->callback([a, o] {
    o->finish();
    run_empirical(*a);
  });
}

void add_constants(CLI::App& app) {
  auto a = std::make_shared<Architecture>();
  auto o = std::make_shared<Options>(app.add_subcommand("constants", "deep-limit constants A, A', B, alpha, regime"));
  a->add_to(*o);
  o->app()->callback([a, o] {
    o->finish();
    run_constants(*a);
  });
}

}  // namespace ntk_cli
