// The ntk tool built with NTK_MPI.  Every rank runs the tool's own main (same arguments, so the
// same parse and the same errors); `ntk predict` then takes the distributed path
// (mpi_predict.cpp), every other command runs on rank 0 alone.  Ranks other than 0 have stdout and
// stderr sent to /dev/null, so progress, results and every error appear once, from rank 0; errors
// that ntk::mpi raised on every rank end every rank with status 2.  A failure that only one rank
// knows about (outside ntk::mpi's collectives) is printed by that rank, which then aborts the job.
#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "mpi_main.hpp"

namespace ntk_cli {
namespace {
int world_size = 1;
}  // namespace
bool mpi_distributed() {
  return world_size > 1;
}
}  // namespace ntk_cli

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ntk_cli::world_size);
  const bool predict = argc > 1 && std::strcmp(argv[1], "predict") == 0;
  if (rank != 0) {
    // Keep the real stderr for a failure only this rank knows about (see mpi_predict.cpp).
    ntk_cli::mpi_stderr_fd = dup(2);
    std::fflush(stdout);
    std::fflush(stderr);
    if (!std::freopen("/dev/null", "w", stdout) || !std::freopen("/dev/null", "w", stderr)) {
      MPI_Abort(MPI_COMM_WORLD, 2);
    }
  }
  int status = rank == 0 || predict ? ntk_cli_tool_main(argc, argv) : 0;
  int worst = 0;
  MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}
