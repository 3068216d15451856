// ScaLAPACK's distributed eigendecomposition and Cholesky (ntk/scalapack.hpp) against Eigen's
// LinearizedDynamics on the same kernels, at whatever number of ranks mpiexec started.
#include <ntk/activations.hpp>
#include <ntk/dynamics.hpp>
#include <ntk/kernel.hpp>
#include <ntk/layers.hpp>
#include <ntk/scalapack.hpp>
#include <ntk/spec.hpp>

#include <limits>

#include "catch_shim.hpp"
#include "test_config.hpp"

namespace {
using Matrix = Eigen::MatrixXd;
using ntk_test::normal_matrix;
const MPI_Comm world = MPI_COMM_WORLD;
constexpr double inf = std::numeric_limits<double>::infinity();
double relative(const Matrix& a, const Matrix& b) {
  return (a - b).norm() / std::max(b.norm(), 1e-300);
}
}  // namespace

TEST_CASE("ScaLAPACK eigenvalues and predictions equal Eigen's LinearizedDynamics to 1e-9", "[mpi][scalapack]") {
  const auto net = ntk::mlp(ntk::Relu{}, 3, 0, 1.3, 0.2);
  const Eigen::Index n = ntk_test::scaled(230, 40);
  const Matrix x = normal_matrix(n, 4, 71), xt = normal_matrix(25, 4, 72);
  const Matrix y = normal_matrix(n, 3, 73), f0 = 0.1 * normal_matrix(n, 3, 74), f0t = 0.1 * normal_matrix(25, 3, 75);
  const Matrix g = ntk::ntk_kernel(net, x), gt = ntk::ntk_kernel(net, xt, x);
  ntk::mpi::ScalapackOptions blocks;
  blocks.block = 16;  // several blocks per rank at small n
  for (auto model : {ntk::TimeModel::continuous, ntk::TimeModel::discrete})
    for (double ridge : {0.0, 1e-3}) {
      ntk::DynamicsOptions options;
      options.time = model;
      options.diag_reg = ridge;
      options.learning_rate = model == ntk::TimeModel::discrete ? 0.5 / g.diagonal().sum() : 0.7;
      options.f0 = f0;
      const ntk::LinearizedDynamics<> reference(g, y, options);
      const ntk::mpi::ScalapackDynamics dynamics(world, net, x, y, ntk::KernelKind::ntk, options, {}, blocks);
      CHECK(relative(dynamics.eigenvalues(), reference.eigenvalues()) < 1e-12);
      const std::vector<double> times = {1, 10, 100, inf};
      const auto got = dynamics.test_predictions(net, xt, x, ntk::KernelKind::ntk, times, f0t);
      const auto projection = reference.project(gt, f0t);
      for (std::size_t i = 0; i < times.size(); ++i) {
        CHECK(relative(got[i], reference.test_predictions(projection, times[i])) < 1e-9);
        CHECK(relative(dynamics.train_predictions(times[i]), reference.train_predictions(times[i])) < 1e-9);
      }
    }
}

TEST_CASE("ScaLAPACK test variances equal the diagonal of LinearizedDynamics' covariances to 1e-9",
          "[mpi][scalapack][variance]") {
  const auto net = ntk::mlp(ntk::Relu{}, 2, 0, 1.2, 0.3);
  const Eigen::Index n = ntk_test::scaled(120, 40), m = 17;
  const Matrix x = normal_matrix(n, 3, 61), xt = normal_matrix(m, 3, 62), y = normal_matrix(n, 2, 63);
  const auto train = ntk::kernel(net, x), cross = ntk::kernel(net, xt, x), test = ntk::kernel(net, xt);
  ntk::mpi::ScalapackOptions blocks;
  blocks.block = 8;  // several blocks per rank, a test block shorter than the others
  const std::vector<double> times = {0, 1, 10, inf};
  for (auto model : {ntk::TimeModel::continuous, ntk::TimeModel::discrete})
    for (auto kind : {ntk::KernelKind::ntk, ntk::KernelKind::nngp}) {
      const Matrix& g = kind == ntk::KernelKind::ntk ? train.ntk : train.nngp;
      const Matrix& gt = kind == ntk::KernelKind::ntk ? cross.ntk : cross.nngp;
      ntk::DynamicsOptions options;
      options.time = model;
      options.diag_reg = 1e-3;
      options.learning_rate = model == ntk::TimeModel::discrete ? 1.0 / g.diagonal().sum() : 0.5;
      const ntk::LinearizedDynamics<> reference(g, y, options);
      const auto projection = reference.project(gt);
      const ntk::mpi::ScalapackDynamics dynamics(world, net, x, y, kind, options, {}, blocks);
      const auto got = dynamics.test_variances(net, xt, x, kind, times);
      REQUIRE(got.size() == times.size());
      for (std::size_t i = 0; i < times.size(); ++i) {
        const Matrix expected =
            kind == ntk::KernelKind::ntk
                ? reference.ntk_gp_covariance(projection, train.nngp, cross.nngp, test.nngp, times[i])
                : reference.nngp_gp_covariance(projection, test.nngp, times[i]);
        const Eigen::VectorXd diagonal = expected.diagonal();
        CHECK((got[i] - diagonal).cwiseAbs().maxCoeff() <= 1e-9 * std::max(1.0, diagonal.cwiseAbs().maxCoeff()));
      }
    }
}

TEST_CASE("ScaLAPACK paths take an image architecture: blocks, predictions and variances equal image_kernel's",
          "[mpi][scalapack][image]") {
  const ntk::ImageArchitecture arch = ntk::parse_architecture("conv:3x3:4,relu,gap,dense", ntk::parse_shape("6,6,1"));
  const Eigen::Index n = 30, m = 9;
  const Matrix x = normal_matrix(n, 36, 51), xt = normal_matrix(m, 36, 52), y = normal_matrix(n, 1, 53);
  const auto train = ntk::image_kernel(arch, x), cross = ntk::image_kernel(arch, xt, x);
  const auto test = ntk::image_kernel(arch, xt);
  // Each rank's block-cyclic blocks of the upper triangle: image_kernel's entries to rounding.
  const ntk::mpi::BlacsGrid grid(world);
  ntk::mpi::BlockCyclicMatrix blocks(grid, n, n, 4);
  ntk::mpi::detail::fill_upper(arch, x, ntk::KernelKind::ntk, {}, 0, 4, blocks);
  double worst = 0;
  for (Eigen::Index j = 0; j < blocks.local().cols(); ++j)
    for (Eigen::Index i = 0; i < blocks.local().rows(); ++i) {
      const Eigen::Index r = blocks.global_row(i), c = blocks.global_col(j);
      if (r <= c) worst = std::max(worst, std::abs(blocks.local()(i, j) - train.ntk(r, c)) / train.ntk(c, c));
    }
  CHECK(worst < 1e-13);
  // The cross kernel times a matrix, in blocks of test images.
  const Matrix c = normal_matrix(n, 2, 54);
  CHECK(relative(ntk::mpi::cross_kernel_times(world, arch, xt, x, ntk::KernelKind::nngp, c, {}, 4), cross.nngp * c) <
        1e-12);
  // Test images of the wrong size on the last rank only: the same error on every rank.
  {
    const int p = ntk::mpi::size(world), me = ntk::mpi::rank(world);
    const Matrix bad = normal_matrix(m, me == p - 1 ? 35 : 36, 55);
    std::string message;
    try {
      (void)ntk::mpi::cross_kernel_times(world, arch, bad, x, ntk::KernelKind::nngp, c, {}, 4);
    } catch (const std::invalid_argument& e) {
      message = e.what();
    }
    CHECK(message.find("ntk::mpi::cross_kernel_times: x1 must have 36 columns") == 0);
  }
  // Cholesky and eigendecomposition paths with their variances.
  const auto solution = ntk::mpi::scalapack_solve(world, arch, x, y, ntk::KernelKind::ntk, 1e-2);
  const Matrix alpha = (train.ntk + 1e-2 * Matrix::Identity(n, n)).ldlt().solve(y);
  CHECK(relative(solution.coefficients, alpha) < 1e-9);
  ntk::DynamicsOptions options;
  options.diag_reg = 1e-3;
  const std::vector<double> times = {1, inf};
  for (auto kind : {ntk::KernelKind::ntk, ntk::KernelKind::nngp}) {
    const Matrix& g = kind == ntk::KernelKind::ntk ? train.ntk : train.nngp;
    const ntk::LinearizedDynamics<> reference(g, y, options);
    const auto projection = reference.project(kind == ntk::KernelKind::ntk ? cross.ntk : cross.nngp);
    const ntk::mpi::ScalapackDynamics dynamics(world, arch, x, y, kind, options);
    CHECK(relative(dynamics.eigenvalues(), reference.eigenvalues()) < 1e-12);
    const auto means = dynamics.test_predictions(arch, xt, x, kind, times);
    const auto variances = dynamics.test_variances(arch, xt, x, kind, times);
    for (std::size_t i = 0; i < times.size(); ++i) {
      CHECK(relative(means[i], reference.test_predictions(projection, times[i])) < 1e-9);
      const Matrix expected = kind == ntk::KernelKind::ntk
                                  ? reference.ntk_gp_covariance(projection, train.nngp, cross.nngp, test.nngp, times[i])
                                  : reference.nngp_gp_covariance(projection, test.nngp, times[i]);
      CHECK((variances[i] - expected.diagonal()).cwiseAbs().maxCoeff() <=
            1e-9 * expected.diagonal().cwiseAbs().maxCoeff());
    }
  }
}

TEST_CASE("ScaLAPACK Cholesky solve equals the dense ridge solution to 1e-9", "[mpi][scalapack]") {
  const auto net = ntk::mlp(ntk::Relu{}, 2);
  const Matrix x = normal_matrix(190, 6, 81), y = normal_matrix(190, 2, 82);
  const double ridge = 1e-2;
  const Matrix g = ntk::nngp_kernel(net, x);
  const Matrix reference = (g + ridge * Matrix::Identity(190, 190)).ldlt().solve(y);
  ntk::mpi::ScalapackOptions blocks;
  blocks.block = 32;
  const auto solution = ntk::mpi::scalapack_solve(world, net, x, y, ntk::KernelKind::nngp, ridge, {}, blocks);
  CHECK(relative(solution.coefficients, reference) < 1e-9);
}

TEST_CASE("ScaLAPACK Cholesky of a singular kernel fails with one error on every rank", "[mpi][scalapack][errors]") {
  // The linear network's kernel on 60 points in 3 dimensions has rank at most 4 (one duplicated
  // point alone leaves a single pivot at rounding level, whose sign depends on the instruction set).
  const auto net = ntk::mlp(ntk::Identity{}, 2);
  Matrix x = normal_matrix(60, 3, 91);
  x.row(7) = x.row(3);
  const Matrix y = normal_matrix(60, 1, 92);
  std::string message;
  try {
    (void)ntk::mpi::scalapack_solve(world, net, x, y, ntk::KernelKind::ntk, 0.0);
  } catch (const std::domain_error& e) {
    message = e.what();
  }
  CHECK(message.find("ntk::scalapack_solve: G0 + ridge I is not positive definite") == 0);
}
