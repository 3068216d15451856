// ntk demo: the flagship.  Kernel regression with the analytic NTK and NNGP on a real data set
// (UCI Breast Cancer Wisconsin, shipped in data/), depth and time chosen on a validation split, a
// finite wide network next to its linearization, the deep-limit classifiers, and the lecture's
// figures as CSV + PNG (gnuplot) in demo-output/.
#include <ntk/ntk.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "args.hpp"
#include "commands.hpp"
#include "io.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ntk_cli {

namespace {

using Matrix = Eigen::MatrixXd;
using Clock = std::chrono::steady_clock;
constexpr double pi = 3.141592653589793;
constexpr double inf = std::numeric_limits<double>::infinity();

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void progress(const std::string& message) {
  std::fprintf(stderr, "[demo] %s\n", message.c_str());
}

struct Split {
  Matrix x_train, x_val, x_test, y_train, y_val, y_test;
};

/// Shuffles with a fixed seed, splits 60/20/20, standardizes with the training statistics and maps
/// the two label values to -1 / +1.
Split prepare(const Matrix& data) {
  if (data.cols() < 2) throw CliError("demo data needs feature columns and a label column");
  const Eigen::Index n = data.rows(), d = data.cols() - 1;
  if (n < 10) throw CliError("demo data needs at least 10 rows (got " + std::to_string(n) + ")");
  std::vector<double> values(data.col(d).data(), data.col(d).data() + n);
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  if (values.size() != 2) throw CliError("demo data: the last column must hold exactly two label values");
  std::vector<Eigen::Index> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  ntk::NormalGenerator g(2026);
  for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[g.next_u64() % i]);
  const Eigen::Index n_train = n * 6 / 10, n_val = n * 2 / 10;
  auto take = [&](Eigen::Index from, Eigen::Index count, Matrix& x, Matrix& y) {
    x.resize(count, d);
    y.resize(count, 1);
    for (Eigen::Index i = 0; i < count; ++i) {
      const Eigen::Index r = order[static_cast<std::size_t>(from + i)];
      x.row(i) = data.row(r).head(d);
      y(i, 0) = data(r, d) == values[1] ? 1.0 : -1.0;
    }
  };
  Split s;
  take(0, n_train, s.x_train, s.y_train);
  take(n_train, n_val, s.x_val, s.y_val);
  take(n_train + n_val, n - n_train - n_val, s.x_test, s.y_test);
  const Eigen::RowVectorXd mean = s.x_train.colwise().mean();
  Eigen::RowVectorXd sd = ((s.x_train.rowwise() - mean).array().square().colwise().mean()).sqrt();
  sd = sd.unaryExpr([](double v) { return v > 0 ? v : 1.0; });
  for (Matrix* m : {&s.x_train, &s.x_val, &s.x_test})
    *m = ((m->rowwise() - mean).array().rowwise() / sd.array()).matrix();
  return s;
}

double accuracy(const Matrix& predicted, const Matrix& y) {
  Eigen::Index hits = 0;
  for (Eigen::Index i = 0; i < y.rows(); ++i) hits += (predicted(i, 0) >= 0 ? 1.0 : -1.0) == y(i, 0);
  return static_cast<double>(hits) / static_cast<double>(y.rows());
}

std::vector<int> to_labels(const Matrix& y) {
  std::vector<int> out;
  for (Eigen::Index i = 0; i < y.rows(); ++i) out.push_back(y(i, 0) > 0 ? 1 : -1);
  return out;
}

struct Row {
  std::string model;
  double accuracy, seconds;
};

void write_csv_file(const std::string& path, const std::string& header, const Matrix& m) {
  OutputFile out(path);
  out.append(header + "\n");
  csv_rows(m, [&](const std::string& line) { out.append(line); });
  out.commit();
}

/// Writes `name`.gp into `dir` and runs gnuplot on it inside `dir`, without a shell: the folder's
/// name never reaches a command line or a script (the scripts name their files relative to it).
/// Returns false when gnuplot is not installed; throws when it fails or writes no PNG.
bool plot(const std::string& dir, const std::string& name, const std::string& script) {
  {
    OutputFile out(dir + "/" + name + ".gp");
    out.append("set terminal pngcairo size 900,600 font ',11'\nset output '" + name + ".png'\n" +
               "set datafile separator ','\nset key autotitle columnhead\nset grid\n" + script);
    out.commit();
  }
  const std::string gp = name + ".gp";
  std::fflush(nullptr);
  const pid_t child = ::fork();
  if (child < 0) throw CliError(std::string("cannot start gnuplot (") + std::strerror(errno) + ")");
  if (child == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    if (null >= 0) {
      ::dup2(null, 1);
      ::dup2(null, 2);
    }
    if (::chdir(dir.c_str()) != 0) ::_exit(126);
    char* const argv[] = {const_cast<char*>("gnuplot"), const_cast<char*>(gp.c_str()), nullptr};
    ::execvp("gnuplot", argv);
    ::_exit(127);  // not installed
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0)
    if (errno != EINTR) throw CliError(std::string("gnuplot: ") + std::strerror(errno));
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127) return false;
  struct stat st;
  const std::string png = dir + "/" + name + ".png";
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || ::stat(png.c_str(), &st) != 0 || st.st_size == 0)
    throw CliError(png + ": gnuplot failed to write the figure");
  return true;
}

/// Lecture Fig. 1 (Jacot et al.): Θ of the depth-3 ReLU net (σ_w = 1, σ_b = 0.1) between
/// x0 = (1, 0) and points on the unit circle, analytic and empirical at two widths, at
/// initialization and after `steps` steps of gradient descent with η = 1/n_train on the sum loss.
void figure_ntk_vs_angle(const std::string& dir, const std::vector<long>& widths, long steps, bool& plotted) {
  const int points = 121;
  Matrix circle(points, 2), x0(1, 2);
  x0 << 1, 0;
  for (int i = 0; i < points; ++i) {
    const double gamma = -pi + 2 * pi * i / (points - 1);
    circle.row(i) << std::cos(gamma), std::sin(gamma);
  }
  const auto analytic_arch = ntk::mlp(ntk::Relu{}, 3, 0, 1.0, 0.1);
  Matrix table(points, 2 + 2 * static_cast<Eigen::Index>(widths.size()));
  for (int i = 0; i < points; ++i) table(i, 0) = -pi + 2 * pi * i / (points - 1);
  table.col(1) = ntk::ntk_kernel(analytic_arch, x0, circle).transpose();
  ntk::NormalGenerator g(7);
  const Eigen::Index n_train = 16;
  Matrix x(n_train, 2), y(n_train, 1);
  for (Eigen::Index i = 0; i < n_train; ++i) {
    x(i, 0) = g.normal();
    x(i, 1) = g.normal();
    y(i, 0) = x(i, 0) * x(i, 1);
  }
  std::string header = "gamma,analytic";
  for (std::size_t w = 0; w < widths.size(); ++w) {
    const auto t0 = Clock::now();
    ntk::TrainOptions options;
    options.learning_rate = 1.0 / static_cast<double>(n_train);
    options.steps = steps;
    // Very wide networks train in float: their 2e8 weights make each step memory-bound.
    auto run = [&](auto zero) {
      using Scalar = decltype(zero);
      using M = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
      const M x0s = x0.cast<Scalar>(), cs = circle.cast<Scalar>(), xs = x.cast<Scalar>(), ys = y.cast<Scalar>();
      ntk::Network<ntk::Mlp<ntk::Relu>, Scalar> net(ntk::mlp(ntk::Relu{}, 3, widths[w], 1.0, 0.1), 2, 11 + w);
      table.col(2 + 2 * static_cast<Eigen::Index>(w)) = net.empirical_ntk(x0s, cs).transpose().template cast<double>();
      const auto history = net.train(xs, ys, options);
      table.col(3 + 2 * static_cast<Eigen::Index>(w)) = net.empirical_ntk(x0s, cs).transpose().template cast<double>();
      return std::make_pair(static_cast<double>(history.loss.front()), static_cast<double>(history.loss.back()));
    };
    const auto loss = widths[w] > 4000 ? run(0.0f) : run(0.0);
    struct {
      std::vector<double> loss;
    } history{{loss.first, loss.second}};
    header += ",width " + std::to_string(widths[w]) + " t=0,width " + std::to_string(widths[w]) +
              " t=" + std::to_string(steps);
    progress("figure 1: width " + std::to_string(widths[w]) + ", " + std::to_string(steps) + " steps, loss " +
             std::to_string(history.loss.front()) + " -> " + std::to_string(history.loss.back()) + " (" +
             std::to_string(seconds_since(t0)) + " s)");
  }
  write_csv_file(dir + "/fig1_ntk_vs_angle.csv", header, table);
  std::string script =
      "set title 'NTK of a depth-3 ReLU network: analytic vs empirical (Jacot et al. Fig. 1)'\n"
      "set xlabel 'angle gamma'\nset ylabel 'Theta(x0, x(gamma))'\nplot "
      "'fig1_ntk_vs_angle.csv' using 1:2 with lines lw 3 lc 'black'";
  for (std::size_t w = 0; w < widths.size(); ++w)
    script += ", '' using 1:" + std::to_string(3 + 2 * w) +
              " with lines dt 2, '' using 1:" + std::to_string(4 + 2 * w) + " with lines";
  plotted = plot(dir, "fig1_ntk_vs_angle", script + "\n") && plotted;
}

/// Lecture Fig. 2: the network function along the circle vs its linearization (closed form with the
/// network's own initial NTK) during training on 4 points.
void figure_function_vs_linearization(const std::string& dir, long width, const std::vector<long>& times,
                                      bool& plotted) {
  const int points = 121;
  Matrix circle(points, 2), x(4, 2), y(4, 1);
  for (int i = 0; i < points; ++i) {
    const double gamma = -pi + 2 * pi * i / (points - 1);
    circle.row(i) << std::cos(gamma), std::sin(gamma);
  }
  const double train_angles[4] = {-2.0, -0.5, 0.7, 2.4};
  const double targets[4] = {-0.4, 0.3, 0.5, -0.2};
  for (int i = 0; i < 4; ++i) {
    x.row(i) << std::cos(train_angles[i]), std::sin(train_angles[i]);
    y(i, 0) = targets[i];
  }
  ntk::Network<ntk::Mlp<ntk::Relu>> net(ntk::mlp(ntk::Relu{}, 3, width, 1.0, 0.1), 2, 5);
  const Matrix g0 = net.empirical_ntk(x, x, ntk::NtkOutputs::full);
  ntk::DynamicsOptions options;
  options.time = ntk::TimeModel::discrete;
  options.learning_rate = 1.0 / g0.eigenvalues().real().maxCoeff();
  options.f0 = net.forward(x);
  const ntk::LinearizedDynamics<> dyn(g0, y, options);
  const auto projection = dyn.project(net.empirical_ntk(circle, x, ntk::NtkOutputs::full), net.forward(circle));
  Matrix table(points, 1 + 2 * static_cast<Eigen::Index>(times.size()));
  for (int i = 0; i < points; ++i) table(i, 0) = -pi + 2 * pi * i / (points - 1);
  std::string header = "gamma";
  long done = 0;
  ntk::TrainOptions step;
  step.learning_rate = options.learning_rate;
  for (std::size_t k = 0; k < times.size(); ++k) {
    step.steps = times[k] - done;
    if (step.steps > 0) net.train(x, y, step);
    done = times[k];
    table.col(1 + 2 * static_cast<Eigen::Index>(k)) = net.forward(circle).col(0);
    table.col(2 + 2 * static_cast<Eigen::Index>(k)) =
        dyn.test_predictions(projection, static_cast<double>(times[k])).col(0);
    header += ",network t=" + std::to_string(times[k]) + ",linearized t=" + std::to_string(times[k]);
  }
  write_csv_file(dir + "/fig2_function_vs_linearization.csv", header, table);
  Matrix train(4, 2);
  for (int i = 0; i < 4; ++i) train.row(i) << train_angles[i], targets[i];
  write_csv_file(dir + "/fig2_training_points.csv", "gamma,target", train);
  std::string script = "set title 'Network (solid) and its linearization (dashed) during training, width " +
                       std::to_string(width) +
                       "'\nset xlabel 'angle gamma'\nset ylabel 'f'\nplot "
                       "'fig2_function_vs_linearization.csv' using 1:2 with lines lw 2";
  for (std::size_t k = 0; k < times.size(); ++k) {
    if (k > 0) script += ", '' using 1:" + std::to_string(2 + 2 * k) + " with lines lw 2";
    script += ", '' using 1:" + std::to_string(3 + 2 * k) + " with lines dt 2 lw 2";
  }
  script += ", 'fig2_training_points.csv' using 1:2 with points pt 7 ps 2 title 'training points'\n";
  plotted = plot(dir, "fig2_function_vs_linearization", script) && plotted;
}

/// Figure 4: φ^opt and φ^opt' for d = 4, 8, 16, 32 (lecture).
void figure_phi_opt(const std::string& dir, bool& plotted) {
  const std::vector<double> dims = {4, 8, 16, 32};
  const int points = 201;
  Matrix table(points, 1 + 2 * static_cast<Eigen::Index>(dims.size()));
  std::string header = "z";
  for (double d : dims) header += ",phi d=" + std::to_string(int(d)) + ",phi' d=" + std::to_string(int(d));
  for (int i = 0; i < points; ++i) {
    const double z = -4 + 8.0 * i / (points - 1);
    table(i, 0) = z;
    for (std::size_t k = 0; k < dims.size(); ++k) {
      const ntk::OptimalActivation phi(dims[k]);
      table(i, 1 + 2 * static_cast<Eigen::Index>(k)) = phi.value(z);
      table(i, 2 + 2 * static_cast<Eigen::Index>(k)) = phi.derivative(z);
    }
  }
  write_csv_file(dir + "/fig4_phi_opt.csv", header, table);
  std::string script =
      "set multiplot layout 1,2 title 'Bayes-optimal activations phi^{opt}_d (lecture eq. 32)'\n"
      "set xlabel 'z'\nset title 'phi'\nplot 'fig4_phi_opt.csv' using 1:2 with lines lw 2";
  for (int k = 1; k < 4; ++k) script += ", '' using 1:" + std::to_string(2 + 2 * k) + " with lines lw 2";
  script += "\nset title \"phi'\"\nplot 'fig4_phi_opt.csv' using 1:3 with lines lw 2";
  for (int k = 1; k < 4; ++k) script += ", '' using 1:" + std::to_string(3 + 2 * k) + " with lines lw 2";
  script += "\nunset multiplot\n";
  plotted = plot(dir, "fig4_phi_opt", script) && plotted;
}

// The shipped data set, found relative to the executable (nothing of the build host is compiled in):
// <prefix>/bin/ntk reads <prefix>/share/ntk/breast_cancer.csv, and the build tree mirrors that
// (tools/ntk/ntk next to tools/share/ntk/, copied there by CMake).
std::string shipped_data() {
  std::vector<char> buffer(4096);
  const ssize_t length = ::readlink("/proc/self/exe", buffer.data(), buffer.size() - 1);
  std::string exe = length > 0 ? std::string(buffer.data(), static_cast<std::size_t>(length)) : std::string();
  const std::size_t slash = exe.rfind('/');
  const std::string dir = slash == std::string::npos ? std::string(".") : exe.substr(0, slash);
  const std::string path = dir + "/../share/ntk/breast_cancer.csv";
  if (::access(path.c_str(), R_OK) != 0)
    throw CliError("the shipped data set is not at " + path + " (pass --data FILE.csv)");
  return path;
}

struct DemoArgs {
  std::string data, out_dir = "demo-output";  // data empty: the shipped data set
  bool quick = false;
  int threads = 0;
};

void run_demo(const DemoArgs& a) {
#if defined(_OPENMP)
  if (a.threads > 0) omp_set_num_threads(a.threads);
#endif
  const bool quick = a.quick;
  const std::string& dir = a.out_dir;
  const std::string path = a.data.empty() ? shipped_data() : a.data;
  const auto start = Clock::now();
  const Matrix data = read_matrix(path);
  const Split s = prepare(data);
  if (::mkdir(dir.c_str(), 0777) != 0 && errno != EEXIST)
    throw CliError(dir + ": cannot create the output folder (" + std::strerror(errno) + ")");
  {
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) throw CliError(dir + ": not a folder");
    OutputFile probe(dir + "/.probe");  // can we write there at all?  (removed again)
  }
  std::printf("ntk demo: %s (%ld x %ld), train %ld / validation %ld / test %ld, features standardized\n\n",
              path.c_str(), static_cast<long>(data.rows()), static_cast<long>(data.cols() - 1),
              static_cast<long>(s.x_train.rows()), static_cast<long>(s.x_val.rows()),
              static_cast<long>(s.x_test.rows()));
  std::vector<Row> rows;

  // 1. Analytic NTK regression: choose depth and time on the validation split.
  progress("choosing depth and training time on the validation split");
  const std::vector<long> depths = quick ? std::vector<long>{1, 3} : std::vector<long>{1, 2, 3, 5, 8};
  const std::vector<double> scaled_times = {1, 10, 100, 1000, inf};  // in units of 1 / λ_max
  long best_depth = 1;
  double best_time = inf, best_val = -1;
  for (long depth : depths) {
    const auto arch = ntk::mlp(ntk::Relu{}, depth);
    const ntk::LinearizedDynamics<> dyn(ntk::ntk_kernel(arch, s.x_train), s.y_train);
    const auto projection = dyn.project(ntk::ntk_kernel(arch, s.x_val, s.x_train));
    for (double t : scaled_times) {
      const double time = t / dyn.eigenvalues().maxCoeff();
      const double acc = accuracy(dyn.test_predictions(projection, time), s.y_val);
      if (acc > best_val + 1e-12) {
        best_val = acc;
        best_depth = depth;
        best_time = time;
      }
    }
  }
  std::printf("selected on validation: depth %ld, time %s (validation accuracy %.4f)\n\n", best_depth,
              std::isinf(best_time) ? "inf" : std::to_string(best_time).c_str(), best_val);
  const auto arch = ntk::mlp(ntk::Relu{}, best_depth);
  double finite_time = best_time;
  for (const char* kind : {"NTK", "NNGP"}) {
    const auto t0 = Clock::now();
    const bool use_ntk = std::string(kind) == "NTK";
    const auto train_k = ntk::kernel(arch, s.x_train, use_ntk ? ntk::KernelKind::ntk : ntk::KernelKind::nngp);
    const auto cross_k = ntk::kernel(arch, s.x_test, s.x_train, use_ntk ? ntk::KernelKind::ntk : ntk::KernelKind::nngp);
    const Matrix& g = use_ntk ? train_k.ntk : train_k.nngp;
    const ntk::LinearizedDynamics<> dyn(g, s.y_train);
    const auto projection = dyn.project(use_ntk ? cross_k.ntk : cross_k.nngp);
    const double kernel_seconds = seconds_since(t0);
    if (std::isinf(finite_time)) finite_time = 10 / dyn.eigenvalues().maxCoeff();
    for (double t : {inf, finite_time * (use_ntk ? 1.0 : 1.0)}) {
      const auto t1 = Clock::now();
      const double acc = accuracy(dyn.test_predictions(projection, t), s.y_test);
      char label[160];
      std::snprintf(label, sizeof label, "analytic %s regression, t = %s (depth %ld)", kind,
                    std::isinf(t) ? "inf" : std::to_string(t).c_str(), best_depth);
      rows.push_back({label, acc, kernel_seconds + seconds_since(t1)});
    }
  }
  // Figure 3: test accuracy against training time from the closed form.
  {
    const auto k = ntk::kernel(arch, s.x_train), kc = ntk::kernel(arch, s.x_test, s.x_train);
    const ntk::LinearizedDynamics<> ntk_dyn(k.ntk, s.y_train), nngp_dyn(k.nngp, s.y_train);
    const auto pn = ntk_dyn.project(kc.ntk), pg = nngp_dyn.project(kc.nngp);
    const int points = 41;
    Matrix table(points, 3);
    for (int i = 0; i < points; ++i) {
      const double scaled = std::pow(10.0, -1 + 5.0 * i / (points - 1));  // 0.1 .. 1e4 over λ_max
      table(i, 0) = scaled;
      table(i, 1) = accuracy(ntk_dyn.test_predictions(pn, scaled / ntk_dyn.eigenvalues().maxCoeff()), s.y_test);
      table(i, 2) = accuracy(nngp_dyn.test_predictions(pg, scaled / nngp_dyn.eigenvalues().maxCoeff()), s.y_test);
    }
    write_csv_file(dir + "/fig3_accuracy_vs_time.csv", "eta t lambda_max,NTK,NNGP", table);
  }

  // 2. A finite wide network trained by gradient descent, next to its linearization.
  {
    const long width = quick ? 128 : 512, steps = quick ? 50 : 300;
    progress("training a width-" + std::to_string(width) + " network for " + std::to_string(steps) + " steps");
    const auto t0 = Clock::now();
    ntk::Network<ntk::Mlp<ntk::Relu>> net(ntk::mlp(ntk::Relu{}, best_depth, width), s.x_train.cols(), 1);
    const Matrix g0 = net.empirical_ntk(s.x_train, s.x_train, ntk::NtkOutputs::full);
    ntk::DynamicsOptions options;
    options.time = ntk::TimeModel::discrete;
    options.learning_rate = 1.0 / g0.eigenvalues().real().maxCoeff();
    options.f0 = net.forward(s.x_train);
    const ntk::LinearizedDynamics<> dyn(g0, s.y_train, options);
    const auto projection =
        dyn.project(net.empirical_ntk(s.x_test, s.x_train, ntk::NtkOutputs::full), net.forward(s.x_test));
    const Matrix linear = dyn.test_predictions(projection, static_cast<double>(steps));
    const double linear_seconds = seconds_since(t0);
    ntk::TrainOptions train;
    train.learning_rate = options.learning_rate;
    train.steps = steps;
    const auto t1 = Clock::now();
    net.train(s.x_train, s.y_train, train);
    const Matrix trained = net.forward(s.x_test);
    const double agree = accuracy(trained.cwiseProduct(linear.unaryExpr([](double v) { return v >= 0 ? 1.0 : -1.0; })),
                                  Matrix::Ones(linear.rows(), 1));
    rows.push_back({"finite ReLU network, width " + std::to_string(width) + ", " + std::to_string(steps) + " GD steps",
                    accuracy(trained, s.y_test), seconds_since(t1)});
    char label[160];
    std::snprintf(label, sizeof label, "  its linearization (closed form), same steps; agrees on %.1f%%", 100 * agree);
    rows.push_back({label, accuracy(linear, s.y_test), linear_seconds});
  }

  // 3. The deep limit and its limit classifiers.
  {
    const std::vector<int> y = to_labels(s.y_train), truth = to_labels(s.y_test);
    const double d = static_cast<double>(s.x_train.cols() - 1);
    const long deep = quick ? 20 : 100;
    progress("deep-limit classifiers");
    auto t0 = Clock::now();
    ntk::DeepKernelClassifier<ntk::OptimalActivation> opt(ntk::OptimalActivation(d), deep, ntk::DeepKind::nngp);
    opt.fit(s.x_train, y);
    rows.push_back({"deep phi_opt(d=" + std::to_string(int(d)) + ") NNGP classifier, depth " + std::to_string(deep),
                    ntk::accuracy(opt.predict(s.x_test), truth), seconds_since(t0)});
    t0 = Clock::now();
    const long relu_depth = quick ? 200 : 2000;
    ntk::DeepKernelClassifier<ntk::Relu> relu(ntk::Relu{}, relu_depth, ntk::DeepKind::ntk);
    relu.fit(s.x_train, y);
    rows.push_back({"deep ReLU NTK classifier, depth " + std::to_string(relu_depth),
                    ntk::accuracy(relu.predict(s.x_test), truth), seconds_since(t0)});
    t0 = Clock::now();
    rows.push_back({"singular-kernel estimate, alpha = d = " + std::to_string(int(d)),
                    ntk::accuracy(ntk::singular_kernel(s.x_train, y, s.x_test, d), truth), seconds_since(t0)});
    t0 = Clock::now();
    rows.push_back({"1-nearest neighbour (on the sphere)",
                    ntk::accuracy(ntk::nearest_neighbor(s.x_train, y, s.x_test), truth), seconds_since(t0)});
    t0 = Clock::now();
    rows.push_back({"majority vote", ntk::accuracy(ntk::majority_vote(y, s.x_test.rows()), truth), seconds_since(t0)});
  }

  std::printf("%-66s %9s %9s\n", "model", "test acc", "time");
  for (const auto& r : rows) std::printf("%-66s %9.4f %8.2fs\n", r.model.c_str(), r.accuracy, r.seconds);
  std::fflush(stdout);

  // 4. The lecture's figures.
  bool plotted = true;
  progress("figure 1 (NTK vs angle, analytic and empirical)");
  figure_ntk_vs_angle(dir, quick ? std::vector<long>{100, 400} : std::vector<long>{500, 10000}, quick ? 20 : 200,
                      plotted);
  progress("figure 2 (network vs linearization)");
  figure_function_vs_linearization(dir, quick ? 128 : 500,
                                   quick ? std::vector<long>{0, 20} : std::vector<long>{0, 10, 1000}, plotted);
  figure_phi_opt(dir, plotted);
  plotted =
      plot(dir, "fig3_accuracy_vs_time",
           "set title 'Test accuracy of the closed-form dynamics (depth " + std::to_string(best_depth) +
               ")'\nset logscale x\nset xlabel 'eta t lambda_max'\nset ylabel 'test accuracy'\nplot "
               "'fig3_accuracy_vs_time.csv' using 1:2 with linespoints lw 2, '' using 1:3 with linespoints lw 2\n") &&
      plotted;
  std::printf(
      "\nfigures (CSV%s) in %s/: fig1_ntk_vs_angle, fig2_function_vs_linearization, "
      "fig3_accuracy_vs_time, fig4_phi_opt\n",
      plotted ? " and PNG" : "; PNG skipped: gnuplot not found", dir.c_str());
  std::printf("total %.1f s\n", seconds_since(start));
}

}  // namespace

void add_demo(CLI::App& app) {
  auto a = std::make_shared<DemoArgs>();
  auto o = std::make_shared<Options>(app.add_subcommand("demo", "the flagship demo: kernel regression, figures"));
  o->text("data", a->data, "CSV data set, last column the two-valued label (the shipped breast cancer data)")
      .text("out-dir", a->out_dir, "folder for the figures (demo-output)")
      .flag("quick", a->quick, "reduced sizes (seconds)")
      .integer("threads", a->threads, 0, processor_count(), "threads, at most the processors (0: all)");
  o->app()->callback([a, o] {
    o->finish();
    run_demo(*a);
  });
}

}  // namespace ntk_cli
