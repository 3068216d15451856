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
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "args.hpp"
#include "io.hpp"
#include "iterative.hpp"
#include "mpi_main.hpp"
#include "predict.hpp"
#include "progress.hpp"

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

/// Ranks sharing this node's memory (MPI_COMM_TYPE_SHARED).
int node_ranks(MPI_Comm comm) {
  MPI_Comm node;
  if (MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) != MPI_SUCCESS) return 1;
  const int count = ntk::mpi::size(node);
  MPI_Comm_free(&node);
  return count;
}

/// The path plan_solver accepts for each rank's share: --solver as given, or auto: Cholesky for
/// t = inf with a ridge, else the eigendecomposition (ScaLAPACK, pseudo-inverse semantics), then the
/// distributed triangle when those do not fit.
ntk::SolverPlan mpi_plan(const PredictArgs& a, ntk::SolverRequest request) {
  std::vector<ntk::SolverMethod> candidates;
  if (a.solver == "cg") {
    candidates = {ntk::SolverMethod::packed};
  } else if (a.solver == "eigen") {
    candidates = {ntk::SolverMethod::eigen};
  } else if (a.solver == "cholesky") {
    candidates = {ntk::SolverMethod::cholesky};
  } else {
    const bool cholesky = !request.covariance && request.finite_times == 0 && a.diag_reg > 0;
    candidates = {cholesky ? ntk::SolverMethod::cholesky : ntk::SolverMethod::eigen, ntk::SolverMethod::packed};
  }
  std::string refused;
  for (const ntk::SolverMethod m : candidates) {
    request.method = m;
    try {
      return ntk::plan_solver(request);
    } catch (const std::invalid_argument& e) {
      if (candidates.size() == 1) throw CliError("--solver " + a.solver + ": " + e.what());
      refused += std::string(refused.empty() ? "" : "; ") + e.what();
    }
  }
  throw CliError("--solver auto: no distributed path fits (" + refused + ")");
}

void predict(const PredictArgs& a) {
  const MPI_Comm comm = MPI_COMM_WORLD;
  const int ranks = ntk::mpi::size(comm);
  const bool root = ntk::mpi::rank(comm) == 0;
  // Progress lines (rank 0's stderr only is connected): --quiet silences them; --progress adds the
  // iteration lines of --solver cg.
  Progress progress(a.quiet, a.progress);
  const auto say = [&](const char* format, auto... values) {
    if (!a.quiet) std::fprintf(stderr, format, values...);
  };
  // Errors inside collective(): raised on every rank, printed once (see run_predict_mpi).
  set_threads(a.arch.threads);
  auto start = std::chrono::steady_clock::now();
  // Read and checked on rank 0 (an error there is raised on every rank); the features and fitted
  // targets broadcast; the classes and test targets stay on rank 0, which writes and scores.
  PredictData data;
  ntk::mpi::collective(comm, [&] {
    if (root) data = read_predict_data(a);
  });
  ntk::mpi::broadcast(comm, data.x);
  ntk::mpi::broadcast(comm, data.y);
  ntk::mpi::broadcast(comm, data.xt);
  const Eigen::MatrixXd &x = data.x, &y = data.y, &xt = data.xt;
  say("ntk: read %ld training and %ld test points on rank 0, broadcast to %d ranks (%s)\n", long(x.rows()),
      long(xt.rows()), ranks, seconds(seconds_since(start)).c_str());
  const ntk::KernelOptions kernel_options = kernel_options_of(a.arch);
  const ntk::KernelKind kind = a.kernel == "nngp" ? ntk::KernelKind::nngp : ntk::KernelKind::ntk;
  // The path, checked like the single-process tool's against each rank's share: --memory-limit is
  // per rank; by default MemAvailable divided among the ranks of this node.
  const int local_ranks = node_ranks(comm);
  // The smallest over the ranks, so every rank plans the same path.
  unsigned long long budget = a.memory_limit_given ? a.memory_limit : available_memory() / std::size_t(local_ranks);
  if (budget == 0) budget = ~0ULL;  // MemAvailable unknown: no limit
  MPI_Allreduce(MPI_IN_PLACE, &budget, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, comm);
  if (budget == ~0ULL) budget = 0;
  ntk::SolverPlan plan;
  ntk::mpi::collective(comm,
                       [&] { plan = mpi_plan(a, solver_request(a, data, static_cast<std::size_t>(budget), ranks)); });
  // Image kernels: the dense ScaLAPACK paths only, refused as in one process.
  ntk::mpi::collective(comm, [&] { check_image_path(a, plan); });
  progress.note(std::string("solver ") + ntk::method_name(plan.method) + " (" + plan.reason + "; about " +
                std::to_string(plan.bytes >> 20) + " MiB per rank)");
  // As in one process: the dense paths store no triangle and compute in double.
  if (a.storage == "float" && plan.method != ntk::SolverMethod::packed)
    progress.note(std::string("--storage float: not used by the ") + ntk::method_name(plan.method) + " path");
  // The output is checked (created) before any work; a failure there is raised everywhere.
  std::unique_ptr<Destination> destination;
  ntk::mpi::collective(comm, [&] {
    if (root) destination = std::make_unique<Destination>(a.out);
  });
  std::vector<Eigen::MatrixXd> predictions;
  // The dense ScaLAPACK paths for an MLP network or an image architecture (each rank its
  // block-cyclic blocks of the Gram matrix, test kernels in blocks of test points).
  const auto dense = [&](const auto& arch) {
    start = std::chrono::steady_clock::now();
    if (plan.method == ntk::SolverMethod::cholesky) {
      // t = ∞: one Cholesky factorization, no eigendecomposition; a Gram matrix that is not
      // positive definite (raised on every rank) takes the eigendecomposition's pseudo-inverse,
      // as in one process.
      try {
        const auto solution = ntk::mpi::scalapack_solve(comm, arch, x, y, kind, a.diag_reg, kernel_options);
        say("ntk: kernel %s, ScaLAPACK Cholesky %s on %d ranks\n", seconds(solution.kernel_seconds).c_str(),
            seconds(solution.solve_seconds).c_str(), ranks);
        predictions.push_back(
            ntk::mpi::cross_kernel_times(comm, arch, xt, x, kind, solution.coefficients, kernel_options));
        return;
      } catch (const std::domain_error& e) {
        if (!dynamic_cast<const ntk::mpi::CollectiveFailure*>(&e) ||
            std::string(e.what()).find("not positive definite") == std::string::npos)
          throw;
        progress.note("the Gram matrix is not positive definite: eigendecomposition (pseudo-inverse) instead");
      }
    }
    ntk::DynamicsOptions dynamics;
    dynamics.learning_rate = a.lr;
    dynamics.diag_reg = a.diag_reg;
    dynamics.time = a.discrete ? ntk::TimeModel::discrete : ntk::TimeModel::continuous;
    const ntk::mpi::ScalapackDynamics dyn(comm, arch, x, y, kind, dynamics, kernel_options);
    say("ntk: kernel %s, ScaLAPACK eigendecomposition %s on %d ranks\n", seconds(dyn.kernel_seconds()).c_str(),
        seconds(dyn.solve_seconds()).c_str(), ranks);
    std::vector<Eigen::MatrixXd> means =
        dyn.test_predictions(arch, xt, x, kind, a.times, Eigen::MatrixXd(), kernel_options);
    if (!a.variance) {
      predictions = std::move(means);
      return;
    }
    // --variance: per time the means, then the diagonal of the NTK-GP / NNGP-GP covariance (as in
    // one process, clamped at 0).
    const auto variances = dyn.test_variances(arch, xt, x, kind, a.times, kernel_options);
    for (std::size_t i = 0; i < a.times.size(); ++i) {
      predictions.push_back(std::move(means[i]));
      predictions.push_back(variances[i].cwiseMax(0.0));
    }
  };
  if (a.image) {
    dense(*a.image);
  } else {
    with_kernel_activation(a.arch, [&](const auto& phi) {
      const auto net = ntk::mlp(phi, a.arch.depth, 0, a.arch.sigma_w, a.arch.sigma_b);
      if (plan.method != ntk::SolverMethod::packed) return dense(net);
      start = std::chrono::steady_clock::now();
      const auto cross_times = [&](const Eigen::MatrixXd& c) {
        return ntk::mpi::cross_kernel_times(comm, net, xt, x, kind, c, kernel_options);
      };
      // The stored triangle split over the ranks; the single-process iterative solvers on it.
      auto iterate = [&](const auto& gram) {
        say("ntk: kernel %s (distributed triangle, %d ranks)\n", seconds(gram.kernel_seconds()).c_str(), ranks);
        predictions = iterative_predictions(gram, y, a.times, iterative_settings(a), progress, cross_times);
      };
      if (a.storage == "float")
        iterate(ntk::mpi::DistributedGram<double, float>(comm, net, x, kind, kernel_options));
      else
        iterate(ntk::mpi::DistributedGram<>(comm, net, x, kind, kernel_options));
    });
  }
  // Written once, by rank 0, as in one process; a failure there is raised everywhere.
  ntk::mpi::collective(comm, [&] {
    if (root) destination->write(prediction_table(a, data, predictions));
  });
  if (root) report_scores(a, data, predictions);
}

}  // namespace

void run_predict_mpi(const PredictArgs& request) {
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
