#pragma once
// The ntk tool built with NTK_MPI (tools/ntk/mpi_main.cpp): `mpirun -np P ntk predict ...` runs
// the distributed path with the options of `ntk predict`.
#include <string>
#include <vector>

#include "args.hpp"

/// The tool's own main (tools/ntk/main.cpp), called on every rank by the MPI main.
int ntk_cli_tool_main(int argc, char** argv);

namespace ntk_cli {

/// The parsed options of `ntk predict` (commands_predict.cpp's PredictArgs).
struct MpiPredictRequest {
  std::string train, test, kernel, out, solver = "auto";
  long outputs = 1;
  double lr = 1, diag_reg = 0, tolerance = 1e-8;
  long max_iterations = 1000, preconditioner_rank = 1000;
  std::vector<double> times;
  bool discrete = false, quiet = false, progress = false;
  Architecture arch;
};

/// This rank's real stderr (ranks other than 0 send stderr to /dev/null; a failure only this rank
/// knows about is written here before the job is aborted).
inline int mpi_stderr_fd = 2;

/// True when the tool runs under MPI with more than one rank (then predict takes the MPI path).
bool mpi_distributed();
/// `ntk predict` over MPI_COMM_WORLD: read on rank 0 and broadcast; --solver cholesky (ScaLAPACK,
/// t = ∞), eigen (ScaLAPACK eigendecomposition, any times) or cg (the distributed stored triangle:
/// CG for t = ∞, Chebyshev for finite times); auto takes Cholesky for t = ∞ with --diag-reg > 0,
/// else the eigendecomposition.  Predictions through the distributed test kernel, written once by
/// rank 0.
void run_predict_mpi(const MpiPredictRequest& request);

}  // namespace ntk_cli
