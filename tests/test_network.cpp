#include <ntk/kernel.hpp>
#include <ntk/network.hpp>
#include <ntk/random.hpp>

#include <cmath>
#include <stdexcept>

#include "catch_shim.hpp"
#include "test_config.hpp"

namespace {

using Matrix = Eigen::MatrixXd;
using Vector = Eigen::VectorXd;

using ntk_test::normal_matrix;

double relative_frobenius(const Matrix& a, const Matrix& b) {
  return (a - b).norm() / b.norm();
}

}  // namespace

TEST_CASE("Normal generator: the stream is fixed (golden values)", "[network]") {
  ntk::NormalGenerator g(42);
  CHECK(g.next_u64() == 1546998764402558742ULL);
  CHECK(g.normal() == Approx(-0.59278099932293427).epsilon(1e-15));
  CHECK(g.normal() == Approx(-1.2606161412164791).epsilon(1e-15));
  // Sample moments of 2e5 draws: mean within 4 standard errors, variance within 1%.
  ntk::NormalGenerator h(7);
  double sum = 0, squares = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double z = h.normal();
    sum += z;
    squares += z * z;
  }
  CHECK(std::fabs(sum / n) <= 4 / std::sqrt(double(n)));
  CHECK(std::fabs(squares / n - 1) <= 0.01);
}

TEST_CASE("Network: parameters from a seed, ordering, shapes and set_parameters", "[network]") {
  const auto arch = ntk::mlp(ntk::Tanh{}, 2, 5, 1.3, 0.4, 3);
  const ntk::Network<ntk::Mlp<ntk::Tanh>> a(arch, 4, 11), b(arch, 4, 11), c(arch, 4, 12);
  CHECK(a.parameter_count() == (5 * 4 + 5) + (5 * 5 + 5) + (3 * 5 + 3));
  CHECK(a.parameters() == b.parameters());
  CHECK(a.parameters() != c.parameters());
  // The first parameter is the first normal of the seed's stream.
  ntk::NormalGenerator g(11);
  CHECK(a.parameters()[0] == g.normal());
  // Forward by hand from the documented ordering (layer 1 only, then the rest through the API).
  const Matrix x = normal_matrix(3, 4, 1);
  auto single = ntk::mlp(ntk::Identity{}, 1, 2, 1.0, 0.5, 1);
  ntk::Network<ntk::Mlp<ntk::Identity>> lin(single, 4, 3);
  Vector theta = Vector::LinSpaced(lin.parameter_count(), -1, 1);
  lin.set_parameters(theta);
  const Matrix f = lin.forward(x);
  // W1 (2x4 row-major) = theta[0..8), b1 = theta[8..10), W2 (1x2) = theta[10..12), b2 = theta[12].
  Eigen::Matrix<double, 2, 4, Eigen::RowMajor> w1;
  for (int i = 0; i < 8; ++i) w1.data()[i] = theta[i];
  const Eigen::Vector2d b1(theta[8], theta[9]);
  const Eigen::RowVector2d w2(theta[10], theta[11]);
  for (Eigen::Index i = 0; i < 3; ++i) {
    const Eigen::Vector2d h = w1 * x.row(i).transpose() / 2.0 + 0.5 * b1;
    CHECK(f(i, 0) == Approx((w2 * h)(0) / std::sqrt(2.0) + 0.5 * theta[12]).epsilon(1e-14));
  }
  REQUIRE_THROWS_AS(lin.set_parameters(Vector::Zero(3)), std::invalid_argument);
  Vector bad = theta;
  bad[2] = std::nan("");
  REQUIRE_THROWS_AS(lin.set_parameters(bad), std::domain_error);
  CHECK(lin.parameters() == theta);
}

TEST_CASE("Jacobian by backpropagation matches central differences", "[network]") {
  const auto arch = ntk::serial(ntk::Dense(1.2, 0.3, 6), ntk::activation(ntk::Tanh{}), ntk::Dense(0.9, 0.1, 5),
                                ntk::activation(ntk::Erf{}), ntk::Dense(1.0, 0.2, 2));
  ntk::Network<decltype(arch)> net(arch, 3, 5);
  const Matrix x = normal_matrix(4, 3, 2);
  const Matrix jac = net.jacobian(x);
  REQUIRE(jac.rows() == 8);
  REQUIRE(jac.cols() == net.parameter_count());
  const Vector theta = net.parameters();
  const double h = 1e-6;
  double worst = 0;
  for (Eigen::Index p = 0; p < theta.size(); ++p) {
    Vector up = theta, down = theta;
    up[p] += h;
    down[p] -= h;
    net.set_parameters(up);
    const Matrix fu = net.forward(x);
    net.set_parameters(down);
    const Matrix fd = net.forward(x);
    for (Eigen::Index i = 0; i < 4; ++i)
      for (Eigen::Index o = 0; o < 2; ++o)
        worst = std::max(worst, std::fabs((fu(i, o) - fd(i, o)) / (2 * h) - jac(i * 2 + o, p)));
  }
  CHECK(worst <= 1e-8);
}

TEST_CASE("Empirical NTK: structured path equals the explicit Jacobian path to 1e-10", "[network]") {
  const auto arch = ntk::mlp(ntk::Relu{}, 3, 16, 1.4, 0.2, 3);
  const ntk::Network<ntk::Mlp<ntk::Relu>> net(arch, 5, 9);
  const Matrix x1 = normal_matrix(6, 5, 3), x2 = normal_matrix(4, 5, 4);
  for (auto outputs : {ntk::NtkOutputs::full, ntk::NtkOutputs::averaged}) {
    const Matrix structured = net.empirical_ntk(x1, x2, outputs);
    const Matrix explicit_ = net.empirical_ntk_via_jacobian(x1, x2, outputs);
    CHECK(structured.rows() == (outputs == ntk::NtkOutputs::full ? 18 : 6));
    CHECK((structured - explicit_).cwiseAbs().maxCoeff() <= 1e-10 * explicit_.cwiseAbs().maxCoeff());
  }
}

TEST_CASE("Monte Carlo NNGP matches the analytic kernel within 4 standard errors", "[network]") {
  const Matrix x = normal_matrix(3, 4, 21);
  const long draws = ntk_test::scaled(800, 200);
  auto check = [&](const auto& phi) {
    // Finite-width bias is O(1/width) relative, far below the Monte Carlo error 1/sqrt(draws).
    const auto arch = ntk::mlp(phi, 2, 256, 1.3, 0.5, 2);
    const auto estimate = ntk::monte_carlo_nngp(arch, x, x, draws, 77);
    const Matrix analytic = ntk::nngp_kernel(arch, x);
    INFO(phi.name());
    for (Eigen::Index i = 0; i < 3; ++i)
      for (Eigen::Index j = 0; j < 3; ++j)
        CHECK(std::fabs(estimate.mean(i, j) - analytic(i, j)) <= 4 * estimate.standard_error(i, j));
    // And the estimate is informative: its error bars are small compared to the kernel.
    CHECK(estimate.standard_error.maxCoeff() <= 0.1 * analytic.cwiseAbs().maxCoeff());
  };
  check(ntk::Relu{});
  check(ntk::Erf{});
}

TEST_CASE("Empirical NTK converges to the analytic NTK like 1/sqrt(width)", "[network]") {
  const Matrix x = normal_matrix(8, 3, 31);
  std::vector<double> errors;
  const long seeds = 12;  // root-mean-square over a fixed seed set (cheap below width 4096)
  for (Eigen::Index width : {64, 256, 1024, 4096}) {
    if (width > 1024 && NTK_TEST_SCALE < 1) break;
    const auto arch = ntk::mlp(ntk::Relu{}, 2, width, std::sqrt(2.0), 0.2, 1);
    const Matrix analytic = ntk::ntk_kernel(arch, x);
    double error = 0;
    for (long s = 0; s < seeds; ++s) {
      const ntk::Network<ntk::Mlp<ntk::Relu>> net(arch, 3, 1000 + static_cast<std::uint64_t>(s));
      error += std::pow(relative_frobenius(net.empirical_ntk(x, x), analytic), 2) / double(seeds);
    }
    errors.push_back(std::sqrt(error));
  }
  for (std::size_t i = 1; i < errors.size(); ++i) {
    INFO("errors " << errors[0] << " " << errors[1] << " " << errors[2] << " " << errors.back());
    CHECK(errors[i - 1] / errors[i] >= 1.6);
  }
}

TEST_CASE("NTK constancy: the kernel moves less during training as width grows", "[network]") {
  const Matrix x = normal_matrix(8, 2, 41);
  Matrix y(8, 1);
  for (Eigen::Index i = 0; i < 8; ++i) y(i, 0) = x(i, 0) * x(i, 1);
  std::vector<double> change;
  for (Eigen::Index width : {32, 128, 512}) {
    ntk::Network<ntk::Mlp<ntk::Relu>> net(ntk::mlp(ntk::Relu{}, 2, width, 1.0, 0.1), 2, 5);
    ntk::TrainOptions options;
    options.learning_rate = 0.1;
    options.steps = 100;
    options.record_ntk = true;
    const auto history = net.train(x, y, options);
    CHECK(history.loss.size() == 101);
    CHECK(history.loss.back() < 0.5 * history.loss.front());
    change.push_back(relative_frobenius(history.ntk_after, history.ntk_before));
  }
  INFO(change[0] << " " << change[1] << " " << change[2]);
  CHECK(change[1] < change[0]);
  CHECK(change[2] < change[1]);
}

TEST_CASE("Gradient equals J^T (f - y) and training is gradient descent", "[network]") {
  const auto arch = ntk::mlp(ntk::Gelu{}, 2, 7, 1.1, 0.3, 2);
  ntk::Network<ntk::Mlp<ntk::Gelu>> net(arch, 3, 2);
  const Matrix x = normal_matrix(5, 3, 6), y = normal_matrix(5, 2, 7);
  const Matrix f = net.forward(x) - y;
  Vector residual(10);
  for (Eigen::Index i = 0; i < 5; ++i)
    for (Eigen::Index o = 0; o < 2; ++o) residual[i * 2 + o] = f(i, o);
  const Vector expected = net.jacobian(x).transpose() * residual;
  CHECK((net.gradient(x, y) - expected).cwiseAbs().maxCoeff() <= 1e-12 * expected.cwiseAbs().maxCoeff());
  CHECK(net.loss(x, y) == Approx(f.squaredNorm() / 2));
  const Vector before = net.parameters();
  ntk::TrainOptions one;
  one.learning_rate = 0.01;
  one.steps = 1;
  net.train(x, y, one);
  CHECK((net.parameters() - (before - 0.01 * expected)).cwiseAbs().maxCoeff() <= 1e-14);
}

TEST_CASE("Monte Carlo results do not depend on the thread count and the NTK mean is close", "[network]") {
  const auto arch = ntk::mlp(ntk::Erf{}, 2, 64, 1.0, 0.3, 1);
  const Matrix x = normal_matrix(3, 2, 8);
  const auto a = ntk::monte_carlo_ntk(arch, x, x, 20, 5);
  const auto b = ntk::monte_carlo_ntk(arch, x, x, 20, 5);
  CHECK(a.mean == b.mean);
  CHECK(relative_frobenius(a.mean, ntk::ntk_kernel(arch, x)) <= 0.05);
}

TEST_CASE("Network: bad input is rejected", "[network]") {
  REQUIRE_THROWS_AS((ntk::Network<ntk::Mlp<ntk::Relu>>(ntk::mlp(ntk::Relu{}, 2, 0), 3, 1)), std::invalid_argument);
  REQUIRE_THROWS_AS((ntk::Network<ntk::Mlp<ntk::Relu>>(ntk::mlp(ntk::Relu{}, 2, 4), 0, 1)), std::invalid_argument);
  ntk::Network<ntk::Mlp<ntk::Relu>> net(ntk::mlp(ntk::Relu{}, 2, 4), 3, 1);
  REQUIRE_THROWS_AS(net.forward(normal_matrix(2, 4, 1)), std::invalid_argument);
  Matrix x = normal_matrix(2, 3, 1);
  x(1, 1) = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_AS(net.forward(x), std::domain_error);
  REQUIRE_THROWS_AS(net.train(normal_matrix(2, 3, 1), normal_matrix(3, 1, 1), ntk::TrainOptions{}),
                    std::invalid_argument);
  ntk::TrainOptions bad;
  bad.learning_rate = -1;
  REQUIRE_THROWS_AS(net.train(normal_matrix(2, 3, 1), normal_matrix(2, 1, 1), bad), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::monte_carlo_nngp(ntk::mlp(ntk::Relu{}, 2, 0), x, x, 10, 1), std::invalid_argument);
}
