#include <ntk/activation_names.hpp>
#include <ntk/kernel.hpp>

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>

#include "catch_shim.hpp"
#include "test_config.hpp"

namespace {

using Matrix = Eigen::MatrixXd;

Matrix pair_rows(std::array<double, 3> a, std::array<double, 3> b) {
  Matrix x(2, 3);
  x << a[0], a[1], a[2], b[0], b[1], b[2];
  return x;
}

Matrix random_inputs(Eigen::Index n, Eigen::Index d, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(-1.5, 1.5);  // the values only need to be arbitrary
  Matrix x(n, d);
  for (Eigen::Index i = 0; i < n; ++i)
    for (Eigen::Index j = 0; j < d; ++j) x(i, j) = u(gen);
  return x;
}

struct T5Row {
  int pair;
  double sigma2, theta2, sigma3, theta3;
};

template <class Phi>
void check_t5(const Phi& phi, double sw2, double sb2, const std::array<T5Row, 4>& rows, double tol) {
  const std::array<Matrix, 4> pairs = {pair_rows({1, 0, 0}, {0, 1, 0}), pair_rows({1, -2, 0.5}, {0.3, 0.4, -1.2}),
                                       pair_rows({1, -2, 0.5}, {1, -2, 0.5}),
                                       pair_rows({0.6, 0.8, 0}, {0.6, 0.8, 0.001})};
  const auto net = ntk::mlp(phi, 2, 0, std::sqrt(sw2), std::sqrt(sb2));
  for (const auto& row : rows) {
    const Matrix& x = pairs[static_cast<std::size_t>(row.pair - 1)];
    const auto layers = ntk::kernel_layers(net, x.topRows(1), x.bottomRows(1));
    REQUIRE(layers.size() == 3);
    INFO(phi.name() << " (" << sw2 << ", " << sb2 << ") P" << row.pair);
    CHECK(ntk_test::relative_error(layers[1].nngp(0, 0), row.sigma2) <= tol);
    CHECK(ntk_test::relative_error(layers[1].ntk(0, 0), row.theta2) <= tol);
    CHECK(ntk_test::relative_error(layers[2].nngp(0, 0), row.sigma3) <= tol);
    CHECK(ntk_test::relative_error(layers[2].ntk(0, 0), row.theta3) <= tol);
    // The Gram path gives the same numbers.
    const auto k = ntk::kernel(net, x.topRows(1), x.bottomRows(1));
    CHECK(ntk_test::relative_error(k.ntk(0, 0), row.theta3) <= tol);
    CHECK(ntk_test::relative_error(k.nngp(0, 0), row.sigma3) <= tol);
  }
}

double min_eigenvalue(const Matrix& m) {
  return Eigen::SelfAdjointEigenSolver<Matrix>(m, Eigen::EigenvaluesOnly).eigenvalues().minCoeff();
}

}  // namespace

TEST_CASE("Kernel recursion matches docs/mathematics.md T5 (depth 2): closed forms to 1e-12", "[kernel]") {
  check_t5(ntk::Relu{}, 1, 1,
           {{{1, 1.525334738367956, 1.910308010286648, 1.768869528399335, 2.597912775429742},
             {2, 1.503849651906118, 1.693471837320015, 1.795577676685438, 2.439925980209534},
             {3, 2.375, 3.75, 2.1875, 4.0625},
             {4, 1.666666666675509, 2.333227230055623, 1.83333333334055, 2.999829525114118}}},
           1e-12);
  check_t5(ntk::Relu{}, 2, 0.1,
           {{{1, 0.396116471780756, 0.4502802036996042, 0.6032778576031545, 0.8964537813906558},
             {2, 0.482853924207693, 0.2279043564096644, 1.063474303939961, 1.193364569501954},
             {3, 3.7, 7.3, 3.8, 11.1},
             {4, 0.8666666667326279, 1.633105767249067, 0.9666666667946486, 2.599316554947966}}},
           1e-12);
  check_t5(ntk::Erf{}, 1, 1,
           {{{1, 1.367285901676156, 1.78159255770448, 1.473788781327436, 2.237671572489898},
             {2, 1.157294624150415, 1.317870200969364, 1.372740013471754, 1.853423209874017},
             {3, 1.642175249955866, 2.652944891562485, 1.556098523097977, 2.783898647025521},
             {4, 1.518424847261085, 2.193003507197846, 1.542093830549715, 2.591941052192058}}},
           1e-12);
  check_t5(ntk::Erf{}, 2, 0.1,
           {{{1, 0.2006236225290788, 0.3014572573566561, 0.2795090188091007, 0.5510409259006474},
             {2, -0.2060098437881744, -0.5180511101025725, -0.04800149727512407, -0.4218649075129454},
             {3, 1.464619496868244, 3.800670145673992, 1.171152740349259, 4.866765170969397},
             {4, 0.9277282095846141, 1.895843829537129, 1.000577869963074, 3.224860229841397}}},
           1e-12);
  check_t5(ntk::Gelu{}, 1, 1,
           {{{1, 1.443917883127697, 1.846104461218756, 1.648812781212731, 2.479407899172409},
             {2, 1.397296208654202, 1.592464268940656, 1.655277164561199, 2.286326673989423},
             {3, 2.29958387771348, 3.671797661803993, 2.072704079590537, 3.886944158216492},
             {4, 1.589059946713027, 2.218418490102902, 1.716268359383105, 2.781914916422}}},
           1e-12);
  check_t5(ntk::Gelu{}, 2, 0.1,
           {{{1, 0.2581142326149372, 0.3125400125401348, 0.3416624704579399, 0.5354692395822005},
             {2, 0.257990602349711, 0.01274404970568499, 0.6569079057549613, 0.6638737391670683},
             {3, 3.556355729354235, 7.188396324115805, 3.512338817641396, 10.76179500504209},
             {4, 0.7259522193204607, 1.39830503090488, 0.6874320931922817, 1.903083859600701}}},
           1e-12);
}

TEST_CASE("Kernel recursion matches docs/mathematics.md T5 for tanh (quadrature) to 1e-10", "[kernel]") {
  check_t5(ntk::Tanh{}, 1, 1,
           {{{1, 1.320301321768247, 1.673530753079059, 1.412953407662475, 2.035235318267619},
             {2, 1.142337599450625, 1.287193351503835, 1.335624528325843, 1.756548907044199},
             {3, 1.574966724358952, 2.410138347947499, 1.477140229833678, 2.409689641169772},
             {4, 1.446819948113555, 1.999417763549204, 1.461720241771455, 2.263108829570129}}},
           1e-10);
  check_t5(ntk::Tanh{}, 2, 0.1,
           {{{1, 0.1854769104029137, 0.2710969115240852, 0.2559401899631479, 0.4851389082367991},
             {2, -0.1766861942492648, -0.4580110182904982, -0.01979495641187536, -0.3313202478277302},
             {3, 1.337718857443334, 3.272406874700584, 0.9948394728071066, 3.703706368120677},
             {4, 0.7930526338129264, 1.579143600707485, 0.8050681654843421, 2.404537119183422}}},
           1e-10);
}

TEST_CASE("Jacot et al. Fig. 1 limiting curve (docs/mathematics.md T4) to 1e-12", "[kernel]") {
  const double pi = 3.141592653589793;
  const std::array<std::array<double, 3>, 6> curve = {{{0, 0.2825, 0.08125},
                                                       {pi / 4, 0.1699705091186006, 0.06986725081949803},
                                                       {pi / 2, 0.09270211017402397, 0.055760277602853},
                                                       {pi, 0.06435377014546498, 0.04809658979546157},
                                                       {pi / 8, 0.2270835229663922, 0.07750976175462447},
                                                       {3 * pi / 4, 0.06603642903073154, 0.04923931912212187}}};
  const auto net = ntk::mlp(ntk::Relu{}, 3, 0, 1.0, 0.1);
  Matrix x0(1, 2), x(curve.size(), 2);
  x0 << 1, 0;
  for (std::size_t i = 0; i < curve.size(); ++i)
    x.row(static_cast<Eigen::Index>(i)) << std::cos(curve[i][0]), std::sin(curve[i][0]);
  const auto k = ntk::kernel(net, x0, x);
  for (std::size_t i = 0; i < curve.size(); ++i) {
    INFO("gamma " << curve[i][0]);
    CHECK(ntk_test::relative_error(k.ntk(0, static_cast<Eigen::Index>(i)), curve[i][1]) <= 1e-12);
    CHECK(ntk_test::relative_error(k.nngp(0, static_cast<Eigen::Index>(i)), curve[i][2]) <= 1e-12);
  }
}

TEST_CASE("Kernels: closed form and forced quadrature agree to 1e-10 for smooth activations", "[kernel]") {
  const Matrix x = random_inputs(6, 4, 7);
  auto check = [&](const auto& phi) {
    const auto net = ntk::mlp(phi, 3, 0, 1.2, 0.3);
    const auto exact = ntk::kernel(net, x);
    const auto quad = ntk::kernel(ntk::mlp(ntk::Quadrature{phi}, 3, 0, 1.2, 0.3), x);  // forced
    INFO(phi.name());
    CHECK((exact.ntk - quad.ntk).cwiseAbs().maxCoeff() <= 1e-10 * exact.ntk.cwiseAbs().maxCoeff());
    CHECK((exact.nngp - quad.nngp).cwiseAbs().maxCoeff() <= 1e-10 * exact.nngp.cwiseAbs().maxCoeff());
  };
  check(ntk::Erf{});
  check(ntk::Sin{});
  check(ntk::Gelu{});
  check(ntk::Identity{});
  check(ntk::OptimalActivation(4));
}

namespace {
// An activation whose value and derivative do not compile: a kernel built from it compiles only
// if closed-form kernels never instantiate the quadrature path (the build of this file is the test).
struct ClosedFormOnly {
  std::string name() const { return "closed_form_only"; }
  template <class S>
  S value(S z) const {
    static_assert(sizeof(S) == 0, "a closed-form kernel compiled the quadrature path");
    return z;
  }
  template <class S>
  S derivative(S z) const {
    static_assert(sizeof(S) == 0, "a closed-form kernel compiled the quadrature path");
    return z;
  }
  template <class S>
  ntk::Dual<S> dual(S, S s12, S) const {
    return {s12, S(1)};  // the identity's dual
  }
};
}  // namespace

TEST_CASE("Kernels: a closed-form activation never compiles the quadrature path", "[kernel]") {
  const Matrix x = random_inputs(3, 2, 5), x2 = random_inputs(4, 2, 6);
  const auto only = ntk::mlp(ClosedFormOnly{}, 2, 0, 1.1, 0.2);
  const auto identity = ntk::mlp(ntk::Identity{}, 2, 0, 1.1, 0.2);
  const Matrix reference = ntk::ntk_kernel(identity, x, x2);
  CHECK((ntk::ntk_kernel(only, x, x2) - reference).cwiseAbs().maxCoeff() <= 1e-14 * reference.cwiseAbs().maxCoeff());
  CHECK((ntk::kernel_diagonal(only, x).ntk - ntk::kernel_diagonal(identity, x).ntk).cwiseAbs().maxCoeff() <= 1e-14);
  CHECK(ntk::kernel_layers(only, x, x2).size() == 3);
  CHECK(ntk::dual(ClosedFormOnly{}, 1.0, 0.5, 2.0).t == 0.5);
}

TEST_CASE("Kernels: with_activation(name, quadrature, f) wraps closed forms in Quadrature<Phi>", "[kernel]") {
  const Matrix x = random_inputs(3, 2, 5), x2 = random_inputs(4, 2, 6);
  const auto net = ntk::mlp(ntk::Erf{}, 2, 0, 1.1, 0.2);
  const auto wrapped = ntk::mlp(ntk::Quadrature<ntk::Erf>{}, 2, 0, 1.1, 0.2);
  const auto by_name = [&](const std::string& name, bool quadrature) {
    return ntk::with_activation(name, quadrature,
                                [&](const auto& phi) { return ntk::ntk_kernel(ntk::mlp(phi, 2, 0, 1.1, 0.2), x, x2); });
  };
  CHECK((by_name("erf", true) - ntk::ntk_kernel(wrapped, x, x2)).cwiseAbs().maxCoeff() == 0);
  CHECK((by_name("erf", false) - ntk::ntk_kernel(net, x, x2)).cwiseAbs().maxCoeff() == 0);
  // tanh has no closed form: it is passed on as it is.
  CHECK(ntk::with_activation("tanh", true,
                             [](const auto& phi) { return std::is_same_v<std::decay_t<decltype(phi)>, ntk::Tanh>; }));
  CHECK(ntk::with_activation("gelu", true, [](const auto& phi) {
    return std::is_same_v<std::decay_t<decltype(phi)>, ntk::Quadrature<ntk::Gelu>>;
  }));
  // The closed form differs from quadrature by the quadrature error only.
  const Matrix exact = ntk::ntk_kernel(net, x, x2), quad = ntk::ntk_kernel(wrapped, x, x2);
  CHECK((exact - quad).cwiseAbs().maxCoeff() <= 1e-10 * exact.cwiseAbs().maxCoeff());
  const ntk::Quadrature<ntk::Gelu> gelu{};
  static_assert(!ntk::has_closed_form_dual_v<ntk::Quadrature<ntk::Gelu>, double>);
  CHECK(gelu.name() == "gelu");
  CHECK(gelu.value(0.7) == ntk::Gelu{}.value(0.7));
  CHECK(gelu.derivative(-0.3) == ntk::Gelu{}.derivative(-0.3));
}

// At sigma_w = sqrt(2) (the ReLU edge of chaos) correlations approach 1 only polynomially in depth;
// with sigma_w = 1 and a bias they reach 1 - 1e-30 by depth 100, below double resolution, where the
// arc-cosine kernel's sqrt(1 - rho) sensitivity turns round-off into 1e-9 errors (documented).
TEST_CASE("Gram matrices are symmetric and PSD at depths 1 3 10 100", "[kernel]") {
  const Matrix x = random_inputs(ntk_test::scaled(40, 10), 5, 11);
  for (long depth : {1L, 3L, 10L, 100L}) {
    auto check = [&](const auto& phi) {
      const auto k = ntk::kernel(ntk::mlp(phi, depth, 0, std::sqrt(2.0), 0.1), x);
      for (const Matrix* m : {&k.ntk, &k.nngp}) {
        INFO(phi.name() << " depth " << depth);
        CHECK((*m - m->transpose()).cwiseAbs().maxCoeff() == 0);
        CHECK(min_eigenvalue(*m) >= -1e-12 * m->trace());
      }
    };
    check(ntk::Relu{});
    check(ntk::Erf{});
    if (depth <= 10) check(ntk::Tanh{});
  }
}

TEST_CASE("Generic activations on inputs of a common norm use the tabulated dual to 1e-10", "[kernel]") {
  Matrix x = random_inputs(12, 6, 3);
  x.rowwise().normalize();
  const auto net = ntk::mlp(ntk::Tanh{}, 3, 0, 1.3, 0.2);
  const auto gram = ntk::kernel(net, x);
  // Reference: the recursion by hand with direct 2-D quadrature at every entry.
  for (Eigen::Index i = 0; i < 4; ++i)
    for (Eigen::Index j = 0; j < x.rows(); ++j) {
      double qi = 1.69 * x.row(i).squaredNorm() / 6 + 0.04, qj = 1.69 * x.row(j).squaredNorm() / 6 + 0.04;
      double s = 1.69 * x.row(i).dot(x.row(j)) / 6 + 0.04, k = s;
      for (int l = 0; l < 3; ++l) {
        const auto d = ntk::dual(ntk::Tanh{}, qi, s, qj);
        qi = 1.69 * ntk::dual(ntk::Tanh{}, qi, qi, qi).t + 0.04;
        qj = 1.69 * ntk::dual(ntk::Tanh{}, qj, qj, qj).t + 0.04;
        s = 1.69 * d.t + 0.04;
        k = s + 1.69 * d.t_dot * k;
      }
      CHECK(std::fabs(gram.ntk(i, j) - k) <= 1e-10 * std::fabs(k));
      CHECK(std::fabs(gram.nngp(i, j) - s) <= 1e-10 * std::fabs(s));
    }
}

namespace {
// Θ^L and Σ^L of an MLP for one pair by the recursion by hand, each dual by direct 2-D quadrature.
template <class Phi>
std::pair<double, double> hand_recursion(const Phi& phi, const Matrix& x, Eigen::Index i, Eigen::Index j, int depth,
                                         double sw2, double sb2) {
  const double d = static_cast<double>(x.cols());
  double qi = sw2 * x.row(i).squaredNorm() / d + sb2, qj = sw2 * x.row(j).squaredNorm() / d + sb2;
  double s = sw2 * x.row(i).dot(x.row(j)) / d + sb2, k = s;
  for (int l = 1; l < depth + 1; ++l) {
    const auto dual = ntk::dual(phi, qi, s, qj);
    qi = sw2 * ntk::dual(phi, qi, qi, qi).t + sb2;
    qj = sw2 * ntk::dual(phi, qj, qj, qj).t + sb2;
    s = sw2 * dual.t + sb2;
    k = s + sw2 * dual.t_dot * k;
  }
  return {k, s};
}
}  // namespace

TEST_CASE("Generic activations on inputs of different norms: Hermite series against direct quadrature", "[kernel]") {
  // Norms from 0.2 to 3 (first-layer variances up to 3.4 for tanh): series of hundreds of terms.
  Matrix x = random_inputs(10, 6, 5);
  for (Eigen::Index i = 0; i < x.rows(); ++i) x.row(i) *= (0.2 + 2.8 * static_cast<double>(i) / 9) / x.row(i).norm();
  auto check = [&](const auto& phi, double sw, double sb) {
    const auto gram = ntk::kernel(ntk::mlp(phi, 3, 0, sw, sb), x);
    for (Eigen::Index i = 0; i < x.rows(); ++i)
      for (Eigen::Index j = i; j < x.rows(); ++j) {
        const auto [k, s] = hand_recursion(phi, x, i, j, 3, sw * sw, sb * sb);
        INFO(phi.name() << " (" << i << ", " << j << ")");
        CHECK(std::fabs(gram.ntk(i, j) - k) <= 1e-10 * std::fabs(k));
        CHECK(std::fabs(gram.nngp(i, j) - s) <= 1e-10 * std::fabs(s));
      }
  };
  check(ntk::Tanh{}, 1.5, 0.1);
  check(ntk::Sigmoid{}, 2.0, 0.0);
  check(ntk::Softplus{}, 1.0, 0.2);
}

TEST_CASE("A saturating activation with a few far points keeps the series for the others (issue 18)", "[kernel]") {
  // Ten rows of norms 0.2..2 and two far rows (first-layer variances about 20 and 5000, beyond
  // saturating_threshold): the far rows' entries come from the per-entry rule, the others from the
  // Hermite series, instead of the whole Gram from per-entry quadrature (65 rows took 12 s).
  Matrix x = random_inputs(12, 6, 8);
  for (Eigen::Index i = 0; i < 10; ++i) x.row(i) *= (0.2 + 1.8 * static_cast<double>(i) / 9) / x.row(i).norm();
  x.row(10) *= std::sqrt(6 * 20.0) / x.row(10).norm();
  x.row(11) *= std::sqrt(6 * 5000.0) / x.row(11).norm();
  for (const bool sigmoid : {false, true}) {
    const auto check = [&](const auto& phi) {
      const auto net = ntk::mlp(phi, 3, 0, 1.0, 0.1);
      const ntk::detail::KernelEngine<std::decay_t<decltype(net)>, double> engine(net, x, x, true, {});
      CHECK(engine.uses_series());
      const auto gram = ntk::kernel(net, x);
      for (Eigen::Index i = 0; i < x.rows(); ++i)
        for (Eigen::Index j = i; j < x.rows(); ++j) {
          const auto [k, s] = hand_recursion(phi, x, i, j, 3, 1.0, 0.01);
          INFO(phi.name() << " (" << i << ", " << j << ")");
          CHECK(std::fabs(gram.ntk(i, j) - k) <= 1e-10 * std::fabs(k));
          CHECK(std::fabs(gram.nngp(i, j) - s) <= 1e-10 * std::fabs(s));
        }
    };
    if (sigmoid)
      check(ntk::Sigmoid{});
    else
      check(ntk::Tanh{});
  }
}

TEST_CASE("Hermite series: known coefficients, the truncation bound and non-convergence", "[kernel]") {
  using ntk::detail::hermite_series;
  using Set = ntk::detail::VarianceSet<double>;
  // φ = identity: a_1(q) = sqrt(q), b_0 = 1, every other coefficient 0.
  const std::vector<double> q{0.5, 2.0, 3.0};
  const auto identity = hermite_series(ntk::Identity{}, std::vector<Set>{{q.data(), q.size()}});
  REQUIRE(identity[0].converged);
  for (std::size_t p = 0; p < q.size(); ++p)
    for (int k = 0; k < std::min(identity[0].terms, identity[0].terms_dot); ++k) {
      CHECK(std::fabs(identity[0].a_at(p, k) - (k == 1 ? std::sqrt(q[p]) : 0.0)) <= 1e-14);
      CHECK(std::fabs(identity[0].b_at(p, k) - (k == 0 ? 1.0 : 0.0)) <= 1e-14);
    }
  // A Hermite-series activation at unit variance returns its own coefficients.
  const ntk::Hermite h({0.1, -0.4, 0.3, 0.2});
  const std::vector<double> one{1.0};
  const auto own = hermite_series(h, std::vector<Set>{{one.data(), 1}});
  REQUIRE(own[0].converged);
  for (int k = 0; k < 4; ++k)
    CHECK(std::fabs(own[0].a_at(0, k) - h.coefficients()[static_cast<std::size_t>(k)]) <= 1e-14);
  // A loose tolerance uses fewer terms, and the Mehler sum's error stays inside its bound.
  const std::vector<double> q1{0.3}, q2{1.7};
  int terms_loose = 0;
  for (double tolerance : {1e-6, 1e-13}) {
    const auto series = hermite_series(ntk::Tanh{}, std::vector<Set>{{q1.data(), 1}, {q2.data(), 1}}, tolerance);
    REQUIRE(series[0].converged);
    REQUIRE(series[0].terms == series[1].terms);
    REQUIRE(series[0].terms_dot == series[1].terms_dot);
    const double bound =
        tolerance * std::sqrt(ntk::dual(ntk::Tanh{}, 0.3, 0.3, 0.3).t * ntk::dual(ntk::Tanh{}, 1.7, 1.7, 1.7).t);
    double worst = 0;
    for (double rho : {-1.0, -0.6, 0.0, 0.5, 0.9, 0.999, 1.0}) {
      double t = 0;
      for (int k = series[0].terms - 1; k >= 0; --k) t = t * rho + series[0].a_at(0, k) * series[1].a_at(0, k);
      const double c = rho * std::sqrt(0.3 * 1.7);
      worst = std::max(worst, std::fabs(t - ntk::dual(ntk::Tanh{}, 0.3, c, 1.7).t));
    }
    INFO("tolerance " << tolerance << " terms " << series[0].terms);
    CHECK(worst <= bound + 1e-15);
    if (tolerance > 1e-10)
      terms_loose = series[0].terms;
    else
      CHECK(terms_loose < series[0].terms);
  }
  // Kinked activations: coefficients decay algebraically, so the series reports no convergence
  // and kernels keep direct quadrature (still finite, within quadrature's algebraic error).
  const auto kinked = hermite_series(ntk::Relu{}, std::vector<Set>{{q.data(), q.size()}});
  CHECK_FALSE(kinked[0].converged);
  const Matrix x = random_inputs(4, 3, 9);
  const auto net = ntk::mlp(ntk::Relu{}, 2, 0, 1.4, 0.1);
  const auto forced = ntk::mlp(ntk::Quadrature<ntk::Relu>{}, 2, 0, 1.4, 0.1);
  const Matrix exact = ntk::ntk_kernel(net, x), quad = ntk::ntk_kernel(forced, x);
  CHECK(quad.allFinite());
  CHECK((exact - quad).cwiseAbs().maxCoeff() <= 0.5 * exact.cwiseAbs().maxCoeff());
}

TEST_CASE("Hermite series kernels: two input sets, thread counts, tolerance option", "[kernel]") {
  const Matrix x1 = random_inputs(20, 5, 21), x2 = random_inputs(13, 5, 22) * 1.7;
  Matrix both(33, 5);
  both << x1, x2;
  const auto net = ntk::mlp(ntk::Tanh{}, 4, 0, 1.2, 0.3);
  const auto cross = ntk::kernel(net, x1, x2);
  const auto full = ntk::kernel(net, both);
  // The two-set series and the one-set series differ in their cut, each within 1e-12 per layer.
  CHECK((cross.ntk - full.ntk.topRightCorner(20, 13)).cwiseAbs().maxCoeff() <= 1e-11 * full.ntk.cwiseAbs().maxCoeff());
  ntk::KernelOptions one, two;
  one.threads = 1;
  two.threads = 2;
  CHECK((ntk::ntk_kernel(net, both, one) - ntk::ntk_kernel(net, both, two)).cwiseAbs().maxCoeff() == 0);
  ntk::KernelOptions loose;
  loose.dual.series_tolerance = 1e-6;
  const Matrix rough = ntk::ntk_kernel(net, both, loose);
  const double error = (rough - full.ntk).cwiseAbs().maxCoeff() / full.ntk.cwiseAbs().maxCoeff();
  CHECK(error <= 1e-5);
  CHECK(error > 1e-12);
  ntk::KernelOptions bad;
  bad.dual.series_tolerance = 0;
  REQUIRE_THROWS_AS(ntk::ntk_kernel(net, both, bad), std::invalid_argument);
}

TEST_CASE("kernel_into writes the Gram matrix into caller storage", "[kernel]") {
  const Matrix x1 = random_inputs(37, 4, 31), x2 = random_inputs(21, 4, 32);
  const auto net = ntk::mlp(ntk::Relu{}, 3, 0, 1.3, 0.2);
  const auto full = ntk::kernel(net, x1, x2);
  const auto symmetric = ntk::kernel(net, x1);
  // Into a Matrix and into a Map over a plain buffer (as over a memory-mapped file).
  Matrix ntk_out(37, 21);
  ntk::kernel_into(net, x1, x2, ntk::KernelKind::ntk, ntk_out);
  CHECK((ntk_out - full.ntk).cwiseAbs().maxCoeff() == 0);
  std::vector<double> buffer(37 * 37, -1.0);
  Eigen::Map<Matrix> mapped(buffer.data(), 37, 37);
  ntk::kernel_into(net, x1, ntk::KernelKind::nngp, mapped);
  CHECK((mapped - symmetric.nngp).cwiseAbs().maxCoeff() == 0);
  // Generic activations too (the series path), against kernel().
  const auto tanh_net = ntk::mlp(ntk::Tanh{}, 2, 0, 1.1, 0.3);
  Matrix tanh_out(37, 37);
  ntk::kernel_into(tanh_net, x1, ntk::KernelKind::ntk, tanh_out);
  CHECK((tanh_out - ntk::ntk_kernel(tanh_net, x1)).cwiseAbs().maxCoeff() == 0);
  // Wrong size or two outputs requested: rejected before anything is written.
  Matrix wrong = Matrix::Constant(5, 5, 7.0);
  REQUIRE_THROWS_AS(ntk::kernel_into(net, x1, ntk::KernelKind::ntk, wrong), std::invalid_argument);
  CHECK((wrong.array() == 7.0).all());
  REQUIRE_THROWS_AS(ntk::kernel_into(net, x1, ntk::KernelKind::both, mapped), std::invalid_argument);
  try {
    ntk::kernel_into(net, x1, x2, ntk::KernelKind::ntk, wrong);
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()) == "ntk::kernel_into: out must be 37 x 21 (got 5 x 5)");
  }
}

TEST_CASE("Two-set inner products by 2,048-row pieces equal one product, across the piece edge", "[kernel]") {
  // detail::cross_inner_products works in 2,048-row pieces of x1; sizes on both sides of that edge,
  // into NaN-filled output, so a piece left out shows.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const Eigen::Index n : {1, 2047, 2048, 2049, 4200}) {
    INFO("n = " << n);
    const Matrix x = random_inputs(n, 6, static_cast<unsigned>(40 + n)), few = random_inputs(7, 6, 41);
    const Matrix cross = x * few.transpose();
    Matrix tall = Matrix::Constant(n, 7, nan), wide = Matrix::Constant(7, n, nan);
    ntk::detail::cross_inner_products<Matrix, Matrix, double>(x, few, tall);
    ntk::detail::cross_inner_products<Matrix, Matrix, double>(few, x, wide);
    CHECK(tall.allFinite());
    CHECK((tall - cross).cwiseAbs().maxCoeff() <= 1e-13 * cross.cwiseAbs().maxCoeff());
    CHECK(wide.allFinite());
    CHECK((wide - cross.transpose()).cwiseAbs().maxCoeff() <= 1e-13 * cross.cwiseAbs().maxCoeff());
  }
  // Through the engine: the two-set kernel of 2,100 points against the symmetric Gram matrix of the
  // same points (one triangle by rankUpdate, mirrored).
  const Matrix x = random_inputs(2100, 3, 43);
  const auto net = ntk::mlp(ntk::Relu{}, 3, 0, 1.3, 0.2);
  const Matrix one = ntk::ntk_kernel(net, x), two = ntk::kernel(net, x, Matrix(x)).ntk;
  CHECK((one - two).cwiseAbs().maxCoeff() <= 1e-12 * two.cwiseAbs().maxCoeff());
}

#if defined(_OPENMP)
TEST_CASE("The Gram matrix of one set has the same bits with one and two threads at d = 400", "[kernel]") {
  // Its inner products come from Eigen's single-threaded rankUpdate and every entry's recursion is
  // the same arithmetic on any thread: nothing depends on the team size, also for d beyond Eigen's
  // L1 blocking of the sum over features (about 200 here), where a threaded product would split
  // that sum differently with one thread than with two.
  const Matrix x = random_inputs(600, 400, 44);
  const auto net = ntk::mlp(ntk::Relu{}, 3, 0, 1.3, 0.2);
  const Matrix one = ntk_test::with_threads(1, [&] { return Matrix(ntk::ntk_kernel(net, x)); });
  const Matrix two = ntk_test::with_threads(2, [&] { return Matrix(ntk::ntk_kernel(net, x)); });
  CHECK((one.array() == two.array()).all());
}
#endif

TEST_CASE("Compile-time composition with mixed activations equals the recursion by hand", "[kernel]") {
  const auto net = ntk::serial(ntk::Dense(1.5, 0.2), ntk::activation(ntk::Relu{}), ntk::Dense(0.9, 0.0),
                               ntk::activation(ntk::Erf{}), ntk::Dense(1.1, 0.7));
  Matrix x(2, 3);
  x << 0.3, -1.2, 0.8, 1.1, 0.4, -0.5;
  const auto k = ntk::kernel(net, x.topRows(1), x.bottomRows(1));
  const double a = x.row(0).squaredNorm() / 3, b = x.row(1).squaredNorm() / 3, c = x.row(0).dot(x.row(1)) / 3;
  // layer 1
  double q1 = 2.25 * a + 0.04, q2 = 2.25 * b + 0.04, s = 2.25 * c + 0.04, th = s;
  auto d = ntk::dual(ntk::Relu{}, q1, s, q2);
  const auto d1 = ntk::dual(ntk::Relu{}, q1, q1, q1), d2 = ntk::dual(ntk::Relu{}, q2, q2, q2);
  q1 = 0.81 * d1.t;
  q2 = 0.81 * d2.t;
  s = 0.81 * d.t;
  th = s + 0.81 * d.t_dot * th;
  d = ntk::dual(ntk::Erf{}, q1, s, q2);
  s = 1.21 * d.t + 0.49;
  th = s + 1.21 * d.t_dot * th;
  CHECK(k.ntk(0, 0) == Approx(th).epsilon(1e-14));
  CHECK(k.nngp(0, 0) == Approx(s).epsilon(1e-14));
}

TEST_CASE("Per-layer sigma, blocks, diagonals, kinds and thread counts are consistent", "[kernel]") {
  const Matrix x = random_inputs(ntk_test::scaled(37, 12), 4, 5);
  auto net = ntk::mlp(ntk::Relu{}, 4, 0, 1.0, 0.1);
  net.dense[2].sigma_w = 1.7;
  net.dense[3].sigma_b = 0.0;
  const auto full = ntk::kernel(net, x);
  const auto asym = ntk::kernel(net, x, x);
  CHECK((full.ntk - asym.ntk).cwiseAbs().maxCoeff() <= 1e-15 * full.ntk.cwiseAbs().maxCoeff());
  const Eigen::Index n = x.rows(), r0 = n / 4, r1 = n / 2, c0 = n / 3;
  const auto block = ntk::kernel_block(net, x, x, r0, r1, c0, n);
  // Equal to rounding: the tile's inner products come from a GEMM of a different shape.
  CHECK((block.ntk - asym.ntk.block(r0, c0, r1 - r0, n - c0)).cwiseAbs().maxCoeff() <= 1e-13 * asym.ntk.maxCoeff());
  CHECK((block.nngp - asym.nngp.block(r0, c0, r1 - r0, n - c0)).cwiseAbs().maxCoeff() <= 1e-13 * asym.nngp.maxCoeff());
  const auto diag = ntk::kernel_diagonal(net, x);
  CHECK((diag.ntk.col(0) - full.ntk.diagonal()).cwiseAbs().maxCoeff() <= 1e-14 * diag.ntk.maxCoeff());
  CHECK((diag.nngp.col(0) - full.nngp.diagonal()).cwiseAbs().maxCoeff() <= 1e-14 * diag.nngp.maxCoeff());
  CHECK(ntk::ntk_kernel(net, x) == full.ntk);
  CHECK(ntk::nngp_kernel(net, x) == full.nngp);
  CHECK(ntk::kernel(net, x, ntk::KernelKind::nngp).ntk.size() == 0);
  ntk::KernelOptions one, two;
  one.threads = 1;
  two.threads = 2;
  CHECK(ntk::kernel(net, x, x, ntk::KernelKind::both, one).ntk ==
        ntk::kernel(net, x, x, ntk::KernelKind::both, two).ntk);
  const auto tanh_net = ntk::mlp(ntk::Tanh{}, 2);
  CHECK(ntk::ntk_kernel(tanh_net, x, one) == ntk::ntk_kernel(tanh_net, x, two));
}

TEST_CASE("Kernels: float and long double agree with double", "[kernel]") {
  const Matrix x = random_inputs(5, 3, 9);
  const auto net = ntk::mlp(ntk::Erf{}, 3);
  const Matrix k = ntk::ntk_kernel(net, x);
  const Eigen::MatrixXf kf = ntk::ntk_kernel(net, Eigen::MatrixXf(x.cast<float>()));
  using MatrixL = Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic>;
  const MatrixL kl = ntk::ntk_kernel(net, MatrixL(x.cast<long double>()));
  CHECK((kf.cast<double>() - k).cwiseAbs().maxCoeff() <= 1e-5 * k.cwiseAbs().maxCoeff());
  CHECK((kl.cast<double>() - k).cwiseAbs().maxCoeff() <= 1e-14 * k.cwiseAbs().maxCoeff());
  const Eigen::MatrixXf tf = ntk::ntk_kernel(ntk::mlp(ntk::Tanh{}, 2), Eigen::MatrixXf(x.cast<float>()));
  CHECK(tf.allFinite());
}

TEST_CASE("Kernels: extreme input norms stay finite and deep ReLU stays finite", "[kernel]") {
  const Matrix x = random_inputs(4, 3, 13);
  for (double scale : {1e-150, 1e-30, 1e6, 1e100}) {
    const Matrix xs = x * scale;
    INFO("scale " << scale);
    CHECK(ntk::ntk_kernel(ntk::mlp(ntk::Relu{}, 5), xs).allFinite());
    CHECK(ntk::ntk_kernel(ntk::mlp(ntk::Erf{}, 5), xs).allFinite());
    if (scale <= 1e6) CHECK(ntk::ntk_kernel(ntk::mlp(ntk::Tanh{}, 2), xs).allFinite());
  }
  // Depth 10^4 at the critical sigma_w = sqrt(2), no bias: Θ grows linearly, no overflow.
  const auto deep = ntk::ntk_kernel(ntk::mlp(ntk::Relu{}, 10000, 0, std::sqrt(2.0), 0.0), x);
  CHECK(deep.allFinite());
  CHECK(deep(0, 0) == Approx(10001 * 2 * x.row(0).squaredNorm() / 3).epsilon(1e-9));
  // A kernel that truly overflows is an error, not inf.
  REQUIRE_THROWS_AS(ntk::ntk_kernel(ntk::mlp(ntk::Relu{}, 10000, 0, 2.0, 0.0), x), std::overflow_error);
}

TEST_CASE("Kernels: bad input is rejected with the function and the problem", "[kernel]") {
  const auto net = ntk::mlp(ntk::Relu{}, 2);
  const Matrix x = random_inputs(3, 4, 1);
  REQUIRE_THROWS_AS(ntk::kernel(net, x, Matrix(random_inputs(2, 5, 2))), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::kernel(net, Matrix(0, 4)), std::invalid_argument);
  Matrix bad = x;
  bad(1, 2) = std::nan("");
  try {
    ntk::kernel(net, x, bad);
    FAIL("no exception");
  } catch (const std::domain_error& e) {
    CHECK(std::string(e.what()).find("ntk::kernel: x2 has a non-finite entry at (1, 2)") == 0);
  }
  REQUIRE_THROWS_AS(ntk::mlp(ntk::Relu{}, 0), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::mlp(ntk::Relu{}, 2, 0, 0.0), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::mlp(ntk::Relu{}, 2, 0, 1.0, -0.1), std::invalid_argument);
  auto edited = net;
  edited.dense[1].sigma_w = -1;
  REQUIRE_THROWS_AS(ntk::kernel(edited, x), std::invalid_argument);
  ntk::KernelOptions options;
  options.dual.quadrature_order = -2;
  REQUIRE_THROWS_AS(ntk::kernel(net, x, ntk::KernelKind::both, options), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::kernel_block(net, x, x, 0, 4, 0, 1), std::invalid_argument);
}

TEST_CASE(
    "Named forms: mlp(phi, MlpShape) and kernel_block with RowRange/ColumnRange equal the "
    "positional ones",
    "[kernel]") {
  ntk::MlpShape shape;
  shape.depth = 3;
  shape.sigma_w = 1.3;
  shape.sigma_b = 0.2;
  const auto named = ntk::mlp(ntk::Erf{}, shape), positional = ntk::mlp(ntk::Erf{}, 3, 0, 1.3, 0.2);
  REQUIRE(named.dense.size() == positional.dense.size());
  for (std::size_t l = 0; l < named.dense.size(); ++l) {
    CHECK(named.dense[l].sigma_w == positional.dense[l].sigma_w);
    CHECK(named.dense[l].sigma_b == positional.dense[l].sigma_b);
    CHECK(named.dense[l].width == positional.dense[l].width);
  }
  const Matrix x1 = random_inputs(7, 3, 11), x2 = random_inputs(6, 3, 12);
  const auto a = ntk::kernel_block(named, x1, x2, ntk::RowRange{2, 6}, ntk::ColumnRange{1, 4});
  const auto b = ntk::kernel_block(positional, x1, x2, 2, 6, 1, 4);
  CHECK((a.ntk - b.ntk).cwiseAbs().maxCoeff() == 0);
  CHECK((a.nngp - b.nngp).cwiseAbs().maxCoeff() == 0);
  CHECK_THROWS_AS(ntk::kernel_block(named, x1, x2, ntk::RowRange{6, 2}, ntk::ColumnRange{1, 4}), std::invalid_argument);
}

namespace {

/// A batch-only activation (the contract of the Python package's callables, detail/batch_values.hpp):
/// tanh or ReLU evaluated only through values_and_derivatives, counting the calls.
struct BatchOnly {
  static constexpr bool batch_only = true;
  bool relu = false;
  long* calls = nullptr;
  std::string name() const { return "batch"; }
  template <class S>
  S value(S z) const {
    S v;
    values_and_derivatives(&z, &v, static_cast<S*>(nullptr), 1);
    return v;
  }
  template <class S>
  S derivative(S z) const {
    S d;
    values_and_derivatives(&z, static_cast<S*>(nullptr), &d, 1);
    return d;
  }
  template <class S>
  void values_and_derivatives(const S* z, S* v, S* dv, std::size_t n) const {
    if (calls) ++*calls;
    for (std::size_t i = 0; i < n; ++i) {
      const S value = relu ? std::max(z[i], S(0)) : std::tanh(z[i]);
      if (v) v[i] = value;
      if (dv) dv[i] = relu ? S(z[i] > 0 ? 1 : 0) : 1 - value * value;
    }
  }
};

/// The message of the std::invalid_argument that f throws ("" when it throws none).
template <class F>
std::string invalid_argument_message(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("Batch-only activations: tanh to 1e-10 up to variance 17, a kink is refused, never silently wrong",
          "[kernel]") {
  long calls = 0;
  const BatchOnly tanh_batch{false, &calls}, relu_batch{true, nullptr};
  const Matrix mixed = random_inputs(24, 4, 31);
  Matrix common = mixed.rowwise().normalized() * 2.0;  // norm² / d = 1
  // Mixed norms with first-layer variances up to about 17 (σ_w = 2.5: the old code refused beyond
  // about 5, its series being capped at 1024 nodes), and a common norm at variance 16 (the old table
  // came from product quadrature there); the built-in tanh takes its saturating rule.
  for (const auto& [x, sigma_w, sigma_b] :
       {std::tuple<Matrix, double, double>{mixed, 2.5, 1.0}, std::tuple<Matrix, double, double>{common, 3.0, 2.6},
        std::tuple<Matrix, double, double>{common, 1.0, 0.5}}) {
    const auto reference = ntk::kernel(ntk::mlp(ntk::Tanh{}, 3, 0, sigma_w, sigma_b), x, ntk::KernelKind::both);
    calls = 0;
    const auto batch = ntk::kernel(ntk::mlp(tanh_batch, 3, 0, sigma_w, sigma_b), x, ntk::KernelKind::both);
    CHECK((batch.ntk - reference.ntk).cwiseAbs().maxCoeff() <= 1e-10 * reference.ntk.cwiseAbs().maxCoeff());
    CHECK((batch.nngp - reference.nngp).cwiseAbs().maxCoeff() <= 1e-10 * reference.nngp.cwiseAbs().maxCoeff());
    CHECK(calls <= 3 * 5);  // a few calls per layer: rule orders tried (<= 4 here), the diagonal chain
  }
  // ReLU: no Hermite series converges at a kink, and product quadrature would be about 2e-2 off.
  for (const Matrix& x : {common, mixed}) {
    const auto net = ntk::mlp(relu_batch, 2);
    const std::string message = invalid_argument_message([&] { ntk::kernel(net, x); });
    CHECK(message.find("does not converge") != std::string::npos);
    CHECK(message.find("ReLU") != std::string::npos);
  }
  // An explicit order accepts product quadrature at a common norm (approximate at the kink).
  ntk::KernelOptions explicit_order;
  explicit_order.dual.quadrature_order = 256;
  const auto approximate = ntk::kernel(ntk::mlp(relu_batch, 2), common, ntk::KernelKind::ntk, explicit_order);
  const auto exact = ntk::kernel(ntk::mlp(ntk::Relu{}, 2), common, ntk::KernelKind::ntk);
  CHECK((approximate.ntk - exact.ntk).cwiseAbs().maxCoeff() <= 5e-2 * exact.ntk.cwiseAbs().maxCoeff());
  // Beyond the bound: a clear error, not per-entry quadrature.
  const std::string message =
      invalid_argument_message([&] { ntk::kernel(ntk::mlp(tanh_batch, 2, 0, 6.0, 1.0), mixed); });
  CHECK(message.find("within 4096 nodes") != std::string::npos);
  CHECK(message.find("17.9") != std::string::npos);
}
