// A consumer of ntk::mpi and ntk::scalapack: the distributed Gram against ScaLAPACK's Cholesky.
#include <ntk/activations.hpp>
#include <ntk/kernel.hpp>
#include <ntk/layers.hpp>
#include <ntk/mpi.hpp>
#include <ntk/scalapack.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int status = 0;
  {
    const auto net = ntk::mlp(ntk::Relu{}, 2);
    Eigen::MatrixXd x(20, 3);
    for (Eigen::Index i = 0; i < x.rows(); ++i)
      for (Eigen::Index j = 0; j < x.cols(); ++j) x(i, j) = std::sin(1.0 + 3.0 * double(i) + double(j));
    const Eigen::MatrixXd y = x.col(0);
    const ntk::mpi::DistributedGram<> gram(MPI_COMM_WORLD, net, x, ntk::KernelKind::ntk);
    const auto solution = ntk::mpi::scalapack_solve(MPI_COMM_WORLD, net, x, y, ntk::KernelKind::ntk, 0.1);
    const Eigen::MatrixXd back = gram * solution.coefficients + 0.1 * solution.coefficients;
    const double error = (back - y).norm() / y.norm();
    if (ntk::mpi::rank(MPI_COMM_WORLD) == 0) std::printf("residual %.3g\n", error);
    status = error < 1e-10 ? 0 : 1;
  }
  MPI_Finalize();
  return status;
}
