// ntk predict (closed-form linearized dynamics) and ntk classify (deep-limit classifier).
#include <ntk/deep_limit.hpp>
#include <ntk/dynamics.hpp>
#include <ntk/kernel.hpp>
#include <ntk/solvers.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>

#include "args.hpp"
#include "commands.hpp"
#include "image.hpp"
#include "io.hpp"
#include "iterative.hpp"
#include "predict.hpp"
#include "progress.hpp"

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

/// "123", "500M", "22G" (binary units) as bytes; "0" = no limit.
std::size_t parse_memory(const std::string& text) {
  double value;
  std::string number = text;
  double unit = 1;
  if (!text.empty()) {
    const char last = static_cast<char>(std::toupper(static_cast<unsigned char>(text.back())));
    if (last == 'K' || last == 'M' || last == 'G' || last == 'T') {
      unit = last == 'K' ? 1024.0 : last == 'M' ? 1048576.0 : last == 'G' ? 1073741824.0 : 1099511627776.0;
      number = text.substr(0, text.size() - 1);
    }
  }
  if (!parse_double(number, value) || !(value >= 0) || !std::isfinite(value))
    throw CliError("--memory-limit must be a size such as 2G, 500M or 0 for none (got '" + text + "')");
  return static_cast<std::size_t>(value * unit);
}

/// One integer column of class ids → the sorted classes.
std::vector<long> integer_labels(const Eigen::MatrixXd& m, const std::string& what) {
  if (m.cols() != 1)
    throw CliError(what + ": --labels needs one column of integer class ids (got " + std::to_string(m.cols()) +
                   " columns)");
  std::vector<long> labels;
  for (Eigen::Index i = 0; i < m.rows(); ++i) {
    const double v = m(i, 0);
    if (v != std::round(v) || std::fabs(v) > 1e9)
      throw CliError(what + ": labels must be integers (got " + std::to_string(v) + " in row " + std::to_string(i + 1) +
                     ")");
    labels.push_back(static_cast<long>(v));
  }
  return labels;
}

/// The train-train Gram matrix by block columns (progress per tile).
template <class Net>
Eigen::MatrixXd dense_gram(const Net& net, const Eigen::MatrixXd& x, ntk::KernelKind kind,
                           const ntk::KernelOptions& options, Progress& progress) {
  Eigen::MatrixXd g(x.rows(), x.rows());
  gram_into(net, x, kind, options, progress, g);
  return g;
}

void run_predict(const PredictArgs& a) {
#if defined(NTK_CLI_MPI)
  if (mpi_distributed()) return run_predict_mpi(a);  // mpirun -np P, P > 1: tools/ntk/mpi_predict.cpp
#endif
  const Architecture& arch = a.arch;
  set_threads(arch.threads);
  const std::string& solver = a.solver;
  const bool variance = a.variance;
  Progress progress(a.quiet, a.progress);
  const PredictData data = read_predict_data(a);
  const Eigen::MatrixXd &x = data.x, &y = data.y, &xt = data.xt;
  const Eigen::Index n = x.rows(), m = xt.rows();
  const ntk::KernelOptions kernel_options = kernel_options_of(arch);
  const ntk::KernelKind kind = a.kernel == "ntk" ? ntk::KernelKind::ntk : ntk::KernelKind::nngp;

  // The path: the memory budget decides, before any large allocation.
  ntk::SolverRequest request =
      solver_request(a, data, a.memory_limit_given ? a.memory_limit : available_memory(), /*ranks=*/1);
  const bool float_storage = a.storage == "float";
  ntk::SolverPlan plan;
  try {
    if (solver == "cg") {  // the stored triangle if it fits, else matrix-free
      request.method = ntk::SolverMethod::packed;
      try {
        plan = ntk::plan_solver(request);
      } catch (const std::invalid_argument& e) {
        if (std::string(e.what()).find("cannot hold") == std::string::npos) throw;
        request.method = ntk::SolverMethod::matrix_free;
        plan = ntk::plan_solver(request);
      }
    } else {
      request.method = solver == "eigen"      ? ntk::SolverMethod::eigen
                       : solver == "cholesky" ? ntk::SolverMethod::cholesky
                                              : ntk::SolverMethod::automatic;
      plan = ntk::plan_solver(request);
    }
  } catch (const std::invalid_argument& e) {
    throw CliError(std::string("--solver ") + solver + ": " + e.what());
  }
  check_image_path(a, plan);
  progress.note(std::string("solver ") + ntk::method_name(plan.method) + " (" + plan.reason + "; about " +
                std::to_string(plan.bytes >> 20) + " MiB)");
  if (float_storage && plan.method != ntk::SolverMethod::packed)  // the same note under mpirun
    progress.note(std::string("--storage float: not used by the ") + ntk::method_name(plan.method) + " path");

  // The output (one prediction matrix per time, plus its copy in the written table) must fit.
  check_memory(16 * static_cast<double>(m) * static_cast<double>(a.times.size()) *
                   static_cast<double>(y.cols() + (variance ? 1 : 0)),
               "predict on " + std::to_string(n) + " training and " + std::to_string(m) + " test rows at " +
                   std::to_string(a.times.size()) + " times");
  Destination destination(a.out);  // the output is checked before any work
  std::vector<Eigen::MatrixXd> predictions;
  const ntk::TimeModel model = a.discrete ? ntk::TimeModel::discrete : ntk::TimeModel::continuous;
  with_kernel_activation(arch, [&](const auto& phi) {
    const auto net = ntk::mlp(phi, arch.depth, 0, arch.sigma_w, arch.sigma_b);
    const auto& image = a.image;
    auto pick = [&](const ntk::Kernels<double>& k2) { return kind == ntk::KernelKind::ntk ? k2.ntk : k2.nngp; };
    auto train_gram = [&] {  // the n x n training Gram matrix
      return image ? pick(kernels(image, net, x, kind, kernel_options))
                   : dense_gram(net, x, kind, kernel_options, progress);
    };
    auto cross_times = [&](const Eigen::MatrixXd& c) -> Eigen::MatrixXd {  // κ(x_test, X) C
      if (image) return pick(kernels(image, net, xt, x, kind, kernel_options)) * c;
      progress.start("test kernel tiles");  // in blocks of test points
      return ntk::cross_kernel_times(net, xt, x, kind, c, kernel_options, 1024,
                                     [&](double done, double total) { progress.tiles(done, total); });
    };
    ntk::DynamicsOptions options;
    options.learning_rate = a.lr;
    options.diag_reg = a.diag_reg;
    options.time = model;
    bool dense_eigen = plan.method == ntk::SolverMethod::eigen;
    if (plan.method == ntk::SolverMethod::cholesky) {
      Eigen::MatrixXd g = train_gram();
      Eigen::MatrixXd alpha = y;
      const auto start = std::chrono::steady_clock::now();
      if (ntk::cholesky_solve_in_place<double>(g, a.diag_reg, alpha)) {
        progress.note("cholesky " +
                      std::to_string(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()) +
                      " s");
        g.resize(0, 0);
        predictions.push_back(cross_times(alpha));
      } else {
        progress.note("the Gram matrix is not positive definite: eigendecomposition (pseudo-inverse) instead");
        dense_eigen = true;
      }
    } else if (plan.method == ntk::SolverMethod::packed || plan.method == ntk::SolverMethod::matrix_free) {
      const IterativeSettings settings = iterative_settings(a);
      auto iterate = [&](const ntk::GramRef<double>& op) {
        predictions = iterative_predictions(op, y, a.times, settings, progress, cross_times);
      };
      if (plan.method == ntk::SolverMethod::packed) {
        progress.start("kernel tiles");
        const auto tiles = [&](double done, double total) { progress.tiles(done, total); };
        if (float_storage)
          iterate(ntk::packed_gram<float>(net, x, kind, kernel_options, ntk::PackedGramOptions{}, tiles));
        else
          iterate(ntk::packed_gram(net, x, kind, kernel_options, ntk::PackedGramOptions{}, tiles));
      } else {
        iterate(ntk::MatrixFreeGram(net, x, kind, kernel_options));
      }
    }
    if (dense_eigen) {
      Eigen::MatrixXd train_k, cross_k, cross_nngp, train_nngp, test_nngp;
      if (variance) {
        const auto both = kernels(image, net, x, ntk::KernelKind::both, kernel_options);
        const auto cross = kernels(image, net, xt, x, ntk::KernelKind::both, kernel_options);
        train_k = kind == ntk::KernelKind::ntk ? both.ntk : both.nngp;
        cross_k = kind == ntk::KernelKind::ntk ? cross.ntk : cross.nngp;
        train_nngp = both.nngp;
        cross_nngp = cross.nngp;
        test_nngp = kernels(image, net, xt, ntk::KernelKind::nngp, kernel_options).nngp;
      } else if (image) {
        train_k = train_gram();
        cross_k = pick(kernels(image, net, xt, x, kind, kernel_options));
      } else {
        train_k = train_gram();
        cross_k.resize(m, n);
        ntk::kernel_into(net, xt, x, kind, cross_k, kernel_options);
      }
      progress.note("eigendecomposition of the " + std::to_string(n) + " x " + std::to_string(n) + " Gram matrix");
      const ntk::LinearizedDynamics<> dyn(train_k, y, options);
      const auto projection = dyn.project(cross_k);
      for (double t : a.times) {
        predictions.push_back(dyn.test_predictions(projection, t));
        if (variance) {
          const Eigen::MatrixXd cov = kind == ntk::KernelKind::ntk
                                          ? dyn.ntk_gp_covariance(projection, train_nngp, cross_nngp, test_nngp, t)
                                          : dyn.nngp_gp_covariance(projection, test_nngp, t);
          predictions.push_back(cov.diagonal().cwiseMax(0.0));
        }
      }
    }
  });
  destination.write(prediction_table(a, data, predictions));
  report_scores(a, data, predictions);
}

struct ClassifyArgs {
  std::string train, test, kernel = "ntk", out;
  Architecture arch;
};

void run_classify(const ClassifyArgs& a) {
  const Architecture& arch = a.arch;
  set_threads(arch.threads);
  const std::string& which = a.kernel;
  const Eigen::MatrixXd train = read_matrix(a.train);
  const Eigen::MatrixXd test = read_matrix(a.test);
  if (train.cols() < 2) throw CliError("TRAIN needs feature columns and a label column");
  const Eigen::Index d = train.cols() - 1;
  if (test.cols() != d && test.cols() != d + 1)
    throw CliError("TEST must have " + std::to_string(d) + " feature columns, optionally followed by a label (got " +
                   std::to_string(test.cols()) + " columns)");
  // Labels: integers (any range); class ids are mapped to dense ids 0..C-1 so the work is
  // O(n C) whatever the values, ±1 labels stay a binary problem.  TEST's labels are checked too,
  // before any work.
  auto labels_of = [](const Eigen::VectorXd& column, const char* file) {
    std::vector<long long> labels;
    for (Eigen::Index i = 0; i < column.size(); ++i) {
      const double v = column[i];
      if (v != std::round(v) || std::fabs(v) > 2147483647.0)
        throw CliError(std::string(file) + ": labels must be integers (got " + std::to_string(v) + " on row " +
                       std::to_string(i + 1) + ")");
      labels.push_back(static_cast<long long>(v));
    }
    return labels;
  };
  const std::vector<long long> y = labels_of(train.col(d), "TRAIN");
  const std::vector<long long> truth = test.cols() == d + 1 ? labels_of(test.col(d), "TEST") : std::vector<long long>();
  std::vector<long long> classes(y);
  std::sort(classes.begin(), classes.end());
  classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
  const bool binary = std::all_of(classes.begin(), classes.end(), [](long long v) { return v == 1 || v == -1; });
  std::vector<int> dense(y.size());
  for (std::size_t i = 0; i < y.size(); ++i)
    dense[i] = binary ? static_cast<int>(y[i])
                      : static_cast<int>(std::lower_bound(classes.begin(), classes.end(), y[i]) - classes.begin());
  const double n = static_cast<double>(train.rows()), nt = static_cast<double>(test.rows());
  check_memory(8 * (4 * n * n + 2 * n * nt + (n + nt) * static_cast<double>(classes.size())),
               "classify on " + std::to_string(train.rows()) + " training rows");
  Destination destination(a.out);
  std::vector<int> predicted;
  with_activation(arch.activation, [&](const auto& phi) {
    using Phi = std::decay_t<decltype(phi)>;
    ntk::DeepKernelClassifier<Phi> clf(phi, arch.depth, which == "ntk" ? ntk::DeepKind::ntk : ntk::DeepKind::nngp);
    clf.fit(train.leftCols(d), dense);
    predicted = clf.predict(test.leftCols(d));
  });
  Eigen::MatrixXd out(static_cast<Eigen::Index>(predicted.size()), 1);
  std::size_t hits = 0;
  for (std::size_t i = 0; i < predicted.size(); ++i) {
    const long long label = binary ? predicted[i] : classes[static_cast<std::size_t>(predicted[i])];
    out(static_cast<Eigen::Index>(i), 0) = static_cast<double>(label);
    if (!truth.empty()) hits += label == truth[i];
  }
  destination.write(out);
  if (!truth.empty())
    std::fprintf(stderr, "accuracy=%.4f\n", static_cast<double>(hits) / static_cast<double>(truth.size()));
}

}  // namespace

/// MemAvailable from /proc/meminfo, 0 (no limit) when unknown.
std::size_t available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  std::size_t kib;
  std::string unit;
  while (in >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  return 0;
}

PredictData read_predict_data(const PredictArgs& a) {
  const Eigen::MatrixXd train = read_matrix(a.train);
  const Eigen::MatrixXd test = read_matrix(a.test);
  const bool separate = !a.train_targets.empty();
  if (!a.test_targets.empty() && !separate) throw CliError("--test-targets needs --train-targets");
  PredictData d;
  Eigen::MatrixXd y_raw;
  if (separate) {
    if (a.outputs_given)
      throw CliError("--outputs does not apply with --train-targets (the file's columns are the outputs)");
    d.x = train;
    d.xt = test;
    y_raw = read_matrix(a.train_targets);
    if (y_raw.rows() != d.x.rows())
      throw CliError("--train-targets must have one row per TRAIN row (got " + std::to_string(y_raw.rows()) + " for " +
                     std::to_string(d.x.rows()) + ")");
    if (d.xt.cols() != d.x.cols())
      throw CliError("TEST must have " + std::to_string(d.x.cols()) + " feature columns like TRAIN (got " +
                     std::to_string(d.xt.cols()) + ")");
    if (!a.test_targets.empty()) {
      d.test_targets = read_matrix(a.test_targets);
      if (d.test_targets.rows() != d.xt.rows() || d.test_targets.cols() != y_raw.cols())
        throw CliError("--test-targets must be " + std::to_string(d.xt.rows()) + " x " + std::to_string(y_raw.cols()) +
                       " (got " + std::to_string(d.test_targets.rows()) + " x " +
                       std::to_string(d.test_targets.cols()) + ")");
      d.have_test_targets = true;
    }
  } else {
    const long k = a.outputs;
    if (k < 1 || k >= train.cols())
      throw CliError("--outputs must be between 1 and the number of TRAIN columns - 1 (got " + std::to_string(k) +
                     " for " + std::to_string(train.cols()) + " columns)");
    const Eigen::Index features = train.cols() - k;
    if (test.cols() != features && test.cols() != features + k)
      throw CliError("TEST must have " + std::to_string(features) + " feature columns, optionally followed by " +
                     std::to_string(k) + " targets (got " + std::to_string(test.cols()) + " columns)");
    d.x = train.leftCols(features);
    y_raw = train.rightCols(k);
    d.xt = test.leftCols(features);
    if (test.cols() == features + k) {
      d.test_targets = test.rightCols(k);
      d.have_test_targets = true;
    }
  }
  if (!a.labels) {
    d.y = std::move(y_raw);
    return d;
  }
  // --labels: one integer column → one-hot targets over the training classes.
  const std::vector<long> train_labels = integer_labels(y_raw, "train targets");
  d.classes = train_labels;
  std::sort(d.classes.begin(), d.classes.end());
  d.classes.erase(std::unique(d.classes.begin(), d.classes.end()), d.classes.end());
  if (d.classes.size() < 2) throw CliError("--labels needs at least two classes in the training targets");
  d.y = Eigen::MatrixXd::Zero(d.x.rows(), static_cast<Eigen::Index>(d.classes.size()));
  for (std::size_t i = 0; i < train_labels.size(); ++i)
    d.y(static_cast<Eigen::Index>(i),
        std::lower_bound(d.classes.begin(), d.classes.end(), train_labels[i]) - d.classes.begin()) = 1;
  if (d.have_test_targets) d.test_labels = integer_labels(d.test_targets, "test targets");
  return d;
}

ntk::SolverRequest solver_request(const PredictArgs& a, const PredictData& d, std::size_t memory_limit, int ranks) {
  ntk::SolverRequest request;
  request.n = d.x.rows();
  request.k = d.y.cols();
  request.test_points = d.xt.rows();
  request.finite_times = static_cast<Eigen::Index>(
      std::count_if(a.times.begin(), a.times.end(), [](double t) { return std::isfinite(t); }));
  request.infinite_time = request.finite_times < static_cast<Eigen::Index>(a.times.size());
  request.ridge = a.diag_reg;
  request.memory_limit = memory_limit;
  request.covariance = a.variance;
  request.preconditioner_rank = a.preconditioner_rank;
  request.storage_bytes = a.storage == "float" ? sizeof(float) : sizeof(double);
  request.ranks = ranks;
  return request;
}

Eigen::MatrixXd prediction_table(const PredictArgs& a, const PredictData& d,
                                 const std::vector<Eigen::MatrixXd>& predictions) {
  const Eigen::Index m = d.xt.rows(), k = d.y.cols(), times = static_cast<Eigen::Index>(a.times.size());
  const std::size_t per_time = a.variance ? 2 : 1;
  const Eigen::Index width = times * ((a.labels ? 1 : k) + (a.variance ? 1 : 0));
  Eigen::MatrixXd out(m, width);
  Eigen::Index column = 0;
  for (std::size_t i = 0; i < a.times.size(); ++i) {
    const Eigen::MatrixXd& p = predictions[i * per_time];
    if (a.labels) {
      for (Eigen::Index r = 0; r < m; ++r) {
        Eigen::Index best;
        p.row(r).maxCoeff(&best);
        out(r, column) = static_cast<double>(d.classes[static_cast<std::size_t>(best)]);
      }
      ++column;
    } else {
      out.middleCols(column, k) = p;
      column += k;
    }
    if (a.variance) out.col(column++) = predictions[i * per_time + 1].col(0);
  }
  if (!out.allFinite()) throw CliError("numerical failure: predictions are not finite");
  return out;
}

void report_scores(const PredictArgs& a, const PredictData& d, const std::vector<Eigen::MatrixXd>& predictions) {
  if (!d.have_test_targets) return;
  const Eigen::Index m = d.xt.rows();
  const std::size_t per_time = a.variance ? 2 : 1;
  for (std::size_t i = 0; i < a.times.size(); ++i) {
    const Eigen::MatrixXd& mean = predictions[i * per_time];
    std::fprintf(stderr, "t=%g", a.times[i]);
    if (a.labels) {
      std::size_t hits = 0;
      for (Eigen::Index r = 0; r < m; ++r) {
        Eigen::Index best;
        mean.row(r).maxCoeff(&best);
        hits += d.classes[static_cast<std::size_t>(best)] == d.test_labels[static_cast<std::size_t>(r)];
      }
      std::fprintf(stderr, " accuracy=%.4f", static_cast<double>(hits) / static_cast<double>(m));
    } else {
      const double mse = (mean - d.test_targets).squaredNorm() / static_cast<double>(d.test_targets.size());
      const double acc = target_accuracy(mean, d.test_targets);
      std::fprintf(stderr, " mse=%.6g", mse);
      if (!std::isnan(acc)) std::fprintf(stderr, " accuracy=%.4f", acc);
    }
    std::fprintf(stderr, "\n");
  }
}

void add_predict(CLI::App& app) {
  auto a = std::make_shared<PredictArgs>();
  auto o = std::make_shared<Options>(
      app.add_subcommand("predict", "predictions of the linearized network trained on TRAIN (closed form)"));
  o->required_text("train", a->train, "training rows: features, then --outputs target columns")
      .required_text("test", a->test, "test rows: features, optionally followed by targets")
      .integer("outputs", a->outputs, 1, 1L << 20, "target columns at the end of TRAIN (1)")
      .choice("kernel,kind", a->kernel, {"ntk", "nngp"}, "which kernel drives the dynamics (ntk)")
      .custom("lr", "NUMBER", "learning rate (1)",
              [a](const std::string& v) {
                a->lr = parse_finite(v, "--lr");
                if (!(a->lr > 0)) throw CliError("--lr must be positive (got " + v + ")");
              })
      .custom("time", "T[,T2,...]", "training times, a number >= 0 or inf (inf)",
              [a](const std::string& v) { a->times = parse_times(v); })
      .flag("discrete", a->discrete, "gradient descent steps instead of gradient flow")
      .custom("diag-reg", "NUMBER", "diagonal regularization (0)",
              [a](const std::string& v) {
                a->diag_reg = parse_finite(v, "--diag-reg");
                if (!(a->diag_reg >= 0)) throw CliError("--diag-reg must be >= 0 (got " + v + ")");
              })
      .flag("variance", a->variance, "also print the predictive variance per test row")
      .text("out", a->out, "output file, .npy or CSV (default: stdout)")
      .text("train-targets", a->train_targets, "training targets in their own file (TRAIN is then features only)")
      .text("test-targets", a->test_targets, "test targets in their own file (needs --train-targets)")
      .flag("labels", a->labels, "targets are one column of integer class ids: one-hot fit, predicted class out")
      .choice("solver", a->solver, {"auto", "eigen", "cholesky", "cg"},
              "eigendecomposition, Cholesky (t = inf), conjugate gradients / Chebyshev, or chosen by size (auto)")
      .custom("tolerance", "NUMBER", "relative residual of the iterative solvers (1e-8)",
              [a](const std::string& v) {
                a->tolerance = parse_finite(v, "--tolerance");
                if (!(a->tolerance > 0)) throw CliError("--tolerance must be positive (got " + v + ")");
              })
      .choice("storage", a->storage, {"double", "float"},
              "entries of the stored Gram triangle of --solver cg: float halves its memory, each entry "
              "rounded to 2^-24 relative; the paths that store no triangle (eigen, cholesky, matrix-free) "
              "compute in double and say so in a progress note (double)")
      .integer("max-iterations", a->max_iterations, 1, 1L << 30, "CG iterations / Chebyshev degree at most (1000)")
      .integer("preconditioner-rank", a->preconditioner_rank, 0, 1L << 30,
               "rank of the randomly pivoted Cholesky preconditioner of CG, 0 for none (1000)")
      .custom("memory-limit", "SIZE", "memory budget such as 2G or 500M, 0 for none (default: MemAvailable)",
              [a](const std::string& v) {
                a->memory_limit = parse_memory(v);
                a->memory_limit_given = true;
              })
      .flag("quiet", a->quiet, "no progress lines on stderr")
      .flag("progress", a->progress,
            "progress lines on stderr from the start, wherever stderr goes (default: on a terminal, after the first "
            "second)");
  a->arch.add_to(*o);
  a->image_args.add_to(*o);
  o->app()->callback([a, o] {
    o->finish();
    a->outputs_given = o->app()->count("--outputs") > 0;
    a->image = a->image_args.resolve(*o->app(), a->arch.quadrature > 0);
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
