#pragma once
// `ntk predict`: its options, the reading of its inputs and the writing of its results, shared by
// the single-process command (commands_predict.cpp) and the MPI one (mpi_predict.cpp), so both
// take the same options and give the same output.
#include <ntk/conv.hpp>
#include <ntk/solvers.hpp>

#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "args.hpp"
#include "image.hpp"
#include "iterative.hpp"
#if defined(NTK_CLI_MPI)
#include "mpi_main.hpp"
#endif

namespace ntk_cli {

struct PredictArgs {
  std::string train, test, kernel = "ntk", out, solver = "auto", train_targets, test_targets, storage = "double";
  long outputs = 1;
  bool outputs_given = false;
  double lr = 1, diag_reg = 0, tolerance = 1e-8;
  long max_iterations = 1000, preconditioner_rank = 1000;
  std::size_t memory_limit = 0;
  bool memory_limit_given = false;
  std::vector<double> times{std::numeric_limits<double>::infinity()};
  bool discrete = false, variance = false, labels = false, quiet = false, progress = false;
  Architecture arch;
  ImageArgs image_args;
  std::optional<ntk::ImageArchitecture> image;  // --architecture: image kernels (dense paths only)
};

/// The settings of the iterative solvers (--solver cg) from the options.
inline IterativeSettings iterative_settings(const PredictArgs& a) {
  IterativeSettings settings;
  settings.learning_rate = a.lr;
  settings.ridge = a.diag_reg;
  settings.tolerance = a.tolerance;
  settings.max_iterations = a.max_iterations;
  settings.preconditioner_rank = a.preconditioner_rank;
  settings.model = a.discrete ? ntk::TimeModel::discrete : ntk::TimeModel::continuous;
  return settings;
}

/// The data of a run: features, the targets fitted (one-hot with --labels) and the test targets
/// as given (empty when there are none).
struct PredictData {
  Eigen::MatrixXd x, y, xt, test_targets;
  bool have_test_targets = false;
  std::vector<long> classes, test_labels;  // --labels: the sorted training classes, the test ids
};

/// Reads TRAIN, TEST and the target files and checks their shapes (the targets are the last
/// --outputs columns of TRAIN/TEST, or --train-targets/--test-targets); --labels turns one integer
/// column into one-hot targets over the training classes.
PredictData read_predict_data(const PredictArgs& a);

/// The request plan_solver checks (n, k, times, ridge, covariance, storage) for `ranks` processes
/// sharing the n x n matrices, each with `memory_limit` bytes (0: none).
ntk::SolverRequest solver_request(const PredictArgs& a, const PredictData& d, std::size_t memory_limit, int ranks);

/// MemAvailable from /proc/meminfo, 0 (no limit) when unknown.
std::size_t available_memory();

/// The output table from the predictions (per time: the m x k means, followed with --variance by
/// an m x 1 variance): per time the k predictions, or with --labels the predicted class, then the
/// variance.  Throws for non-finite predictions.
Eigen::MatrixXd prediction_table(const PredictArgs& a, const PredictData& d,
                                 const std::vector<Eigen::MatrixXd>& predictions);

/// With test targets: one line per time on stderr, the mean squared error (and the accuracy for
/// ±1 or one-hot targets), or with --labels the accuracy over classes.
void report_scores(const PredictArgs& a, const PredictData& d, const std::vector<Eigen::MatrixXd>& predictions);

/// --architecture (image kernels, computed dense): refuses the iterative paths, with the same
/// message in one process and under mpirun.
inline void check_image_path(const PredictArgs& a, const ntk::SolverPlan& plan) {
  if (a.image && (plan.method == ntk::SolverMethod::packed || plan.method == ntk::SolverMethod::matrix_free))
    throw CliError(a.solver == "cg"
                       ? std::string("--architecture: image kernels are computed dense; --solver cg does "
                                     "not apply (use auto, eigen or cholesky)")
                       : "--architecture: image kernels are computed dense, and the dense path does not fit (" +
                             plan.reason + "); use fewer training rows or a larger --memory-limit");
}

#if defined(NTK_CLI_MPI)
/// `ntk predict` over MPI_COMM_WORLD (mpi_predict.cpp): read on rank 0 and broadcast; --solver
/// cholesky (ScaLAPACK, t = inf), eigen (ScaLAPACK eigendecomposition, any times) or cg (the
/// distributed stored triangle: CG for t = inf, Chebyshev for finite times); auto as in one process
/// with each rank's share of the n x n matrices against each rank's memory.  --variance on the
/// eigendecomposition path (ScalapackDynamics::test_variances), --architecture on the eigen and
/// Cholesky paths (image_kernel blocks).  Predictions through the distributed test kernel, written
/// once by rank 0.
void run_predict_mpi(const PredictArgs& a);
#endif

}  // namespace ntk_cli
