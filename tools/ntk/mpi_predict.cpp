// `ntk predict` over MPI (the tool built with NTK_MPI, run by mpirun; see mpi_main.cpp).
#include <ntk/kernel.hpp>
#include <ntk/mpi.hpp>
#include <ntk/scalapack.hpp>
#include <ntk/solvers.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

#include "args.hpp"
#include "io.hpp"
#include "iterative.hpp"
#include "mpi_main.hpp"
#include "progress.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ntk_cli {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string seconds(double s) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f s", s);
  return text;
}

void predict(const MpiPredictRequest& a) {
  const MPI_Comm comm = MPI_COMM_WORLD;
  const int ranks = ntk::mpi::size(comm);
  const bool root = ntk::mpi::rank(comm) == 0;
  const long k = a.outputs;
  bool infinite_only = true;
  for (double t : a.times) infinite_only = infinite_only && std::isinf(t);
  // Progress lines (rank 0's stderr only is connected): --quiet silences them; --progress adds the
  // iteration lines of --solver cg.
  Progress progress(a.quiet, a.progress);
  const auto say = [&](const char* format, auto... values) {
    if (!a.quiet) std::fprintf(stderr, format, values...);
  };
#if defined(_OPENMP)
  if (a.arch.threads > 0) omp_set_num_threads(a.arch.threads);
#endif
  auto start = std::chrono::steady_clock::now();
  const Eigen::MatrixXd train = ntk::mpi::read_on_root(comm, [&] { return read_matrix(a.train); });
  const Eigen::MatrixXd test = ntk::mpi::read_on_root(comm, [&] { return read_matrix(a.test); });
  const Eigen::Index d = train.cols() - k;
  ntk::mpi::collective(comm, [&] {
    if (k < 1 || k >= train.cols())
      throw CliError("--outputs must be between 1 and the number of TRAIN columns - 1 (got " + std::to_string(k) +
                     " for " + std::to_string(train.cols()) + " columns)");
    if (test.cols() != d && test.cols() != d + k)
      throw CliError("TEST must have " + std::to_string(d) + " feature columns, optionally followed by " +
                     std::to_string(k) + " targets (got " + std::to_string(test.cols()) + " columns)");
  });
  // Progress: only rank 0's stderr is connected.
  say("ntk: read %ld training and %ld test points on rank 0, broadcast to %d ranks (%s)\n", long(train.rows()),
      long(test.rows()), ranks, seconds(seconds_since(start)).c_str());
  const Eigen::MatrixXd x = train.leftCols(d), y = train.rightCols(k), xt = test.leftCols(d);
  ntk::KernelOptions kernel_options;
  kernel_options.threads = a.arch.threads;
  kernel_options.dual.quadrature_order = a.arch.quadrature;  // 0: adaptive; with_kernel_activation forces quadrature
  const ntk::KernelKind kind = a.kernel == "nngp" ? ntk::KernelKind::nngp : ntk::KernelKind::ntk;
  // The path: the same checks as the single-process tool (without a memory budget).
  ntk::SolverRequest request;
  request.n = x.rows();
  request.k = k;
  request.test_points = xt.rows();
  request.finite_times = static_cast<Eigen::Index>(
      std::count_if(a.times.begin(), a.times.end(), [](double t) { return std::isfinite(t); }));
  request.infinite_time = request.finite_times < static_cast<Eigen::Index>(a.times.size());
  request.ridge = a.diag_reg;
  request.preconditioner_rank = a.preconditioner_rank;
  request.method = a.solver == "cg"                  ? ntk::SolverMethod::packed
                   : a.solver == "eigen"             ? ntk::SolverMethod::eigen
                   : a.solver == "cholesky"          ? ntk::SolverMethod::cholesky
                   : infinite_only && a.diag_reg > 0 ? ntk::SolverMethod::cholesky
                                                     : ntk::SolverMethod::eigen;
  ntk::mpi::collective(comm, [&] {
    try {
      (void)ntk::plan_solver(request);
    } catch (const std::invalid_argument& e) {
      throw CliError("--solver " + a.solver + ": " + e.what());
    }
  });
  std::vector<Eigen::MatrixXd> predictions;
  with_kernel_activation(a.arch, [&](const auto& phi) {
    const auto net = ntk::mlp(phi, a.arch.depth, 0, a.arch.sigma_w, a.arch.sigma_b);
    start = std::chrono::steady_clock::now();
    if (request.method == ntk::SolverMethod::packed) {
      // The stored triangle split over the ranks; the single-process iterative solvers on it.
      const ntk::mpi::DistributedGram<> gram(comm, net, x, kind, kernel_options);
      say("ntk: kernel %s (distributed triangle, %d ranks)\n", seconds(gram.kernel_seconds()).c_str(), ranks);
      IterativeSettings settings;
      settings.learning_rate = a.lr;
      settings.ridge = a.diag_reg;
      settings.tolerance = a.tolerance;
      settings.max_iterations = a.max_iterations;
      settings.preconditioner_rank = a.preconditioner_rank;
      settings.model = a.discrete ? ntk::TimeModel::discrete : ntk::TimeModel::continuous;
      predictions = iterative_predictions(gram, y, a.times, settings, progress, [&](const Eigen::MatrixXd& c) {
        return ntk::mpi::cross_kernel_times(comm, net, xt, x, kind, c, kernel_options);
      });
    } else if (request.method == ntk::SolverMethod::cholesky) {
      // t = ∞: one Cholesky factorization, no eigendecomposition.
      const auto solution = ntk::mpi::scalapack_solve(comm, net, x, y, kind, a.diag_reg, kernel_options);
      say("ntk: kernel %s, ScaLAPACK Cholesky %s on %d ranks\n", seconds(solution.kernel_seconds).c_str(),
          seconds(solution.solve_seconds).c_str(), ranks);
      predictions.push_back(
          ntk::mpi::cross_kernel_times(comm, net, xt, x, kind, solution.coefficients, kernel_options));
    } else {
      ntk::DynamicsOptions dynamics;
      dynamics.learning_rate = a.lr;
      dynamics.diag_reg = a.diag_reg;
      dynamics.time = a.discrete ? ntk::TimeModel::discrete : ntk::TimeModel::continuous;
      const ntk::mpi::ScalapackDynamics dyn(comm, net, x, y, kind, dynamics, kernel_options);
      say("ntk: kernel %s, ScaLAPACK eigendecomposition %s on %d ranks\n", seconds(dyn.kernel_seconds()).c_str(),
          seconds(dyn.solve_seconds()).c_str(), ranks);
      predictions = dyn.test_predictions(net, xt, x, kind, a.times, Eigen::MatrixXd(), kernel_options);
    }
  });
  Eigen::MatrixXd out(xt.rows(), static_cast<Eigen::Index>(a.times.size()) * k);
  for (std::size_t i = 0; i < predictions.size(); ++i)
    out.middleCols(static_cast<Eigen::Index>(i) * k, k) = predictions[i];
  // Written once, by rank 0; a write failure there is raised everywhere.
  ntk::mpi::collective(comm, [&] {
    if (!out.allFinite()) throw CliError("numerical failure: predictions are not finite");
    if (root) write_matrix(a.out, out);
  });
  if (test.cols() == d + k) {
    const Eigen::MatrixXd targets = test.rightCols(k);
    for (std::size_t i = 0; i < a.times.size(); ++i) {
      const double mse = (predictions[i] - targets).squaredNorm() / static_cast<double>(targets.size());
      std::fprintf(stderr, "t=%g mse=%.6g\n", a.times[i], mse);
    }
  }
}

}  // namespace

void run_predict_mpi(const MpiPredictRequest& request) {
  try {
    predict(request);
  } catch (const std::exception& e) {
    if (dynamic_cast<const ntk::mpi::CollectiveFailure*>(&e)) throw;  // every rank has it: main prints once
    // Only this rank knows: say so on its real stderr, then end the job (the other ranks may be
    // waiting in a collective).
    const std::string line = "ntk: error: " + std::string(e.what()) + "\n";
    if (write(mpi_stderr_fd, line.data(), line.size()) < 0) {
      // nothing more to do: the abort below still ends the job with status 2
    }
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
}

}  // namespace ntk_cli
