#include <ntk/quadrature.hpp>

#include <cmath>
#include <stdexcept>

#include "catch_shim.hpp"
#include "test_config.hpp"

namespace {

double double_factorial(int k) {
  double r = 1;
  for (int j = k; j > 1; j -= 2) r *= j;
  return r;
}

template <class Scalar>
void check_rule_shape(int order, double tolerance) {
  const auto& rule = ntk::gauss_hermite<Scalar>(order);
  REQUIRE(rule.order() == order);
  long double sum = 0;
  for (int i = 0; i < order; ++i) {
    const auto w = rule.weights()[static_cast<std::size_t>(i)];
    const auto z = rule.nodes()[static_cast<std::size_t>(i)];
    REQUIRE(std::isfinite(static_cast<double>(z)));
    REQUIRE(w >= 0);
    REQUIRE(std::isfinite(static_cast<double>(w)));
    REQUIRE(z == -rule.nodes()[static_cast<std::size_t>(order - 1 - i)]);
    if (i > 0) REQUIRE(z > rule.nodes()[static_cast<std::size_t>(i - 1)]);
    sum += w;
  }
  REQUIRE(std::fabs(static_cast<double>(sum) - 1) <= tolerance);
}

}  // namespace

TEST_CASE("Gauss-Hermite: every order to 512 has sorted symmetric nodes, positive weights summing to 1",
          "[quadrature]") {
  for (int order = 1; order <= 512; ++order) check_rule_shape<double>(order, 1e-14);
  for (int order : {1, 2, 7, 64, 300}) {
    check_rule_shape<float>(order, 1e-6);
    check_rule_shape<long double>(order, 1e-17);
  }
}

TEST_CASE("Gauss-Hermite: even moments E[Z^k] = (k-1)!! to 1e-12, odd moments vanish", "[quadrature]") {
  for (int order : {1, 2, 3, 5, 8, 16, 40, 100, 256, 512}) {
    const auto& rule = ntk::gauss_hermite<double>(order);
    for (int k = 0; k <= std::min(2 * order - 2, 30); ++k) {
      const double moment = rule.expect([k](double z) { return std::pow(z, k); });
      if (k % 2 == 1) {
        REQUIRE(std::fabs(moment) <= 1e-12 * double_factorial(k + 1));
      } else {
        INFO("order " << order << " k " << k);
        REQUIRE(ntk_test::relative_error(moment, double_factorial(k - 1)) <= 1e-12);
      }
    }
  }
}

TEST_CASE("Gauss-Hermite: E[cos Z] = exp(-1/2) to 1e-14 at every order from 20 to 512", "[quadrature]") {
  for (int order = 20; order <= 512; ++order) {
    const double value = ntk::gauss_hermite<double>(order).expect([](double z) { return std::cos(z); });
    INFO("order " << order);
    REQUIRE(std::fabs(value - std::exp(-0.5)) <= 1e-14);
  }
  const long double value = ntk::gauss_hermite<long double>(60).expect([](long double z) { return std::cos(z); });
  REQUIRE(std::fabs(static_cast<double>(value - std::exp(-0.5L))) <= 1e-18);
}

TEST_CASE("Gauss-Hermite: bad orders are rejected with the function and the value", "[quadrature]") {
  REQUIRE_THROWS_AS(ntk::gauss_hermite<double>(0), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::gauss_hermite<double>(ntk::max_quadrature_order + 1), std::invalid_argument);
  try {
    ntk::gauss_hermite<double>(-3);
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    REQUIRE(std::string(e.what()).find("ntk::GaussHermiteRule: order") == 0);
    REQUIRE(std::string(e.what()).find("-3") != std::string::npos);
  }
}

TEST_CASE("expect: E[f(sigma Z)] is exact for polynomials and handles variance 0", "[quadrature]") {
  REQUIRE(ntk::expect([](double x) { return x * x; }, 2.5, 4) == Approx(2.5).epsilon(1e-15));
  REQUIRE(ntk::expect([](double x) { return x * x * x * x; }, 2.0, 4) == Approx(12.0).epsilon(1e-14));
  REQUIRE(ntk::expect([](double x) { return std::cos(x) + 3; }, 0.0, 10) == Approx(4.0));
  REQUIRE_THROWS_AS(ntk::expect([](double x) { return x; }, -1.0, 10), std::invalid_argument);
}

TEST_CASE("expect2: covariance moments and degenerate covariances", "[quadrature]") {
  auto id = [](double x) { return x; };
  auto sq = [](double x) { return x * x; };
  // E[XY] = s12, E[X^2 Y^2] = s11 s22 + 2 s12^2.
  REQUIRE(ntk::expect2(id, id, 2.0, 0.3, 0.5, 8) == Approx(0.3).epsilon(1e-14));
  REQUIRE(ntk::expect2(sq, sq, 2.0, 0.3, 0.5, 8) == Approx(1.0 + 0.18).epsilon(1e-14));
  // s11 = 0 and s22 = 0: the zero coordinate is the constant 0.
  auto shifted = [](double x) { return x + 1; };
  REQUIRE(ntk::expect2(shifted, sq, 0.0, 0.0, 3.0, 8) == Approx(3.0).epsilon(1e-14));
  REQUIRE(ntk::expect2(sq, shifted, 3.0, 0.0, 0.0, 8) == Approx(3.0).epsilon(1e-14));
  // Perfect correlation: Y = X, and Y = -X.
  REQUIRE(ntk::expect2(sq, sq, 1.5, 1.5, 1.5, 8) == Approx(3 * 1.5 * 1.5).epsilon(1e-14));
  REQUIRE(ntk::expect2(id, id, 1.5, -1.5, 1.5, 8) == Approx(-1.5).epsilon(1e-14));
  // Round-off beyond perfect correlation is clamped, not rejected.
  REQUIRE(ntk::expect2(id, id, 1.0, 1.0 + 1e-14, 1.0, 8) == Approx(1.0).epsilon(1e-14));
}

TEST_CASE("expect2: invalid covariances are rejected", "[quadrature]") {
  auto id = [](double x) { return x; };
  REQUIRE_THROWS_AS(ntk::expect2(id, id, -1.0, 0.0, 1.0, 8), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::expect2(id, id, 1.0, 0.0, -1e-3, 8), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::expect2(id, id, 1.0, 1.001, 1.0, 8), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::expect2(id, id, 1.0, std::nan(""), 1.0, 8), std::domain_error);
  REQUIRE_THROWS_AS(ntk::expect2(id, id, 1.0, 0.0, 1.0, 0), std::invalid_argument);
}
