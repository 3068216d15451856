#include <ntk/dynamics.hpp>
#include <ntk/kernel.hpp>
#include <ntk/network.hpp>

#include <Eigen/Cholesky>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "catch_shim.hpp"
#include "test_config.hpp"

namespace {

using Matrix = Eigen::MatrixXd;
using Vector = Eigen::VectorXd;
constexpr double inf = std::numeric_limits<double>::infinity();

using ntk_test::normal_matrix;

double relative(const Matrix& a, const Matrix& b) {
  return (a - b).norm() / std::max(b.norm(), 1e-300);
}

// f' = -eta G (f - y), classical Runge-Kutta.
Matrix integrate(const Matrix& g, const Matrix& y, Matrix f, double eta, double t, int steps) {
  const double h = t / steps;
  auto rhs = [&](const Matrix& v) -> Matrix { return -eta * g * (v - y); };
  for (int s = 0; s < steps; ++s) {
    const Matrix k1 = rhs(f), k2 = rhs(f + h / 2 * k1), k3 = rhs(f + h / 2 * k2), k4 = rhs(f + h * k3);
    f += h / 6 * (k1 + 2 * k2 + 2 * k3 + k4);
  }
  return f;
}

struct Problem {
  Matrix x, y, xt;
  Matrix g, gt;  // analytic NTK train-train and test-train
};

Problem analytic_problem() {
  Problem p;
  p.x = normal_matrix(7, 3, 1);
  p.y = normal_matrix(7, 2, 2);
  p.xt = normal_matrix(4, 3, 3);
  const auto net = ntk::mlp(ntk::Erf{}, 2, 0, 1.2, 0.3);
  p.g = ntk::ntk_kernel(net, p.x);
  p.gt = ntk::ntk_kernel(net, p.xt, p.x);
  return p;
}

}  // namespace

TEST_CASE("Continuous dynamics match Runge-Kutta integration of f' = -eta G0 (f - Y) to 1e-10", "[dynamics]") {
  const Problem p = analytic_problem();
  const Matrix f0 = normal_matrix(7, 2, 4);
  ntk::DynamicsOptions options;
  options.learning_rate = 0.3;
  options.f0 = f0;
  const ntk::LinearizedDynamics<> dyn(p.g, p.y, options);
  for (double t : {0.0, 0.5, 2.0}) {
    const Matrix reference = integrate(p.g, p.y, f0, 0.3, t, 4000);
    INFO("t " << t);
    CHECK(relative(dyn.train_predictions(t), reference) <= 1e-10);
  }
  // Test outputs: f_t(x) = f0(x) - eta int_0^t K(x,X)(f_s - Y) ds, integrated alongside.
  const Matrix f0t = normal_matrix(4, 2, 5);
  Matrix f = f0, ft = f0t;
  const int steps = 4000;
  const double h = 2.0 / steps;
  for (int s = 0; s < steps; ++s) {  // RK4 on the joint linear system
    auto rhs = [&](const Matrix& v) { return Matrix(-0.3 * p.g * (v - p.y)); };
    auto rhs_t = [&](const Matrix& v) { return Matrix(-0.3 * p.gt * (v - p.y)); };
    const Matrix k1 = rhs(f), k2 = rhs(f + h / 2 * k1), k3 = rhs(f + h / 2 * k2), k4 = rhs(f + h * k3);
    ft += h / 6 * (rhs_t(f) + 2 * rhs_t(f + h / 2 * k1) + 2 * rhs_t(f + h / 2 * k2) + rhs_t(f + h * k3));
    f += h / 6 * (k1 + 2 * k2 + 2 * k3 + k4);
  }
  CHECK(relative(dyn.test_predictions(p.gt, 2.0, f0t), ft) <= 1e-10);
}

TEST_CASE("Discrete dynamics equal iterating f <- f - eta G0 (f - Y) exactly", "[dynamics]") {
  const Problem p = analytic_problem();
  ntk::DynamicsOptions options;
  options.time = ntk::TimeModel::discrete;
  options.learning_rate = 0.9 / ntk::LinearizedDynamics<>(p.g, p.y).eigenvalues().maxCoeff();
  const ntk::LinearizedDynamics<> dyn(p.g, p.y, options);
  Matrix f = Matrix::Zero(7, 2), ft = Matrix::Zero(4, 2);
  const auto projection = dyn.project(p.gt);
  for (int step = 0; step <= 50; ++step) {
    if (step % 10 == 0) {
      INFO("step " << step);
      CHECK((dyn.train_predictions(step) - f).norm() <= 1e-10 * p.y.norm());
      CHECK((dyn.test_predictions(projection, step) - ft).norm() <= 1e-10 * p.y.norm());
    }
    ft -= options.learning_rate * p.gt * (f - p.y);
    f -= options.learning_rate * p.g * (f - p.y);
  }
  // Step sizes at or beyond 2 / lambda_max diverge: reported, not computed.
  ntk::DynamicsOptions bad = options;
  bad.learning_rate = 2.0 / dyn.eigenvalues().maxCoeff();
  REQUIRE_THROWS_AS(ntk::LinearizedDynamics<>(p.g, p.y, bad), std::invalid_argument);
  REQUIRE_THROWS_AS(dyn.train_predictions(1.5), std::invalid_argument);
}

TEST_CASE("Many times from one decomposition, loss along time, t = infinity", "[dynamics]") {
  const Problem p = analytic_problem();
  const ntk::LinearizedDynamics<> dyn(p.g, p.y);
  const std::vector<double> times = {0.0, 0.1, 1.0, 10.0, inf};
  const auto projection = dyn.project(p.gt);
  const auto many = dyn.test_predictions(projection, times);
  const auto losses = dyn.train_loss(times);
  for (std::size_t i = 0; i < times.size(); ++i) {
    CHECK(many[i] == dyn.test_predictions(projection, times[i]));
    CHECK(losses[i] == Approx((dyn.train_predictions(times[i]) - p.y).squaredNorm() / 2).margin(1e-14));
  }
  CHECK(losses[0] == Approx(p.y.squaredNorm() / 2));
  // G0 positive definite: training targets are reached at t = infinity, and the test predictions
  // are kernel regression, K(x,X) G0^{-1} Y.
  CHECK(relative(dyn.train_predictions(inf), p.y) <= 1e-12);
  const Matrix regression = p.gt * p.g.ldlt().solve(p.y);
  CHECK(relative(many.back(), regression) <= 1e-10);
}

TEST_CASE("Rank-deficient G0 (duplicated inputs) gives finite results", "[dynamics]") {
  Matrix x = normal_matrix(5, 3, 8);
  x.row(4) = x.row(1);
  const Matrix y = normal_matrix(5, 1, 9);
  Matrix consistent = y;
  consistent(4, 0) = y(1, 0);
  const auto net = ntk::mlp(ntk::Relu{}, 2);
  const Matrix g = ntk::ntk_kernel(net, x);
  const ntk::LinearizedDynamics<> dyn(g, consistent);
  CHECK(dyn.eigenvalues().minCoeff() <= 1e-12 * dyn.eigenvalues().maxCoeff());
  for (double t : {0.0, 1.0, 1e6, inf}) {
    CHECK(dyn.train_predictions(t).allFinite());
    CHECK(dyn.test_predictions(ntk::ntk_kernel(net, normal_matrix(3, 3, 10), x), t).allFinite());
  }
  // Consistent targets are still fitted at t = infinity (pseudo-inverse).
  CHECK(relative(dyn.train_predictions(inf), consistent) <= 1e-8);
  // The zero-eigenvalue factor is eta t, not 0/0: a zero kernel leaves f unchanged.
  const ntk::LinearizedDynamics<> zero(Matrix::Zero(3, 3), Matrix::Ones(3, 1));
  CHECK(zero.train_predictions(5.0) == Matrix::Zero(3, 1));
  // A ridge makes the t = infinity solution a ridge regression.
  ntk::DynamicsOptions ridge;
  ridge.diag_reg = 0.5;
  const ntk::LinearizedDynamics<> ridged(g, y, ridge);
  const Matrix expected = g * (g + 0.5 * Matrix::Identity(5, 5)).ldlt().solve(y);
  CHECK(relative(ridged.test_predictions(g, inf), expected) <= 1e-10);
}

TEST_CASE("Parameter change (eq. 24) reproduces f_t through the linearized network", "[dynamics]") {
  const auto arch = ntk::mlp(ntk::Tanh{}, 2, 24, 1.0, 0.2, 2);
  const ntk::Network<ntk::Mlp<ntk::Tanh>> net(arch, 3, 4);
  const Matrix x = normal_matrix(6, 3, 11), y = normal_matrix(6, 2, 12);
  const Matrix j0 = net.jacobian(x), f0 = net.forward(x);
  const Matrix g_full = j0 * j0.transpose();
  for (auto model : {ntk::TimeModel::continuous, ntk::TimeModel::discrete}) {
    ntk::DynamicsOptions options;
    options.time = model;
    options.learning_rate = 0.5 / g_full.eigenvalues().real().maxCoeff();
    options.f0 = f0;
    const ntk::LinearizedDynamics<> dyn(g_full, y, options);
    const double t = 40;
    const Vector shift = dyn.parameter_change(j0, t);
    const Vector change = j0 * shift;
    Matrix f_lin = f0;
    for (Eigen::Index i = 0; i < 6; ++i)
      for (Eigen::Index o = 0; o < 2; ++o) f_lin(i, o) += change[i * 2 + o];
    CHECK(relative(f_lin, dyn.train_predictions(t)) <= 1e-10);
    if (model == ntk::TimeModel::discrete) {
      // ... and equals gradient descent on the linearized network itself.
      ntk::LinearizedNetwork<ntk::Mlp<ntk::Tanh>> lin(net);
      ntk::TrainOptions train;
      train.learning_rate = options.learning_rate;
      train.steps = 40;
      lin.train(x, y, train);
      CHECK(relative(lin.parameter_shift(), shift) <= 1e-10);
      CHECK(relative(lin.forward(x), dyn.train_predictions(t)) <= 1e-10);
    }
  }
}

TEST_CASE("Wide networks trained by gradient descent track the linearized prediction", "[dynamics]") {
  const Matrix x = normal_matrix(10, 3, 21), y = normal_matrix(10, 1, 22), xt = normal_matrix(5, 3, 23);
  std::vector<double> train_gap, test_gap;
  for (Eigen::Index width : {128, 512, 2048}) {
    if (width > 512 && NTK_TEST_SCALE < 1) break;
    double train_sum = 0, test_sum = 0;
    const int seeds = 3;  // single networks fluctuate; average a fixed seed set
    for (int seed = 0; seed < seeds; ++seed) {
      const auto arch = ntk::mlp(ntk::Erf{}, 2, width, 1.5, 0.1, 1);
      ntk::Network<ntk::Mlp<ntk::Erf>> net(arch, 3, 100 + static_cast<std::uint64_t>(seed));
      const Matrix g0 = net.empirical_ntk(x, x, ntk::NtkOutputs::full);
      ntk::DynamicsOptions options;
      options.time = ntk::TimeModel::discrete;
      options.learning_rate = 0.5 / g0.eigenvalues().real().maxCoeff();
      options.f0 = net.forward(x);
      const ntk::LinearizedDynamics<> dyn(g0, y, options);
      const auto projection = dyn.project(net.empirical_ntk(xt, x, ntk::NtkOutputs::full), net.forward(xt));
      ntk::TrainOptions train;
      train.learning_rate = options.learning_rate;
      train.steps = 100;
      net.train(x, y, train);
      train_sum += relative(net.forward(x), dyn.train_predictions(100)) / seeds;
      test_sum += relative(net.forward(xt), dyn.test_predictions(projection, 100)) / seeds;
    }
    train_gap.push_back(train_sum);
    test_gap.push_back(test_sum);
  }
  for (std::size_t i = 1; i < train_gap.size(); ++i) {
    INFO("train gaps " << train_gap[i - 1] << " -> " << train_gap[i] << ", test gaps " << test_gap[i - 1] << " -> "
                       << test_gap[i]);
    CHECK(train_gap[i] < 0.75 * train_gap[i - 1]);
    CHECK(test_gap[i] < 0.75 * test_gap[i - 1]);
  }
  CHECK(test_gap.back() < 0.05);
}

TEST_CASE("GP covariances: NNGP posterior at infinity, NTK-GP prior at t = 0", "[dynamics]") {
  const Matrix x = normal_matrix(6, 2, 31), xt = normal_matrix(3, 2, 32), y = normal_matrix(6, 1, 33);
  const auto net = ntk::mlp(ntk::Relu{}, 2, 0, 1.0, 0.3);
  const auto k_train = ntk::kernel(net, x), k_cross = ntk::kernel(net, xt, x), k_test = ntk::kernel(net, xt);
  // NNGP dynamics (readout only) at infinity: the Bayesian GP posterior.
  const ntk::LinearizedDynamics<> nngp(k_train.nngp, y);
  const auto pn = nngp.project(k_cross.nngp);
  const Matrix posterior = k_test.nngp - k_cross.nngp * k_train.nngp.ldlt().solve(k_cross.nngp.transpose());
  CHECK(relative(nngp.nngp_gp_covariance(pn, k_test.nngp, inf), posterior) <= 1e-9);
  CHECK(relative(nngp.nngp_gp_covariance(pn, k_test.nngp, 0.0), k_test.nngp) <= 1e-14);
  // NTK-GP: the prior at t = 0; at infinity the closed form with Theta^{-1}.
  const ntk::LinearizedDynamics<> ntkgp(k_train.ntk, y);
  const auto pt = ntkgp.project(k_cross.ntk);
  CHECK(relative(ntkgp.ntk_gp_covariance(pt, k_train.nngp, k_cross.nngp, k_test.nngp, 0.0), k_test.nngp) <= 1e-14);
  const Matrix a = k_cross.ntk * k_train.ntk.inverse();
  const Matrix expected =
      k_test.nngp + a * k_train.nngp * a.transpose() - a * k_cross.nngp.transpose() - k_cross.nngp * a.transpose();
  const Matrix got = ntkgp.ntk_gp_covariance(pt, k_train.nngp, k_cross.nngp, k_test.nngp, inf);
  CHECK(relative(got, expected) <= 1e-9);
  CHECK((got - got.transpose()).norm() <= 1e-12 * got.norm());
  CHECK(got.diagonal().minCoeff() >= 0);
}

TEST_CASE("Dynamics: bad input is rejected", "[dynamics]") {
  const Matrix g = Matrix::Identity(3, 3), y = Matrix::Ones(3, 1);
  Matrix asym = g;
  asym(0, 1) = 0.5;
  REQUIRE_THROWS_AS(ntk::LinearizedDynamics<>(asym, y), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::LinearizedDynamics<>(Matrix::Identity(3, 4), y), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::LinearizedDynamics<>(g, Matrix::Ones(4, 1)), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::LinearizedDynamics<>(-g, y), std::invalid_argument);
  Matrix nan = g;
  nan(1, 1) = std::nan("");
  REQUIRE_THROWS_AS(ntk::LinearizedDynamics<>(nan, y), std::domain_error);
  ntk::DynamicsOptions zero_rate;
  zero_rate.learning_rate = 0;
  REQUIRE_THROWS_AS(ntk::LinearizedDynamics<>(g, y, zero_rate), std::invalid_argument);
  const ntk::LinearizedDynamics<> dyn(g, y);
  REQUIRE_THROWS_AS(dyn.train_predictions(-1.0), std::invalid_argument);
  REQUIRE_THROWS_AS(dyn.test_predictions(Matrix::Ones(2, 4), 1.0), std::invalid_argument);
  REQUIRE_THROWS_AS(dyn.parameter_change(Matrix::Ones(2, 5), 1.0), std::invalid_argument);
}
