// Catch2 under MPI: every rank runs the same test cases in declaration order (each collective
// test calls the same collectives everywhere); the exit status is non-zero when any rank failed.
#include <mpi.h>

#if defined(NTK_CATCH3)
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int failed = 0;
  {
    Catch::Session session;
    failed = session.applyCommandLine(argc, argv);
    if (failed == 0) failed = session.run();
  }
  int any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any != 0 ? 1 : 0;
}
