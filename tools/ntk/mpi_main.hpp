#pragma once
// The ntk tool built with NTK_MPI (tools/ntk/mpi_main.cpp): `mpirun -np P ntk predict ...` runs
// the distributed path (mpi_predict.cpp) with the options of `ntk predict` (predict.hpp).

/// The tool's own main (tools/ntk/main.cpp), called on every rank by the MPI main.
int ntk_cli_tool_main(int argc, char** argv);

namespace ntk_cli {

/// This rank's real stderr (ranks other than 0 send stderr to /dev/null; a failure only this rank
/// knows about is written here before the job is aborted).
inline int mpi_stderr_fd = 2;

/// True when the tool runs under MPI with more than one rank (then predict takes the MPI path).
bool mpi_distributed();

}  // namespace ntk_cli
