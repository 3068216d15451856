// The distributed Gram operator and the ScaLAPACK paths, timed per phase, under whatever
// `mpirun -np P` and OMP_NUM_THREADS start it (benchmarks/mpi_scaling.sh runs the 1x1, 2x1 and
// 1x2 grid and prints the ratios).  Not Google Benchmark: every rank must run the same collective
// sequence, and the quantities are per rank (maximum over ranks reported).
//
//   bench_mpi gram N D K PRODUCTS     kernel phase, then PRODUCTS K-column products
//   bench_mpi eigen N D               ScaLAPACK pdsyevd dynamics (kernel + decomposition)
//   bench_mpi cholesky N D K          ScaLAPACK pdpotrf + pdpotrs
//   bench_mpi eigen-serial N D        the same decomposition through Eigen (one process)
// Output: one line "key=value ..." from rank 0.
#include <ntk/activations.hpp>
#include <ntk/dynamics.hpp>
#include <ntk/kernel.hpp>
#include <ntk/layers.hpp>
#include <ntk/mpi.hpp>
#include <ntk/random.hpp>
#if defined(NTK_BENCH_SCALAPACK)
#include <ntk/scalapack.hpp>
#endif

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

using Matrix = Eigen::MatrixXd;

Matrix inputs(Eigen::Index n, Eigen::Index d, std::uint64_t seed) {
  return ntk::normal_matrix(n, d, seed);
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double max_over_ranks(double v) {
  double out = 0;
  MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return out;
}

double peak_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux: kilobytes
}

double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         1e-6 * double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

int threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  const int p = ntk::mpi::size(MPI_COMM_WORLD), me = ntk::mpi::rank(MPI_COMM_WORLD);
  const std::string mode = argc > 1 ? argv[1] : "gram";
  const auto arg = [&](int i, long fallback) { return argc > i ? std::atol(argv[i]) : fallback; };
  const Eigen::Index n = arg(2, 8000), d = arg(3, 784);
  const auto net = ntk::mlp(ntk::Relu{}, 3, 0, std::sqrt(2.0), 0.1);
  // Inputs generated on the root and broadcast, as a program reading a file would.
  Matrix x;
  if (me == 0) x = inputs(n, d, 1);
  ntk::mpi::broadcast(MPI_COMM_WORLD, x, 0);
  x /= std::sqrt(static_cast<double>(d));
  char line[512] = {};
  if (mode == "gram") {
    const Eigen::Index k = arg(4, 10), products = arg(5, 20);
    MPI_Barrier(MPI_COMM_WORLD);
    double start = now();
    const double cpu_start = cpu_seconds();
    const ntk::mpi::DistributedGram<> gram(MPI_COMM_WORLD, net, x, ntk::KernelKind::ntk);
    const double kernel = max_over_ranks(now() - start);
    (void)cpu_start;
    // Processor time of the tiles alone (a rank waiting in a collective spins and burns CPU).
    const double kernel_cpu = max_over_ranks(gram.kernel_cpu_seconds());
    const double tiles_wall = max_over_ranks(gram.kernel_seconds());
    const Matrix v = inputs(n, k, 2);
    Matrix out(n, k);
    MPI_Barrier(MPI_COMM_WORLD);
    start = now();
    const double cpu_products = cpu_seconds();
    for (Eigen::Index i = 0; i < products; ++i) gram.apply(v, out);
    const double product = max_over_ranks(now() - start) / static_cast<double>(products);
    const double product_cpu = max_over_ranks(cpu_seconds() - cpu_products) / static_cast<double>(products);
    const double comm = max_over_ranks(gram.traffic().seconds) / static_cast<double>(products);
    const double storage_mb = max_over_ranks(static_cast<double>(gram.local_storage()) * 8 / 1e6);
    const double sent = gram.traffic().sent / static_cast<double>(products) * 8;
    std::snprintf(line, sizeof line,
                  "mode=gram n=%ld d=%ld k=%ld ranks=%d threads=%d kernel_s=%.3f tiles_s=%.3f tiles_cpu_s=%.3f "
                  "product_s=%.5f product_cpu_s=%.5f "
                  "comm_s=%.5f bytes_sent_per_product=%.0f gram_mb_per_rank=%.1f peak_mb_per_rank=%.1f",
                  long(n), long(d), long(k), p, threads(), kernel, tiles_wall, kernel_cpu, product, product_cpu, comm,
                  sent, storage_mb, max_over_ranks(peak_mb()));
#if defined(NTK_BENCH_SCALAPACK)
  } else if (mode == "eigen") {
    const Matrix y = inputs(n, 10, 3);
    MPI_Barrier(MPI_COMM_WORLD);
    const ntk::mpi::ScalapackDynamics dynamics(MPI_COMM_WORLD, net, x, y, ntk::KernelKind::ntk);
    std::snprintf(line, sizeof line,
                  "mode=eigen n=%ld ranks=%d threads=%d kernel_s=%.3f pdsyevd_s=%.3f peak_mb_per_rank=%.1f", long(n), p,
                  threads(), max_over_ranks(dynamics.kernel_seconds()), max_over_ranks(dynamics.solve_seconds()),
                  max_over_ranks(peak_mb()));
  } else if (mode == "cholesky") {
    const Matrix y = inputs(n, arg(4, 10), 3);
    MPI_Barrier(MPI_COMM_WORLD);
    const auto solution = ntk::mpi::scalapack_solve(MPI_COMM_WORLD, net, x, y, ntk::KernelKind::ntk, 1e-3);
    std::snprintf(line, sizeof line,
                  "mode=cholesky n=%ld ranks=%d threads=%d kernel_s=%.3f pdpotrf_s=%.3f peak_mb_per_rank=%.1f", long(n),
                  p, threads(), max_over_ranks(solution.kernel_seconds), max_over_ranks(solution.solve_seconds),
                  max_over_ranks(peak_mb()));
#endif
  } else if (mode == "eigen-serial") {
    const Matrix y = inputs(n, 10, 3);
    double start = now();
    const Matrix g = ntk::ntk_kernel(net, x);
    const double kernel = now() - start;
    start = now();
    const ntk::LinearizedDynamics<> dynamics(g, y);
    std::snprintf(line, sizeof line, "mode=eigen-serial n=%ld threads=%d kernel_s=%.3f eigen_s=%.3f peak_mb=%.1f",
                  long(n), threads(), kernel, now() - start, peak_mb());
  } else {
    std::snprintf(line, sizeof line, "unknown mode %s", mode.c_str());
  }
  if (me == 0) std::printf("%s\n", line);
  MPI_Finalize();
  return 0;
}
