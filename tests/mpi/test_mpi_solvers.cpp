// The single-process solvers of solvers.hpp, unchanged, on the distributed Gram operator: CG
// (with its RPCholesky preconditioner built through the collective columns()) and the Chebyshev
// finite-time dynamics, against the same solvers on a DenseGram.
#include <ntk/activations.hpp>
#include <ntk/gram.hpp>
#include <ntk/kernel.hpp>
#include <ntk/layers.hpp>
#include <ntk/mpi.hpp>
#include <ntk/solvers.hpp>

#include <stdexcept>
#include <string>

#include "catch_shim.hpp"
#include "test_config.hpp"

namespace {
using Matrix = Eigen::MatrixXd;
using ntk_test::normal_matrix;
const MPI_Comm world = MPI_COMM_WORLD;
double relative(const Matrix& a, const Matrix& b) {
  return (a - b).norm() / std::max(b.norm(), 1e-300);
}

struct Problem {
  Eigen::Index n = ntk_test::scaled(400, 60);
  decltype(ntk::mlp(ntk::Relu{}, 3)) net = ntk::mlp(ntk::Relu{}, 3, 0, 1.4, 0.1);
  Matrix x = normal_matrix(n, 6, 201), xt = normal_matrix(30, 6, 202), y = normal_matrix(n, 3, 203);
  Matrix g = ntk::ntk_kernel(net, x);
};
}  // namespace

TEST_CASE("CG on the distributed Gram predicts as CG on the dense Gram to 1e-10", "[mpi][solvers]") {
  const Problem p;
  ntk::mpi::DistributedOptions tiles;
  tiles.tile = 64;
  const ntk::mpi::DistributedGram<> gram(world, p.net, p.x, ntk::KernelKind::ntk, {}, tiles);
  const ntk::DenseGram<> dense(p.g);
  ntk::CgOptions options;
  options.tolerance = 1e-13;
  options.preconditioner_rank = 50;
  options.preconditioner_block = 20;
  const double ridge = 1e-3 * p.g.diagonal().mean();
  ntk::SolverInfo info, reference_info;
  const Matrix alpha = ntk::cg_solve(gram, p.y, ridge, options, &info);
  const Matrix reference = ntk::cg_solve(dense, p.y, ridge, options, &reference_info);
  CHECK(info.converged);
  CHECK(info.preconditioner_rank == reference_info.preconditioner_rank);
  const Matrix predictions = ntk::mpi::cross_kernel_times(world, p.net, p.xt, p.x, ntk::KernelKind::ntk, alpha);
  const Matrix reference_predictions = ntk::cross_kernel_times(p.net, p.xt, p.x, ntk::KernelKind::ntk, reference);
  CHECK(relative(predictions, reference_predictions) < 1e-10);
  // Every rank holds the same solution (the iteration took the same decisions everywhere).
  Matrix root = alpha;
  ntk::mpi::broadcast(world, root, 0);
  CHECK((alpha - root).cwiseAbs().maxCoeff() == 0.0);
}

TEST_CASE("Chebyshev dynamics on the distributed Gram predict as on the dense Gram to 1e-10", "[mpi][solvers]") {
  const Problem p;
  const ntk::mpi::DistributedGram<> gram(world, p.net, p.x, ntk::KernelKind::ntk);
  const ntk::DenseGram<> dense(p.g);
  const std::vector<double> times = {1, 10, 100};
  for (auto model : {ntk::TimeModel::continuous, ntk::TimeModel::discrete}) {
    const double eta = model == ntk::TimeModel::discrete ? 1.0 / p.g.diagonal().sum() : 0.5 / p.g.diagonal().mean();
    ntk::ChebyshevOptions options;
    options.tolerance = 1e-12;
    const auto got = ntk::dynamics_factor(gram, p.y, times, eta, model, 0.0, options);
    const auto reference = ntk::dynamics_factor(dense, p.y, times, eta, model, 0.0, options);
    for (std::size_t i = 0; i < times.size(); ++i) {
      const Matrix f = ntk::mpi::cross_kernel_times(world, p.net, p.xt, p.x, ntk::KernelKind::ntk, got[i]);
      const Matrix r = ntk::cross_kernel_times(p.net, p.xt, p.x, ntk::KernelKind::ntk, reference[i]);
      CHECK(relative(f, r) < 1e-10);
    }
  }
}

TEST_CASE("An exception on one rank in the middle of CG ends the solve with one error on every rank",
          "[mpi][solvers][errors]") {
  const Problem p;
  const int ranks = ntk::mpi::size(world);
  const ntk::mpi::DistributedGram<> gram(world, p.net, p.x, ntk::KernelKind::ntk);
  ntk::CgOptions options;
  options.preconditioner_rank = 0;
  // Product 6 on the last rank fails: every rank is then inside the same apply().
  if (ntk::mpi::rank(world) == ranks - 1) gram.inject_fault(5);
  std::string message;
  try {
    (void)ntk::cg_solve(gram, p.y, 1e-3, options);
  } catch (const std::runtime_error& e) {
    message = e.what();
  }
  CHECK(message.find("ntk::DistributedGram::apply: injected fault") == 0);
  if (ranks > 1)
    CHECK(message.find("(rank " + std::to_string(ranks - 1) + " of " + std::to_string(ranks) + ")") !=
          std::string::npos);
}
