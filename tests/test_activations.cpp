#include <ntk/activations.hpp>
#include <ntk/dual.hpp>

#include <array>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "catch_shim.hpp"
#include "test_config.hpp"

namespace {

struct Cov {
  double q1, c, q2;
};
// docs/mathematics.md T3: C1..C6.
const std::array<Cov, 6> covariances = {
    {{1, 0.5, 1}, {1, 0.999999, 1}, {2, 0.3, 0.5}, {1, -0.7, 1}, {4, 1.999998, 1}, {0.25, 0.1, 3}}};
using Row = std::array<double, 6>;
struct Reference {
  Row t, t_dot;
};
const Reference relu_ref{{0.3044988905221147, 0.4999995001500527, 0.2413721419177438, 0.02504520462663584,
                          0.9999990003001055, 0.1637521304356583},
                         {0.3333333333333333, 0.4997749209022041, 0.2984933420103391, 0.1265916555533175,
                          0.4997749209022041, 0.2684187160224407}};
const Reference erf_ref{{0.2163468959387855, 0.464558484987733, 0.1215268484242327, -0.3090904364961548,
                         0.5592877282402361, 0.03931801622916137},
                        {0.450158158078553, 0.5694095792064883, 0.4100828448683661, 0.4798702088783481,
                         0.3838956087097511, 0.3936808379001586}};
const Reference tanh_ref{{0.1863244132034481, 0.3942940259950888, 0.1051207171106778, -0.2651267300890204,
                          0.4931292553186718, 0.03395050714541042},
                         {0.3847470284410389, 0.4644026022449742, 0.3539544919709578, 0.4049793958684568,
                          0.3214424430857563, 0.33987189297962}};
const Reference sigmoid_ref{{0.02142832563170528, 0.04337899102185398, 0.01225151964000915, -0.03011318981375213,
                             0.06468386204787253, 0.003879651670861472},
                            {0.04319002046226165, 0.04483623660883143, 0.040941010511275, 0.04369020308863463,
                             0.03471038710638329, 0.03880635246659744}};
const Reference gelu_ref{{0.2272949150219915, 0.4252210267195709, 0.1575631534341278, -0.0502129299227318,
                          0.899881201998416, 0.07918327693417112},
                         {0.3422672424594431, 0.4558505899849875, 0.300475688985942, 0.1166836346431879,
                          0.4715989705454855, 0.26602879791888}};
const Reference sin_ref{{0.1917002497821018, 0.4323317907142682, 0.08724652481387907, -0.2790673483144916,
                         0.2977102139481347, 0.01972400254616722},
                        {0.4148304099305316, 0.5676672092862318, 0.2994944986406221, 0.4617508723672263,
                         0.3088192327043923, 0.1978970543190657}};

template <class Phi>
void check_against_reference(const Phi& phi, const Reference& ref, double tolerance, ntk::DualOptions options = {}) {
  for (std::size_t i = 0; i < covariances.size(); ++i) {
    const auto& cv = covariances[i];
    const auto d = ntk::dual(phi, cv.q1, cv.c, cv.q2, options);
    INFO(phi.name() << " C" << i + 1);
    CHECK(ntk_test::relative_error(d.t, ref.t[i]) <= tolerance);
    CHECK(ntk_test::relative_error(d.t_dot, ref.t_dot[i]) <= tolerance);
  }
}

template <class Phi>
void check_closed_form_against_quadrature(const Phi& phi, double tolerance, int order) {
  static_assert(ntk::has_closed_form_dual_v<Phi, double>, "needs a closed form");
  ntk::DualOptions forced;  // with the activation wrapped in ntk::Quadrature
  forced.quadrature_order = order;
  // docs/mathematics.md's covariances plus their anti-correlated mirror images (ρ = −0.999999).
  std::vector<Cov> all(covariances.begin(), covariances.end());
  all.push_back({1, -0.999999, 1});
  all.push_back({4, -1.999998, 1});
  for (const auto& cv : all) {
    const auto exact = ntk::dual(phi, cv.q1, cv.c, cv.q2);
    const auto quad = ntk::dual(ntk::Quadrature{phi}, cv.q1, cv.c, cv.q2, forced);
    INFO(phi.name() << " at (" << cv.q1 << ", " << cv.c << ", " << cv.q2 << ")");
    CHECK(std::fabs(exact.t - quad.t) <= tolerance * std::max(1.0, std::fabs(exact.t)));
    CHECK(std::fabs(exact.t_dot - quad.t_dot) <= tolerance * std::max(1.0, std::fabs(exact.t_dot)));
  }
}

// A user-defined activation: a shifted, scaled sine with no closed form declared.
struct ShiftedSine {
  std::string name() const { return "shifted_sine"; }
  template <class S>
  S value(S z) const {
    return S(1.5) * std::sin(S(1.3) * z + S(0.4));
  }
  template <class S>
  S derivative(S z) const {
    return S(1.95) * std::cos(S(1.3) * z + S(0.4));
  }
};

}  // namespace

TEST_CASE("Closed-form duals match docs/mathematics.md T3 to 1e-12 (ReLU, erf, GELU, sin)", "[dual]") {
  check_against_reference(ntk::Relu{}, relu_ref, 1e-12);
  check_against_reference(ntk::Erf{}, erf_ref, 1e-12);
  check_against_reference(ntk::Gelu{}, gelu_ref, 1e-12);
  check_against_reference(ntk::Sin{}, sin_ref, 1e-12);
}

TEST_CASE("Tanh and centered sigmoid by adaptive quadrature match T3 to 1e-10", "[dual]") {
  static_assert(!ntk::has_closed_form_dual_v<ntk::Tanh, double>, "tanh has no closed form");
  check_against_reference(ntk::Tanh{}, tanh_ref, 1e-10);
  check_against_reference(ntk::Sigmoid{}, sigmoid_ref, 1e-10);
}

TEST_CASE("Smooth closed forms agree with forced quadrature to 1e-12", "[dual]") {
  check_closed_form_against_quadrature(ntk::Erf{}, 1e-12, 512);
  check_closed_form_against_quadrature(ntk::Gelu{}, 1e-12, 256);
  check_closed_form_against_quadrature(ntk::Sin{}, 1e-13, 64);
  check_closed_form_against_quadrature(ntk::Cos{}, 1e-13, 64);
  check_closed_form_against_quadrature(ntk::Identity{}, 1e-13, 8);
  check_closed_form_against_quadrature(ntk::Hermite({0.3, -0.2, 0.5, 0.1, 0.05}), 1e-12, 16);
  check_closed_form_against_quadrature(ntk::OptimalActivation(4), 1e-12, 16);
  check_closed_form_against_quadrature(ntk::OptimalActivation(2.5), 1e-12, 16);
}

TEST_CASE("Kinked closed forms: docs/mathematics.md T7 values and quadrature within its algebraic error", "[dual]") {
  const auto leaky = ntk::dual(ntk::LeakyRelu{0.1}, 2.0, 0.3, 0.5);
  CHECK(ntk_test::relative_error(leaky.t, 0.22551143495337249) <= 1e-13);
  CHECK(ntk_test::relative_error(leaky.t_dot, 0.34177960702837471) <= 1e-13);
  const auto erf08 = ntk::dual(ntk::Erf{0.8}, 2.0, 0.3, 0.5);
  CHECK(ntk_test::relative_error(erf08.t, 0.10160374143310586) <= 1e-13);
  CHECK(ntk_test::relative_error(erf08.t_dot, 0.34158432774220137) <= 1e-13);
  // Abs: E|u||v| at unit variances is (2/π)(sqrt(1-ρ²) + ρ asin ρ); E[sign u sign v] = (2/π) asin ρ.
  const double rho = 0.5, pi = 3.141592653589793;
  const auto abs = ntk::dual(ntk::Abs{}, 1.0, rho, 1.0);
  CHECK(ntk_test::relative_error(abs.t, 2 / pi * (std::sqrt(1 - rho * rho) + rho * std::asin(rho))) <= 1e-14);
  CHECK(ntk_test::relative_error(abs.t_dot, 2 / pi * std::asin(rho)) <= 1e-14);
  // Quadrature converges only algebraically for kinks (docs/mathematics.md T6): measured, loosely bounded.
  ntk::DualOptions forced;
  forced.quadrature_order = 256;
  const auto quad = ntk::dual(ntk::Quadrature<ntk::Relu>{}, 1.0, 0.5, 1.0, forced);
  CHECK(ntk_test::relative_error(quad.t, relu_ref.t[0]) <= 2e-3);
  CHECK(ntk_test::relative_error(quad.t_dot, relu_ref.t_dot[0]) <= 2e-2);
}

TEST_CASE("Hermite and phi_opt duals: Mehler series at unit variance, docs/mathematics.md psi(0.3)", "[dual]") {
  const ntk::Hermite h({0.2, 0.5, -0.4, 0.3});
  const double rho = -0.35;
  const double expected = 0.04 + 0.25 * rho + 0.16 * rho * rho + 0.09 * rho * rho * rho;
  CHECK(ntk::dual(h, 1.0, rho, 1.0).t == Approx(expected).epsilon(1e-14));
  // psi'(rho) = sum (k+1) a_{k+1}^2 rho^k
  CHECK(ntk::dual(h, 1.0, rho, 1.0).t_dot == Approx(0.25 + 2 * 0.16 * rho + 3 * 0.09 * rho * rho).epsilon(1e-14));
  const std::array<std::pair<double, double>, 3> psi03 = {{{2, 0.1635}, {4, 0.12675}, {8, 0.0991875}}};
  for (const auto& [d, value] : psi03) {
    const ntk::OptimalActivation opt(d);
    CHECK(ntk::dual(opt, 1.0, 0.3, 1.0).t == Approx(value).epsilon(1e-14));
    CHECK(ntk::dual(opt, 1.0, 1.0, 1.0).t == Approx(1.0).epsilon(1e-14));      // E[phi^2] = 1
    CHECK(ntk::dual(opt, 1.0, 1.0, 1.0).t_dot == Approx(2.0).epsilon(1e-14));  // B = 2
  }
  REQUIRE_THROWS_AS(ntk::OptimalActivation(1.5), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::Hermite(std::vector<double>{}), std::invalid_argument);
}

TEST_CASE("Derivatives are exact: central differences agree", "[activations]") {
  auto check = [](const auto& phi) {
    for (double z : {-2.3, -0.7, 0.31, 1.9}) {
      const double h = 1e-6;
      const double numeric = (phi.value(z + h) - phi.value(z - h)) / (2 * h);
      INFO(phi.name() << " at " << z);
      CHECK(std::fabs(numeric - phi.derivative(z)) <= 1e-8 * std::max(1.0, std::fabs(numeric)));
    }
  };
  check(ntk::Relu{});
  check(ntk::LeakyRelu{0.2});
  check(ntk::Abs{});
  check(ntk::Erf{});
  check(ntk::Tanh{});
  check(ntk::Sigmoid{});
  check(ntk::Gelu{});
  check(ntk::Identity{});
  check(ntk::Sin{});
  check(ntk::Cos{});
  check(ntk::Softplus{});
  check(ntk::Hermite({0.1, 0.2, 0.3, 0.4}));
  check(ntk::OptimalActivation(8));
  CHECK(ntk::Sigmoid{}.value(0.7) == Approx(1 / (1 + std::exp(-0.7)) - 0.5).epsilon(1e-15));
  CHECK(ntk::Softplus{}.value(800.0) == Approx(800.0));
  CHECK(ntk::Softplus{}.value(-800.0) >= 0);
}

TEST_CASE("A user-defined activation works through quadrature (docs/mathematics.md T7 sine)", "[dual]") {
  static_assert(!ntk::has_closed_form_dual_v<ShiftedSine, double>, "no closed form declared");
  const auto d = ntk::dual(ShiftedSine{}, 2.0, 0.3, 0.5);
  CHECK(ntk_test::relative_error(d.t, 0.16879671538357267) <= 1e-12);
  CHECK(ntk_test::relative_error(d.t_dot, 0.47823423775105092) <= 1e-12);
}

TEST_CASE("Price's theorem: dT/dc equals T_dot for tanh", "[dual]") {
  const double h = 1e-5;
  const auto up = ntk::dual(ntk::Tanh{}, 2.0, 0.3 + h, 0.5);
  const auto down = ntk::dual(ntk::Tanh{}, 2.0, 0.3 - h, 0.5);
  CHECK(std::fabs((up.t - down.t) / (2 * h) - 0.3539544919709578) <= 1e-9);
}

TEST_CASE("Duals: degenerate covariances, clamping, float and long double", "[dual]") {
  // Perfect correlation equals the diagonal value; beyond it by round-off is clamped.
  const auto diag = ntk::dual(ntk::Tanh{}, 1.0, 1.0, 1.0);
  CHECK(diag.t == Approx(0.394294490397841).epsilon(1e-12));
  CHECK(diag.t_dot == Approx(0.464402902448268).epsilon(1e-12));
  const auto over = ntk::dual(ntk::Relu{}, 1.0, 1.0 + 1e-13, 1.0);
  CHECK(over.t == Approx(0.5).epsilon(1e-15));
  // Zero variances.
  CHECK(ntk::dual(ntk::Relu{}, 0.0, 0.0, 2.0).t == 0);
  CHECK(ntk::dual(ntk::Cos{}, 0.0, 0.0, 2.0).t == Approx(std::exp(-1.0)).epsilon(1e-14));
  CHECK(ntk::dual(ntk::Softplus{}, 0.0, 0.0, 0.0).t == Approx(std::log(2.0) * std::log(2.0)));
  // Other scalar types.
  const auto f = ntk::dual(ntk::Erf{}, 1.0f, 0.5f, 1.0f);
  CHECK(f.t == Approx(0.2163468959387855).epsilon(1e-6));
  const auto ld = ntk::dual(ntk::Erf{}, 1.0L, 0.5L, 1.0L);
  CHECK(std::fabs(static_cast<double>(ld.t) - 0.2163468959387855) <= 1e-16);
  const auto ft = ntk::dual(ntk::Tanh{}, 1.0f, 0.5f, 1.0f);
  CHECK(ft.t == Approx(0.1863244132034481).epsilon(1e-5));
  // Bad input.
  REQUIRE_THROWS_AS(ntk::dual(ntk::Relu{}, -1.0, 0.0, 1.0), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::dual(ntk::Relu{}, 1.0, 2.0, 1.0), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::dual(ntk::Relu{}, 1.0, std::numeric_limits<double>::infinity(), 1.0), std::domain_error);
  ntk::DualOptions bad;
  bad.quadrature_order = -1;
  REQUIRE_THROWS_AS(ntk::dual(ntk::Tanh{}, 1.0, 0.0, 1.0, bad), std::invalid_argument);
}

TEST_CASE("Dual table: interpolated tanh dual in the correlation matches quadrature to 1e-12", "[dual]") {
  const ntk::DualOptions options;
  const double q = 1.3;
  const ntk::detail::DualTable<double> table(
      [&](double rho) { return ntk::dual(ntk::Tanh{}, q, rho * q, q, options); });
  for (double rho = -1.0; rho <= 1.0; rho += 0.0123) {
    const auto exact = ntk::dual(ntk::Tanh{}, q, rho * q, q, options);
    const auto interpolated = table(rho);
    INFO("rho " << rho);
    CHECK(std::fabs(exact.t - interpolated.t) <= 1e-12);
    CHECK(std::fabs(exact.t_dot - interpolated.t_dot) <= 1e-12);
  }
}

namespace {
template <class S>
double worst_acos_ulps() {
  // A dense grid plus the branch points ±1/2, ±1/√2 and the ends, in the type's own precision.
  std::vector<S> xs;
  for (int k = -4000; k <= 4000; ++k) xs.push_back(static_cast<S>(k) / 4000);
  for (S centre : {S(-1), S(-0.70710678118654752440L), S(-0.5), S(0.5), S(0.70710678118654752440L), S(1)})
    for (int k = -20; k <= 20; ++k) {
      const S x = centre + static_cast<S>(k) * std::numeric_limits<S>::epsilon();
      if (std::fabs(x) <= 1) xs.push_back(x);
    }
  double worst = 0;
  for (S x : xs) {
    S theta, sine;
    ntk::detail::acos_and_sine(x, theta, sine);
    const long double exact = std::acos(static_cast<long double>(x));
    const long double exact_sine = std::sqrt((1 - static_cast<long double>(x)) * (1 + static_cast<long double>(x)));
    const long double ulp = std::numeric_limits<S>::epsilon();
    worst = std::max(worst, static_cast<double>(std::fabs(theta - exact) / (ulp * std::max(exact, 1e-300L))));
    if (exact_sine > 0) worst = std::max(worst, static_cast<double>(std::fabs(sine - exact_sine) / (ulp * exact_sine)));
  }
  return worst;
}
}  // namespace

TEST_CASE("acos_and_sine is within a few ulp of acos and sqrt(1 - x^2) in float, double, long double", "[dual]") {
  CHECK(worst_acos_ulps<float>() <= 4);
  CHECK(worst_acos_ulps<double>() <= 4);
  CHECK(worst_acos_ulps<long double>() <= 4);
}

TEST_CASE("Homogeneous activations: unit_dual times sqrt(q1 q2) equals dual", "[dual]") {
  // unit_dual(ρ) sqrt(q1 q2) against dual(q1, ρ sqrt(q1 q2), q2) over random variances and ρ.
  const auto check = [](const auto& phi) {
    std::uint64_t state = 7;
    const auto uniform = [&state] {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      return static_cast<double>(state >> 11) * 0x1.0p-53;
    };
    for (int trial = 0; trial < 500; ++trial) {
      const double q1 = std::pow(10.0, 6 * uniform() - 3), q2 = std::pow(10.0, 6 * uniform() - 3);
      const double rho = trial == 0 ? 1.0 : (trial == 1 ? -1.0 : 2 * uniform() - 1);
      const double root = std::sqrt(q1 * q2);
      const auto expected = ntk::dual(phi, q1, rho * root, q2);
      const auto unit = phi.unit_dual(rho);
      INFO(phi.name() << " rho " << rho << " t " << unit.t * root << " vs " << expected.t << " t_dot " << unit.t_dot
                      << " vs " << expected.t_dot);
      // Absolute on the scale sqrt(q1 q2): near ρ = -1 the ReLU dual is a cancellation, and the two
      // paths see ρ one rounding apart.
      CHECK(std::fabs(unit.t * root - expected.t) <= 1e-14 * root);
      CHECK(std::fabs(unit.t_dot - expected.t_dot) <= 1e-14);
    }
  };
  check(ntk::Relu{});
  check(ntk::LeakyRelu{0.2});
  check(ntk::Abs{});
  check(ntk::Identity{});
  static_assert(ntk::has_unit_dual_v<ntk::Relu, double> && !ntk::has_unit_dual_v<ntk::Erf, double>);
}

// ---- The stax activation zoo (issue 16) ----

TEST_CASE("Stax activations: smooth closed forms agree with forced quadrature to 1e-10", "[dual]") {
  check_closed_form_against_quadrature(ntk::Exp(0.7, 0.6), 1e-12, 128);
  check_closed_form_against_quadrature(ntk::Exp(1.3, -0.4), 1e-12, 128);
  check_closed_form_against_quadrature(ntk::Gaussian(1.2, -0.5), 1e-10, 256);
  check_closed_form_against_quadrature(ntk::Gaussian(0.8, -2.0), 1e-10, 512);
  check_closed_form_against_quadrature(ntk::Rbf(0.5), 1e-12, 128);
  check_closed_form_against_quadrature(ntk::Rbf(2.0), 1e-10, 256);
  // Polynomials are integrated exactly by Gauss–Hermite rules of order > degree.
  check_closed_form_against_quadrature(ntk::Monomial(0), 1e-13, 8);
  check_closed_form_against_quadrature(ntk::Monomial(1), 1e-13, 8);
  check_closed_form_against_quadrature(ntk::Monomial(2), 1e-13, 8);
  check_closed_form_against_quadrature(ntk::Monomial(5), 1e-12, 16);
  check_closed_form_against_quadrature(ntk::Monomial(8), 1e-11, 16);
  check_closed_form_against_quadrature(ntk::Polynomial({0.3, -1.0, 0.5, 0.25}), 1e-12, 8);
  check_closed_form_against_quadrature(ntk::Polynomial({-0.2, 0.0, 1.5, 0.0, -0.1, 0.05}), 1e-12, 16);
}

TEST_CASE("Stax activations: kinked closed forms against quadrature (measured algebraic error)", "[dual]") {
  ntk::DualOptions forced;  // with the activation wrapped in ntk::Quadrature
  forced.quadrature_order = 512;
  const std::vector<Cov> cases = {{1, 0.5, 1}, {2, 0.3, 0.5}, {1, -0.7, 1}, {0.25, 0.1, 3}};
  // Measured at order 512: ReLU-like kinks give about 1e-4 on T and 1e-2 on T_dot (docs/mathematics.md T6);
  // smoother kinks (z₊², z₊³) converge faster; jumps (sign, step) slowest.
  const auto close = [&](const auto& phi, double tol_t, double tol_dot) {
    for (const auto& cv : cases) {
      const auto exact = ntk::dual(phi, cv.q1, cv.c, cv.q2);
      const auto quad = ntk::dual(ntk::Quadrature{phi}, cv.q1, cv.c, cv.q2, forced);
      INFO(phi.name() << " at (" << cv.q1 << ", " << cv.c << ", " << cv.q2 << ") exact " << exact.t << ", "
                      << exact.t_dot << " quadrature " << quad.t << ", " << quad.t_dot);
      CHECK(std::fabs(exact.t - quad.t) <= tol_t * std::max(1.0, std::fabs(exact.t)));
      CHECK(std::fabs(exact.t_dot - quad.t_dot) <= tol_dot * std::max(1.0, std::fabs(exact.t_dot)));
    }
  };
  close(ntk::ABRelu(-0.3, 1.7), 1e-3, 6e-2);    // measured up to 5e-4 and 3.3e-2
  close(ntk::ABRelu(0.5, -2.0), 1.5e-3, 1e-1);  // measured up to 7.8e-4 and 5.1e-2
  close(ntk::RectifiedMonomial(1), 2e-4, 3e-2);
  close(ntk::RectifiedMonomial(2), 1e-5, 1e-3);  // T_dot is 4 x ReLU's T: measured 5e-4
  close(ntk::RectifiedMonomial(3), 1e-6, 1e-5);
  close(ntk::RectifiedMonomial(0), 3e-2, 1e-15);
  close(ntk::Sign{}, 6e-2, 1e-15);  // a jump: measured 3.3e-2
}

TEST_CASE("Stax activations: exact reference values and diagonal identities", "[dual]") {
  const double pi = 3.141592653589793;
  // ABRelu(a, b) is LeakyRelu when b = 1, and a·b-scaled ReLU pieces otherwise.
  const auto ab = ntk::dual(ntk::ABRelu(0.1, 1.0), 2.0, 0.3, 0.5);
  CHECK(ntk_test::relative_error(ab.t, 0.22551143495337249) <= 1e-13);
  CHECK(ntk_test::relative_error(ab.t_dot, 0.34177960702837471) <= 1e-13);
  // RectifiedMonomial(1) is ReLU; on the diagonal T = (2n − 1)!! q^n / 2.
  for (std::size_t i = 0; i < covariances.size(); ++i) {
    const auto& cv = covariances[i];
    const auto a = ntk::dual(ntk::RectifiedMonomial(1), cv.q1, cv.c, cv.q2);
    CHECK(ntk_test::relative_error(a.t, relu_ref.t[i]) <= 1e-12);
    CHECK(ntk_test::relative_error(a.t_dot, relu_ref.t_dot[i]) <= 1e-12);
  }
  double double_factorial = 1;
  for (int n = 1; n <= 8; ++n) {
    double_factorial *= 2 * n - 1;
    const double q = 1.7;
    const auto d = ntk::dual(ntk::RectifiedMonomial(n), q, q, q);
    INFO("n = " << n);
    CHECK(ntk_test::relative_error(d.t, double_factorial * std::pow(q, n) / 2) <= 1e-13);
    // Ṫ = n² E[z₊^{2n−2}] = n² (2n − 3)!! q^{n−1} / 2.
    CHECK(ntk_test::relative_error(d.t_dot, n * n * (double_factorial / (2 * n - 1)) * std::pow(q, n - 1) / 2) <=
          1e-13);
    // Antipodal: X₊ Y₊ = 0 when Y = −X.
    CHECK(std::fabs(ntk::dual(ntk::RectifiedMonomial(n), q, -q, q).t) <= 1e-14);
  }
  // Degree 2 (Cho & Saul): J_2(θ) = 3 sin θ cos θ + (π − θ)(1 + 2 cos² θ), T = q1 q2 J_2 / (2π).
  {
    const double rho = 0.37, theta = std::acos(rho);
    const double j2 = 3 * std::sin(theta) * rho + (pi - theta) * (1 + 2 * rho * rho);
    const auto d = ntk::dual(ntk::RectifiedMonomial(2), 2.0, rho * std::sqrt(2.0 * 0.5), 0.5);
    CHECK(ntk_test::relative_error(d.t, 2.0 * 0.5 * j2 / (2 * pi)) <= 1e-13);
  }
  // Sign: (2/π) asin ρ.
  CHECK(ntk_test::relative_error(ntk::dual(ntk::Sign{}, 4.0, 1.0, 1.0).t, 2 / pi * std::asin(0.5)) <= 1e-14);
  // Monomial z²: E[u² v²] = q1 q2 + 2c²; z³: 9 q1 q2 c + 6 c³.
  const auto m2 = ntk::dual(ntk::Monomial(2), 2.0, 0.3, 0.5);
  CHECK(ntk_test::relative_error(m2.t, 1.0 + 2 * 0.09) <= 1e-14);
  CHECK(ntk_test::relative_error(m2.t_dot, 4 * 0.3) <= 1e-14);
  const auto m3 = ntk::dual(ntk::Monomial(3), 2.0, 0.3, 0.5);
  CHECK(ntk_test::relative_error(m3.t, 9 * 1.0 * 0.3 + 6 * 0.027) <= 1e-14);
  // Rbf is the RBF kernel; Exp at zero variance is a².
  CHECK(ntk_test::relative_error(ntk::dual(ntk::Rbf(0.5), 1.0, 0.2, 2.0).t, std::exp(-0.5 * 2.6)) <= 1e-14);
  CHECK(ntk_test::relative_error(ntk::dual(ntk::Exp(2.0, 1.0), 0.0, 0.0, 0.0).t, 4.0) <= 1e-15);
  // Gaussian at zero variance is a²; at variance q its diagonal is a² / sqrt(1 − 4bq).
  CHECK(ntk_test::relative_error(ntk::dual(ntk::Gaussian(1.5, -1.0), 0.0, 0.0, 0.0).t, 2.25) <= 1e-15);
  CHECK(ntk_test::relative_error(ntk::dual(ntk::Gaussian(1.5, -1.0), 0.5, 0.5, 0.5).t, 2.25 / std::sqrt(3.0)) <= 1e-14);
}

namespace {
/// True when f() throws E whose message contains `text`.
template <class E, class F>
bool zoo_throws(F&& f, const std::string& text) {
  try {
    f();
  } catch (const E& e) {
    return std::string(e.what()).find(text) != std::string::npos;
  } catch (...) {
    return false;
  }
  return false;
}
}  // namespace

TEST_CASE("Stax activations: parameters are validated at construction", "[activations]") {
  const double inf = std::numeric_limits<double>::infinity();
  CHECK(
      zoo_throws<std::invalid_argument>([&] { (void)ntk::ABRelu(inf, 1); }, "ntk::ABRelu: a must be finite (got inf)"));
  CHECK(zoo_throws<std::invalid_argument>([] { (void)ntk::ABRelu(0, std::nan("")); }, "b must be finite"));
  CHECK(zoo_throws<std::invalid_argument>([&] { (void)ntk::Exp(1, inf); }, "ntk::Exp: b must be finite (got inf)"));
  CHECK(zoo_throws<std::invalid_argument>([] { (void)ntk::Gaussian(1, 0.5); },
                                          "ntk::Gaussian: b must be finite and <= 0 (got 0.5)"));
  CHECK(zoo_throws<std::invalid_argument>([] { (void)ntk::Rbf(0); },
                                          "ntk::Rbf: gamma must be positive and finite (got 0)"));
  CHECK(zoo_throws<std::invalid_argument>([] { (void)ntk::Monomial(-1); },
                                          "ntk::Monomial: degree must be in [0, 32] (got -1)"));
  CHECK(zoo_throws<std::invalid_argument>([] { (void)ntk::RectifiedMonomial(17); },
                                          "ntk::RectifiedMonomial: degree must be in [0, 16] (got 17)"));
  CHECK(zoo_throws<std::invalid_argument>([] { (void)ntk::Polynomial(std::vector<double>{}); },
                                          "ntk::Polynomial: coefficients must number 1 to 33 (got 0)"));
  CHECK(zoo_throws<std::invalid_argument>([&] { (void)ntk::Polynomial({1.0, inf}); }, "coefficient 1 must be finite"));
}
