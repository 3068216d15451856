// Edge cases and properties across the library: finite results or documented errors at extreme
// depths, scales and degenerate inputs; monotonicity and PSD properties on many random cases;
// concurrent use of shared const objects.
#include <ntk/ntk.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <thread>
#include <vector>

#include "catch_shim.hpp"
#include "test_config.hpp"

namespace {

using Matrix = Eigen::MatrixXd;

using ntk_test::normal_matrix;

template <class Phi>
bool finite_kernel(const Phi& phi, long depth, double sigma_w, double sigma_b, const Matrix& x) {
  const auto k = ntk::kernel(ntk::mlp(phi, depth, 0, sigma_w, sigma_b), x);
  return k.ntk.allFinite() && k.nngp.allFinite();
}

}  // namespace

TEST_CASE("Edge cases: depth 1 and 1e5, sigma_w from 1e-3 to 1e3", "[hardening]") {
  const Matrix x = normal_matrix(5, 3, 1);
  CHECK(finite_kernel(ntk::Relu{}, 1, 1.0, 1.0, x));
  CHECK(finite_kernel(ntk::Tanh{}, 1, 1.0, 1.0, x));
  CHECK(finite_kernel(ntk::Erf{}, ntk_test::scaled(100000, 10000), 1.0, 0.5, x));
  CHECK(finite_kernel(ntk::Relu{}, ntk_test::scaled(100000, 10000), std::sqrt(2.0), 0.0, x));
  for (double sigma_w : {1e-3, 1e-1, 10.0, 1e3}) {
    INFO("sigma_w " << sigma_w);
    CHECK(finite_kernel(ntk::Relu{}, 3, sigma_w, 0.1, x));
    CHECK(finite_kernel(ntk::Erf{}, 3, sigma_w, 0.1, x));
  }
  // A true value beyond double's range is an overflow error, not inf: (1e3)^(2 * 200).
  REQUIRE_THROWS_AS(ntk::kernel(ntk::mlp(ntk::Relu{}, 200, 0, 1e3, 0.1), x), std::overflow_error);
  REQUIRE_THROWS_AS(ntk::kernel_diagonal(ntk::mlp(ntk::Relu{}, 200, 0, 1e3, 0.1), x), std::overflow_error);
}

TEST_CASE("Edge cases: input norms from 1e-150 to 1e150 (double), 1e-30 to 1e15 (float)", "[hardening]") {
  const Matrix x = normal_matrix(4, 3, 2);
  for (double scale : {1e-150, 1e-50, 1.0, 1e50, 1e150}) {
    INFO("scale " << scale);
    const Matrix xs = x * scale;
    CHECK(finite_kernel(ntk::Relu{}, 3, 1.0, 0.0, xs));
    CHECK(finite_kernel(ntk::Relu{}, 3, 1.0, 1.0, xs));
    CHECK(finite_kernel(ntk::Erf{}, 3, 1.0, 1.0, xs));
    CHECK(finite_kernel(ntk::Gelu{}, 3, 1.0, 1.0, xs));
  }
  // ReLU is homogeneous: scaling inputs by s (no bias) scales both kernels by s².
  const auto base = ntk::kernel(ntk::mlp(ntk::Relu{}, 3, 0, 1.3, 0.0), x);
  const auto tiny = ntk::kernel(ntk::mlp(ntk::Relu{}, 3, 0, 1.3, 0.0), Matrix(x * 1e-150));
  CHECK((tiny.ntk / 1e-300 - base.ntk).cwiseAbs().maxCoeff() <= 1e-12 * base.ntk.cwiseAbs().maxCoeff());
  const Eigen::MatrixXf xf = x.cast<float>();
  for (float scale : {1e-30f, 1e-10f, 1.0f, 1e10f, 1e15f}) {
    INFO("float scale " << scale);
    const Eigen::MatrixXf xs = xf * scale;
    const auto k = ntk::kernel(ntk::mlp(ntk::Erf{}, 3), xs);
    CHECK(k.ntk.allFinite());
  }
  // Beyond the range of float (|x|² = 1e60): the documented overflow error.
  REQUIRE_THROWS_AS(ntk::kernel(ntk::mlp(ntk::Relu{}, 3), Eigen::MatrixXf(xf * 1e30f)), std::overflow_error);
}

TEST_CASE("Edge cases: zero vectors, duplicated points, correlations of exactly +-1", "[hardening]") {
  Matrix x = normal_matrix(5, 3, 3);
  x.row(0).setZero();
  x.row(2) = x.row(1);   // duplicate: correlation +1
  x.row(3) = -x.row(1);  // antipodal: correlation -1
  for (double sigma_b : {0.0, 1.0}) {
    INFO("sigma_b " << sigma_b);
    CHECK(finite_kernel(ntk::Relu{}, 4, 1.0, sigma_b, x));
    CHECK(finite_kernel(ntk::Abs{}, 4, 1.0, sigma_b, x));
    CHECK(finite_kernel(ntk::Erf{}, 4, 1.0, sigma_b, x));
    CHECK(finite_kernel(ntk::Tanh{}, 4, 1.0, sigma_b, x));
    CHECK(finite_kernel(ntk::OptimalActivation(3), 4, 1.0, sigma_b, x));
  }
  const auto k = ntk::kernel(ntk::mlp(ntk::Relu{}, 4, 0, 1.0, 0.0), x);
  CHECK(k.ntk.row(0).cwiseAbs().maxCoeff() == 0);  // the zero input maps to 0 without bias
  CHECK(k.ntk(1, 2) == k.ntk(1, 1));               // duplicates are identical
  // Duplicates make G0 singular: the dynamics stay finite at every time.
  const ntk::LinearizedDynamics<> dyn(ntk::ntk_kernel(ntk::mlp(ntk::Relu{}, 2), x), normal_matrix(5, 1, 4));
  for (double t : {0.0, 1.0, 1e8, std::numeric_limits<double>::infinity()}) CHECK(dyn.train_predictions(t).allFinite());
}

TEST_CASE("Properties on random cases: symmetric PSD Gram matrices, NTK >= NNGP on the diagonal", "[hardening]") {
  const int cases = static_cast<int>(ntk_test::scaled(40, 10));
  ntk::NormalGenerator g(5);
  for (int c = 0; c < cases; ++c) {
    const long depth = 1 + static_cast<long>(g.next_u64() % 8);
    const double sigma_w = 0.5 + 1.5 * g.uniform(), sigma_b = g.uniform();
    const Matrix x = normal_matrix(12, 4, 100 + static_cast<std::uint64_t>(c)) * (0.1 + 3 * g.uniform());
    const auto check = [&](const auto& phi) {
      const auto k = ntk::kernel(ntk::mlp(phi, depth, 0, sigma_w, sigma_b), x);
      INFO(phi.name() << " case " << c);
      CHECK(k.ntk == k.ntk.transpose());
      const double tol = 1e-12 * k.ntk.trace();
      CHECK(Eigen::SelfAdjointEigenSolver<Matrix>(k.ntk).eigenvalues().minCoeff() >= -tol);
      CHECK(Eigen::SelfAdjointEigenSolver<Matrix>(k.nngp).eigenvalues().minCoeff() >= -1e-12 * k.nngp.trace());
      CHECK((k.ntk.diagonal() - k.nngp.diagonal()).minCoeff() >= -1e-12 * k.ntk.diagonal().maxCoeff());
    };
    check(ntk::Relu{});
    check(ntk::Erf{});
    check(ntk::Gelu{});
  }
}

TEST_CASE("Properties: duals of monotone activations are monotone in the correlation", "[hardening]") {
  // Price: dT/dc = E[φ'(u)φ'(v)] >= 0 when φ' >= 0.
  ntk::NormalGenerator g(6);
  const int cases = static_cast<int>(ntk_test::scaled(200, 40));
  auto check = [&](const auto& phi) {
    for (int c = 0; c < cases; ++c) {
      const double q1 = 0.1 + 3 * g.uniform(), q2 = 0.1 + 3 * g.uniform();
      double r1 = 2 * g.uniform() - 1, r2 = 2 * g.uniform() - 1;
      if (r1 > r2) std::swap(r1, r2);
      const double root = std::sqrt(q1 * q2);
      const auto a = ntk::dual(phi, q1, r1 * root, q2), b = ntk::dual(phi, q1, r2 * root, q2);
      INFO(phi.name() << " q " << q1 << " " << q2 << " rho " << r1 << " " << r2);
      CHECK(b.t >= a.t - 1e-14);
      CHECK(a.t_dot >= -1e-14);
    }
  };
  check(ntk::Relu{});
  check(ntk::LeakyRelu{0.2});
  check(ntk::Erf{});
  check(ntk::Tanh{});
  check(ntk::Softplus{});
}

TEST_CASE("Properties: dynamics move monotonically from f0 to the t = inf solution in the eigenbasis", "[hardening]") {
  const Matrix x = normal_matrix(8, 3, 7), y = normal_matrix(8, 2, 8), f0 = normal_matrix(8, 2, 9);
  const Matrix g = ntk::ntk_kernel(ntk::mlp(ntk::Erf{}, 2), x);
  const Eigen::SelfAdjointEigenSolver<Matrix> eigen(g);
  for (auto model : {ntk::TimeModel::continuous, ntk::TimeModel::discrete}) {
    ntk::DynamicsOptions options;
    options.time = model;
    options.learning_rate = 0.9 / eigen.eigenvalues().maxCoeff();
    options.f0 = f0;
    const ntk::LinearizedDynamics<> dyn(g, y, options);
    Matrix previous = eigen.eigenvectors().transpose() * (f0 - y);
    for (double t : {1.0, 2.0, 5.0, 10.0, 40.0, 200.0}) {
      const Matrix now = eigen.eigenvectors().transpose() * (dyn.train_predictions(t) - y);
      CHECK((now.array().abs() <= previous.array().abs() + 1e-12).all());
      // No overshoot (η λ < 1): a component keeps its sign until it is at round-off level.
      CHECK((now.array().abs() < 1e-12 || now.array() * previous.array() > 0).all());
      previous = now;
    }
  }
}

TEST_CASE("Thread safety: concurrent calls on shared const objects give the serial results", "[hardening]") {
  const Matrix x = normal_matrix(10, 3, 10);
  const auto arch = ntk::mlp(ntk::Tanh{}, 3, 0, 1.2, 0.3);
  const Matrix serial = ntk::ntk_kernel(arch, x);
  const ntk::DeepKernel<ntk::OptimalActivation> deep(ntk::OptimalActivation(2), 50);
  const Matrix deep_serial = deep.gram(x, x).ratio();
  ntk::KernelOptions one_thread;
  one_thread.threads = 1;
  std::vector<int> ok(8, 0);
  std::vector<std::thread> workers;
  for (int w = 0; w < 8; ++w)
    workers.emplace_back([&, w] {
      bool good = true;
      // New quadrature orders are built concurrently through the shared cache.
      const auto& rule = ntk::gauss_hermite<double>(700 + w % 3);
      good = good && std::fabs(rule.expect([](double z) { return z * z; }) - 1) < 1e-12;
      good = good && ntk::ntk_kernel(arch, x, one_thread) == serial;
      good = good && deep.gram(x, x).ratio() == deep_serial;
      ok[static_cast<std::size_t>(w)] = good ? 1 : 0;
    });
  for (auto& t : workers) t.join();
  for (int v : ok) CHECK(v == 1);
}
