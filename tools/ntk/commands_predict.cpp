// ntk predict (closed-form linearized dynamics) and ntk classify (deep-limit classifier).
#include <ntk/deep_limit.hpp>
#include <ntk/dynamics.hpp>
#include <ntk/kernel.hpp>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <memory>

#include "args.hpp"
#include "commands.hpp"
#include "image.hpp"
#include "io.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ntk_cli {

namespace {

/// Accuracy for ±1 targets (one column) or one-hot targets (argmax); NaN if targets are neither.
double target_accuracy(const Eigen::MatrixXd& predicted, const Eigen::MatrixXd& targets) {
  const Eigen::Index k = targets.cols();
  std::size_t hits = 0;
  for (Eigen::Index i = 0; i < targets.rows(); ++i) {
    if (k == 1) {
      const double y = targets(i, 0);
      if (y != 1 && y != -1) return std::numeric_limits<double>::quiet_NaN();
      hits += (predicted(i, 0) >= 0 ? 1.0 : -1.0) == y;
    } else {
      Eigen::Index truth, guess;
      const double top = targets.row(i).maxCoeff(&truth);
      if (top != 1 || targets.row(i).sum() != 1 || targets.row(i).minCoeff() != 0)
        return std::numeric_limits<double>::quiet_NaN();
      predicted.row(i).maxCoeff(&guess);
      hits += guess == truth;
    }
  }
  return static_cast<double>(hits) / static_cast<double>(targets.rows());
}

std::vector<double> parse_times(const std::string& text) {
  std::vector<double> times;
  for (const auto& cell : split(text, ',')) {
    if (cell == "inf") {
      times.push_back(std::numeric_limits<double>::infinity());
      continue;
    }
    double t;
    if (!parse_double(cell, t) || !(t >= 0) || !std::isfinite(t))
      throw CliError("--time: each time must be a number >= 0 or 'inf' (got '" + cell + "')");
    times.push_back(t + 0.0);  // -0 becomes 0
  }
  if (times.empty()) throw CliError("--time: empty list");
  return times;
}


struct PredictArgs {
  std::string train, test, kernel = "ntk", out;
  long outputs = 1;
  double lr = 1, diag_reg = 0;
  std::vector<double> times{std::numeric_limits<double>::infinity()};
  bool discrete = false, variance = false;
  Architecture arch;
  ImageArgs image_args;
  std::optional<ntk::ImageArchitecture> image;
};

void run_predict(const PredictArgs& a) {
  const Architecture& arch = a.arch;
#if defined(_OPENMP)
  if (arch.threads > 0) omp_set_num_threads(arch.threads);
#endif
  const long k = a.outputs;
  const std::string& which = a.kernel;
  const double lr = a.lr, reg = a.diag_reg;
  const std::vector<double>& times = a.times;
  const bool discrete = a.discrete, variance = a.variance;
  const Eigen::MatrixXd train = read_matrix(a.train);
  const Eigen::MatrixXd test = read_matrix(a.test);
  if (k < 1 || k >= train.cols())
    throw CliError("--outputs must be between 1 and the number of TRAIN columns - 1 (got " +
                   std::to_string(k) + " for " + std::to_string(train.cols()) + " columns)");
  const Eigen::Index d = train.cols() - k;
  if (test.cols() != d && test.cols() != d + k)
    throw CliError("TEST must have " + std::to_string(d) + " feature columns, optionally followed by " +
                   std::to_string(k) + " targets (got " + std::to_string(test.cols()) + " columns)");
  const Eigen::MatrixXd x = train.leftCols(d), y = train.rightCols(k), xt = test.leftCols(d);
  ntk::KernelOptions kernel_options;
  kernel_options.threads = arch.threads;
  if (arch.quadrature > 0) {
    kernel_options.dual.force_quadrature = true;
    kernel_options.dual.quadrature_order = arch.quadrature;
  }
  Eigen::MatrixXd out(xt.rows(), static_cast<Eigen::Index>(times.size()) * (k + (variance ? 1 : 0)));
  std::vector<Eigen::MatrixXd> predictions;
  with_activation(arch.activation, [&](const auto& phi) {
    const auto net = ntk::mlp(phi, arch.depth, 0, arch.sigma_w, arch.sigma_b);
    const auto train_k = kernels(a.image, net, x, ntk::KernelKind::both, kernel_options);
    const auto cross_k = kernels(a.image, net, xt, x, ntk::KernelKind::both, kernel_options);
    ntk::Kernels<double> test_k;
    if (variance) test_k = kernels(a.image, net, xt, ntk::KernelKind::nngp, kernel_options);
    const bool use_ntk = which == "ntk";
    ntk::DynamicsOptions options;
    options.learning_rate = lr;
    options.diag_reg = reg;
    options.time = discrete ? ntk::TimeModel::discrete : ntk::TimeModel::continuous;
    const ntk::LinearizedDynamics<> dyn(use_ntk ? train_k.ntk : train_k.nngp, y, options);
    const auto projection = dyn.project(use_ntk ? cross_k.ntk : cross_k.nngp);
    Eigen::Index column = 0;
    for (double t : times) {
      const Eigen::MatrixXd p = dyn.test_predictions(projection, t);
      predictions.push_back(p);
      out.middleCols(column, k) = p;
      column += k;
      if (variance) {
        const Eigen::MatrixXd cov =
            use_ntk ? dyn.ntk_gp_covariance(projection, train_k.nngp, cross_k.nngp, test_k.nngp, t)
                    : dyn.nngp_gp_covariance(projection, test_k.nngp, t);
        out.col(column++) = cov.diagonal().cwiseMax(0.0);
      }
    }
  });
  if (!out.allFinite()) throw CliError("numerical failure: predictions are not finite");
  write_matrix(a.out, out);
  if (test.cols() == d + k) {
    const Eigen::MatrixXd targets = test.rightCols(k);
    for (std::size_t i = 0; i < times.size(); ++i) {
      const double mse = (predictions[i] - targets).squaredNorm() / static_cast<double>(targets.size());
      const double acc = target_accuracy(predictions[i], targets);
      std::fprintf(stderr, "t=%g mse=%.6g", times[i], mse);
      if (!std::isnan(acc)) std::fprintf(stderr, " accuracy=%.4f", acc);
      std::fprintf(stderr, "\n");
    }
  }
}

struct ClassifyArgs {
  std::string train, test, kernel = "ntk", out;
  Architecture arch;
};

void run_classify(const ClassifyArgs& a) {
  const Architecture& arch = a.arch;
#if defined(_OPENMP)
  if (arch.threads > 0) omp_set_num_threads(arch.threads);
#endif
  const std::string& which = a.kernel;
  const Eigen::MatrixXd train = read_matrix(a.train);
  const Eigen::MatrixXd test = read_matrix(a.test);
  if (train.cols() < 2) throw CliError("TRAIN needs feature columns and a label column");
  const Eigen::Index d = train.cols() - 1;
  if (test.cols() != d && test.cols() != d + 1)
    throw CliError("TEST must have " + std::to_string(d) + " feature columns, optionally followed by a label (got " +
                   std::to_string(test.cols()) + " columns)");
  auto labels_of = [](const Eigen::VectorXd& column, const char* file) {
    std::vector<int> labels;
    for (Eigen::Index i = 0; i < column.size(); ++i) {
      const double v = column[i];
      if (v != std::round(v) || std::fabs(v) > 1e6)
        throw CliError(std::string(file) + ": labels must be integers (±1 or class ids), got " + std::to_string(v));
      labels.push_back(static_cast<int>(v));
    }
    return labels;
  };
  const std::vector<int> y = labels_of(train.col(d), "TRAIN");
  std::vector<int> predicted;
  with_activation(arch.activation, [&](const auto& phi) {
    using Phi = std::decay_t<decltype(phi)>;
    ntk::DeepKernelClassifier<Phi> clf(phi, arch.depth, which == "ntk" ? ntk::DeepKind::ntk : ntk::DeepKind::nngp);
    clf.fit(train.leftCols(d), y);
    predicted = clf.predict(test.leftCols(d));
  });
  Eigen::MatrixXd out(static_cast<Eigen::Index>(predicted.size()), 1);
  for (std::size_t i = 0; i < predicted.size(); ++i) out(static_cast<Eigen::Index>(i), 0) = predicted[i];
  write_matrix(a.out, out);
  if (test.cols() == d + 1)
    std::fprintf(stderr, "accuracy=%.4f\n", ntk::accuracy(predicted, labels_of(test.col(d), "TEST")));
}

}  // namespace

void add_predict(CLI::App& app) {
  auto a = std::make_shared<PredictArgs>();
  auto o = std::make_shared<Options>(
      app.add_subcommand("predict", "predictions of the linearized network trained on TRAIN (closed form)"));
  o->required_text("train", a->train, "training rows: features, then --outputs target columns")
      .required_text("test", a->test, "test rows: features, optionally followed by targets")
      .integer("outputs", a->outputs, 1, 1L << 20, "target columns at the end of TRAIN (1)")
      .choice("kernel,kind", a->kernel, {"ntk", "nngp"}, "which kernel drives the dynamics (ntk)")
      .custom("lr", "NUMBER", "learning rate (1)", [a](const std::string& v) {
        a->lr = parse_finite(v, "--lr");
        if (!(a->lr > 0)) throw CliError("--lr must be positive (got " + v + ")");
      })
      .custom("time", "T[,T2,...]", "training times, a number >= 0 or inf (inf)",
              [a](const std::string& v) { a->times = parse_times(v); })
      .flag("discrete", a->discrete, "gradient descent steps instead of gradient flow")
      .custom("diag-reg", "NUMBER", "diagonal regularization (0)", [a](const std::string& v) {
        a->diag_reg = parse_finite(v, "--diag-reg");
        if (!(a->diag_reg >= 0)) throw CliError("--diag-reg must be >= 0 (got " + v + ")");
      })
      .flag("variance", a->variance, "also print the predictive variance per test row")
      .text("out", a->out, "output file, .npy or CSV (default: stdout)");
  a->arch.add_to(*o);
  a->image_args.add_to(*o);
  o->app()->callback([a, o] {
    o->finish();
    a->image = a->image_args.resolve(*o->app());
    run_predict(*a);
  });
}

void add_classify(CLI::App& app) {
  auto a = std::make_shared<ClassifyArgs>();
  auto o = std::make_shared<Options>(app.add_subcommand("classify", "deep-limit kernel classifier"));
  o->required_text("train", a->train, "training rows: features, then a label column")
      .required_text("test", a->test, "test rows: features, optionally followed by a label")
      .choice("kernel,kind", a->kernel, {"ntk", "nngp"}, "which deep kernel (ntk)")
      .text("out", a->out, "output file, .npy or CSV (default: stdout)");
  a->arch.add_to(*o);
  o->app()->callback([a, o] {
    o->finish();
    run_classify(*a);
  });
}

}  // namespace ntk_cli
