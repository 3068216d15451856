// The contract of docs/preconditions.md, row by row: every public entry point and every activation
// type at edge values (NaN, ±inf, 0, subnormal, 1e±300, sizes that cannot be allocated) either
// returns a finite result or throws the documented exception.  The first table holds the cases issue 17
// reported; the sweeps below cover every activation at every scale.
#include <ntk/ntk.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "catch_shim.hpp"
#include "test_config.hpp"

namespace {

using Matrix = Eigen::MatrixXd;
constexpr double k_nan = std::numeric_limits<double>::quiet_NaN();
constexpr double k_inf = std::numeric_limits<double>::infinity();

/// What a call may do: each bit is one allowed outcome.
enum Outcome : unsigned {
  returns_finite = 1,
  invalid_argument = 2,
  domain_error = 4,
  overflow_error = 8,
  length_error = 16,
  diverged = 32,
  non_finite = 64,  // never allowed: a NaN or inf returned without an exception
  other = 128,      // never allowed: an undocumented exception type
};

/// Runs `f` (returning the values it computed) and classifies what happened.
Outcome outcome(const std::function<std::vector<double>()>& f, std::string& message) {
  try {
    for (double v : f())
      if (!std::isfinite(v)) return non_finite;
    return returns_finite;
  } catch (const ntk::TrainingDiverged& e) {
    message = e.what();
    return diverged;
  } catch (const std::overflow_error& e) {
    message = e.what();
    return overflow_error;
  } catch (const std::length_error& e) {
    message = e.what();
    return length_error;
  } catch (const std::invalid_argument& e) {
    message = e.what();
    return invalid_argument;
  } catch (const std::domain_error& e) {
    message = e.what();
    return domain_error;
  } catch (const std::exception& e) {
    message = e.what();
    return other;
  }
}

struct Row {
  const char* what;
  unsigned allowed;
  std::function<std::vector<double>()> run;
};

std::vector<double> values(const Matrix& m) {
  return std::vector<double>(m.data(), m.data() + m.size());
}
template <class Scalar>
std::vector<double> values(const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>& m) {
  std::vector<double> out;
  for (Eigen::Index i = 0; i < m.size(); ++i) out.push_back(static_cast<double>(m.data()[i]));
  return out;
}
std::vector<double> constants(const ntk::LimitConstants& c) {
  return {c.E_phi, c.E_dphi, c.E_phi2, c.E_dphi2, c.A, c.A_prime, c.B};
}
template <class Scalar>
std::vector<double> kernels(const ntk::Kernels<Scalar>& k) {
  auto a = values(k.nngp), b = values(k.ntk);
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

void run_table(const std::vector<Row>& rows) {
  for (const Row& row : rows) {
    std::string message;
    const Outcome got = outcome(row.run, message);
    INFO(row.what << " -> outcome " << got << " (allowed mask " << row.allowed << ") " << message);
    CHECK((got & row.allowed) != 0);
  }
}

}  // namespace

TEST_CASE("Contracts: each case of issue 17 gives a finite result or the documented exception", "[contracts]") {
  const Matrix x = ntk_test::normal_matrix(3, 2, 7);
  const Matrix y = ntk_test::normal_matrix(3, 1, 8);
  const Matrix huge = x * 1e200;
  const auto relu_net = [] { return ntk::Network<ntk::Mlp<ntk::Relu>>(ntk::mlp(ntk::Relu{}, 2, 16), 2, 1); };
  const std::vector<Row> rows = {
      {"limit_constants(Hermite{1e200})", returns_finite | invalid_argument | overflow_error,
       [] { return constants(ntk::limit_constants(ntk::Hermite(std::vector<double>{1e200}))); }},
      {"limit_constants(Hermite{1e308, 1e308})", returns_finite | invalid_argument | overflow_error,
       [] {
         return constants(ntk::limit_constants(ntk::Hermite(std::vector<double>{1e308, 1e308})));
       }},
      {"limit_constants(LeakyRelu{k_nan})", invalid_argument,
       [] { return constants(ntk::limit_constants(ntk::LeakyRelu{k_nan})); }},
      {"limit_constants(LeakyRelu{1e200})", invalid_argument,
       [] { return constants(ntk::limit_constants(ntk::LeakyRelu{1e200})); }},
      {"kernel(Erf{scale = k_nan})", invalid_argument,
       [&] { return kernels(ntk::kernel(ntk::mlp(ntk::Erf{k_nan}, 2), x)); }},
      {"kernel(LeakyRelu{k_nan})", invalid_argument,
       [&] { return kernels(ntk::kernel(ntk::mlp(ntk::LeakyRelu{k_nan}, 2), x)); }},
      {"kernel(LeakyRelu{k_inf})", invalid_argument,
       [&] { return kernels(ntk::kernel(ntk::mlp(ntk::LeakyRelu{k_inf}, 2), x)); }},
      {"kernel(Quadrature<Erf>{k_nan})", invalid_argument,
       [&] { return kernels(ntk::kernel(ntk::mlp(ntk::Quadrature<ntk::Erf>{ntk::Erf{k_nan}}, 2), x)); }},
      {"dual(LeakyRelu{k_nan})", invalid_argument,
       [] {
         const auto d = ntk::dual(ntk::LeakyRelu{k_nan}, 1.0, 0.5, 1.0);
         return std::vector<double>{d.t, d.t_dot};
       }},
      {"Network(Erf{k_nan}).forward", invalid_argument,
       [&] {
         const ntk::Network<ntk::Mlp<ntk::Erf>> net(ntk::mlp(ntk::Erf{k_nan}, 2, 8), 2, 1);
         return values(net.forward(x));
       }},
      {"DeepKernel(LeakyRelu{k_nan})", invalid_argument,
       [] {
         const ntk::DeepKernel<ntk::LeakyRelu> k(ntk::LeakyRelu{k_nan}, 3);
         return std::vector<double>{k.log_diagonal()};
       }},
      {"Network::empirical_ntk at norm 1e200", overflow_error,
       [&] { return values(relu_net().empirical_ntk(huge, huge)); }},
      {"Network::forward at norm 1e200", returns_finite | overflow_error,
       [&] { return values(relu_net().forward(huge)); }},
      {"Network::loss at norm 1e200", overflow_error, [&] { return std::vector<double>{relu_net().loss(huge, y)}; }},
      {"Network::gradient at norm 1e200", overflow_error, [&] { return values(relu_net().gradient(huge, y)); }},
      {"Network::jacobian at norm 1e200", returns_finite | overflow_error,
       [&] { return values(relu_net().jacobian(huge)); }},
      {"monte_carlo_ntk at norm 1e200", overflow_error,
       [&] { return values(ntk::monte_carlo_ntk(ntk::mlp(ntk::Relu{}, 2, 8), huge, huge, 3, 1).mean); }},
      {"monte_carlo_nngp at norm 1e200", overflow_error,
       [&] { return values(ntk::monte_carlo_nngp(ntk::mlp(ntk::Relu{}, 2, 8), huge, huge, 3, 1).mean); }},
      {"Network::train, learning rate 1e3", diverged,
       [&] {
         auto net = relu_net();
         ntk::TrainOptions o;
         o.learning_rate = 1e3;
         o.steps = 200;
         return net.train(x, y, o).loss;
       }},
      {"LinearizedNetwork::train, learning rate 10", diverged,
       [&] {
         ntk::LinearizedNetwork<ntk::Mlp<ntk::Relu>> lin(relu_net());
         ntk::TrainOptions o;
         o.learning_rate = 10;
         o.steps = 2000;
         return lin.train(x, y, o).loss;
       }},
      {"monte_carlo_nngp, 1e12 draws", length_error | invalid_argument,
       [&] { return values(ntk::monte_carlo_nngp(ntk::mlp(ntk::Relu{}, 2, 8), x, x, 1000000000000L, 1).mean); }},
      {"Network of width 2^40", length_error | invalid_argument,
       [] {
         const ntk::Network<ntk::Mlp<ntk::Relu>> net(ntk::mlp(ntk::Relu{}, 2, Eigen::Index(1) << 40), 2, 1);
         return std::vector<double>{static_cast<double>(net.parameter_count())};
       }},
      {"DeepKernel of depth 1e15", length_error | invalid_argument,
       [] {
         const ntk::DeepKernel<ntk::Relu> k(ntk::Relu{}, 1000000000000000L);
         return std::vector<double>{k.log_diagonal()};
       }},
      {"kernel of 4e6 rows (an output of 1.3e14 bytes)", length_error | invalid_argument,
       [] { return kernels(ntk::kernel(ntk::mlp(ntk::Relu{}, 2), Matrix(Matrix::Zero(4000000, 1)))); }},
      {"KernelOptions::threads = 100000", invalid_argument,
       [&] {
         ntk::KernelOptions o;
         o.threads = 100000;
         return kernels(ntk::kernel(ntk::mlp(ntk::Relu{}, 2), x, ntk::KernelKind::both, o));
       }},
  };
  run_table(rows);
}

TEST_CASE("Contracts: divergent training restores theta and reports the step", "[contracts]") {
  const Matrix x = ntk_test::normal_matrix(4, 2, 3);
  const Matrix y = ntk_test::normal_matrix(4, 1, 4);
  ntk::Network<ntk::Mlp<ntk::Relu>> net(ntk::mlp(ntk::Relu{}, 2, 16), 2, 5);
  const Eigen::VectorXd before = net.parameters();
  ntk::TrainOptions o;
  o.learning_rate = 1e3;
  o.steps = 500;
  long step = -1;
  try {
    net.train(x, y, o);
  } catch (const ntk::TrainingDiverged& e) {
    step = e.step();
  }
  // Each step multiplies the residual by a factor of order η λ_max >> 1, so the loss leaves double's
  // range within a few dozen steps, never at step 0 (the initial loss is finite).
  CHECK(step >= 1);
  CHECK(step < 500);
  CHECK(net.parameters() == before);

  ntk::LinearizedNetwork<ntk::Mlp<ntk::Relu>> lin(net);
  o.learning_rate = 10;
  o.steps = 5000;
  step = -1;
  try {
    lin.train(x, y, o);
  } catch (const ntk::TrainingDiverged& e) {
    step = e.step();
  }
  CHECK(step >= 1);
  CHECK(lin.parameter_shift().isZero(0));
  // A stable rate still trains and lowers the loss.
  o.learning_rate = 1e-3;
  o.steps = 50;
  const auto history = net.train(x, y, o);
  CHECK(history.loss.back() < history.loss.front());
}

TEST_CASE("Contracts: LinearizedDynamics on a subnormal g0 says the kernel is too small", "[contracts]") {
  const Matrix g0 = Matrix::Identity(3, 3) * 1e-310;
  const Matrix y = Matrix::Ones(3, 1);
  std::string message;
  try {
    const ntk::LinearizedDynamics<double> dynamics(g0, y);
    const Matrix p = dynamics.train_predictions(k_inf);
    // Handled: then the predictions must be the targets (infinite time interpolates).
    CHECK((p - y).cwiseAbs().maxCoeff() < 1e-12);
  } catch (const std::overflow_error& e) {
    message = e.what();
  }
  INFO(message);
  CHECK((message.empty() || message.find("too small") != std::string::npos));
  CHECK(message.find("too large") == std::string::npos);
}

TEST_CASE("Contracts: Cos and Sin duals at variances near double's maximum do not overflow", "[contracts]") {
  // E[cos u cos v] = e^{-(q1 + q2)/2} cosh c: on the diagonal (1 + e^{-2q})/2 = 1/2 for large q.
  const double q = 1e308;
  const auto c = ntk::dual(ntk::Cos{}, q, q, q);
  CHECK(c.t == Approx(0.5).epsilon(1e-15));
  CHECK(c.t_dot == Approx(0.5).epsilon(1e-15));
  const auto s = ntk::dual(ntk::Sin{}, q, q, q);
  CHECK(s.t == Approx(0.5).epsilon(1e-15));
  // Between two such points of correlation 0 everything has decayed to 0.
  CHECK(ntk::dual(ntk::Cos{}, q, 0.0, q).t == 0.0);
}

TEST_CASE("Contracts: project_to_sphere keeps the direction of rows of norm 1e200 and 1e-200", "[contracts]") {
  Matrix x(3, 2);
  x << 3e200, 4e200, 3e-200, -4e-200, 0.6, 0.8;
  const Matrix u = ntk::project_to_sphere(x);
  CHECK(u(0, 0) == Approx(0.6).epsilon(1e-15));
  CHECK(u(0, 1) == Approx(0.8).epsilon(1e-15));
  CHECK(u(1, 0) == Approx(0.6).epsilon(1e-15));
  CHECK(u(1, 1) == Approx(-0.8).epsilon(1e-15));
  for (Eigen::Index i = 0; i < 3; ++i) CHECK(u.row(i).norm() == Approx(1.0).epsilon(1e-15));
}

TEST_CASE("Contracts: the deep kernel of h_2 at depth 1e4 has no NaN log-magnitude", "[contracts]") {
  // φ = h_2: ψ(ρ) = ρ², so ρ_L = ρ^(2^L) underflows to exactly 0 off the diagonal; the diagonal
  // stays 1.  The log-magnitudes must be −∞ (zero) or finite, never NaN.
  const ntk::DeepKernel<ntk::Hermite> k(ntk::Hermite(std::vector<double>{0.0, 0.0, 1.0}), 10000, ntk::DeepKind::nngp);
  const Matrix x = ntk_test::normal_matrix(4, 3, 11);
  const auto g = k.gram(x, x);
  for (Eigen::Index i = 0; i < 4; ++i)
    for (Eigen::Index j = 0; j < 4; ++j) {
      INFO(i << ", " << j);
      CHECK(!std::isnan(g.log_abs(i, j)));
      CHECK(!std::isnan(g.sign(i, j)));
      if (i == j) CHECK(g.log_abs(i, j) == Approx(0.0).margin(1e-12));
    }
}

namespace {

/// Every activation type the library ships, with default parameters.
using AllActivations =
    std::tuple<ntk::Relu, ntk::LeakyRelu, ntk::Abs, ntk::Erf, ntk::Tanh, ntk::Sigmoid, ntk::Softplus, ntk::Gelu,
               ntk::Identity, ntk::Sin, ntk::Cos, ntk::Hermite, ntk::OptimalActivation, ntk::ABRelu, ntk::Sign,
               ntk::Exp, ntk::Gaussian, ntk::Rbf, ntk::Polynomial, ntk::Monomial, ntk::RectifiedMonomial>;

template <class Phi>
void sweep_activation(const Phi& phi) {
  const std::string name = phi.name();
  const Matrix base = ntk_test::normal_matrix(3, 2, 21);
  std::vector<Row> rows;
  // Non-finite input is a domain error everywhere.
  for (double bad : {k_nan, k_inf, -k_inf}) {
    Matrix x = base;
    x(1, 0) = bad;
    rows.push_back({"kernel with a non-finite entry", domain_error,
                    [x, phi] { return kernels(ntk::kernel(ntk::mlp(phi, 2), x)); }});
    rows.push_back({"dual at a non-finite variance", domain_error, [bad, phi] {
                      const auto d = ntk::dual(phi, bad, 0.0, 1.0);
                      return std::vector<double>{d.t, d.t_dot};
                    }});
  }
  // Every finite scale: a finite kernel or an overflow error, never inf/NaN or another type.
  for (double scale : {0.0, 4.9e-324, 1e-310, 1e-300, 1e-10, 1.0, 1e10, 1e100, 1e150, 1e300}) {
    const Matrix x = base * scale;
    rows.push_back({"kernel at a scale", returns_finite | overflow_error,
                    [x, phi] { return kernels(ntk::kernel(ntk::mlp(phi, 2), x)); }});
    rows.push_back({"kernel_diagonal at a scale", returns_finite | overflow_error,
                    [x, phi] { return kernels(ntk::kernel_diagonal(ntk::mlp(phi, 2), x)); }});
    const double q = scale * scale;
    if (std::isfinite(q))  // (an infinite variance is non-finite input: the domain error above)
      rows.push_back({"dual at a variance", returns_finite | overflow_error, [q, phi] {
                        const auto d = ntk::dual(phi, q, q / 2, q);
                        return std::vector<double>{d.t, d.t_dot};
                      }});
  }
  rows.push_back(
      {"limit_constants", returns_finite | domain_error, [phi] { return constants(ntk::limit_constants(phi)); }});
  rows.push_back({"Network forward and empirical NTK", returns_finite | overflow_error, [phi, base] {
                    const ntk::Network<ntk::Mlp<Phi>> net(ntk::mlp(phi, 2, 8), 2, 3);
                    auto v = values(net.forward(base));
                    const auto k = values(net.empirical_ntk(base, base));
                    v.insert(v.end(), k.begin(), k.end());
                    return v;
                  }});
  INFO("activation " << name);
  run_table(rows);
}

template <std::size_t... Ks>
void sweep_all(std::index_sequence<Ks...>) {
  (sweep_activation(std::tuple_element_t<Ks, AllActivations>{}), ...);
}

}  // namespace

TEST_CASE("Contracts: every activation at every input scale gives a finite kernel or an overflow error",
          "[contracts]") {
  sweep_all(std::make_index_sequence<std::tuple_size_v<AllActivations>>{});
}

TEST_CASE("Contracts: invalid activation parameters are refused by name at every entry point", "[contracts]") {
  const Matrix x = ntk_test::normal_matrix(3, 2, 5);
  std::string message;
  const auto expect_named = [&](const char* what, const std::function<void()>& f, const char* parameter) {
    message.clear();
    try {
      f();
    } catch (const std::invalid_argument& e) {
      message = e.what();
    }
    INFO(what << ": " << message);
    CHECK(message.find(parameter) != std::string::npos);
  };
  expect_named(
      "kernel, LeakyRelu slope k_nan", [&] { ntk::kernel(ntk::mlp(ntk::LeakyRelu{k_nan}, 2), x); }, "LeakyRelu slope");
  expect_named(
      "Network, Erf scale k_inf", [&] { ntk::Network<ntk::Mlp<ntk::Erf>>(ntk::mlp(ntk::Erf{k_inf}, 2, 4), 2, 1); },
      "Erf scale");
  expect_named(
      "limit_constants, Erf scale 1e200", [&] { ntk::limit_constants(ntk::Erf{1e200}); }, "Erf scale");
  expect_named(
      "Hermite coefficient 1e200",
      [&] {
        ntk::Hermite(std::vector<double>{0.0, 1e200});
      },
      "Hermite coefficient 1");
  expect_named(
      "Hermite coefficient k_nan", [&] { ntk::Hermite(std::vector<double>{k_nan}); }, "Hermite coefficient 0");
  expect_named(
      "ABRelu a 1e300", [&] { ntk::limit_constants(ntk::ABRelu(1e300, 1)); }, "ABRelu a");
  expect_named(
      "OptimalActivation d k_nan", [&] { ntk::OptimalActivation{k_nan}; }, "dimension");
  CHECK(message.find("ntk::OptimalActivation") != std::string::npos);
  expect_named(
      "kernel message names the function", [&] { ntk::kernel(ntk::mlp(ntk::LeakyRelu{k_nan}, 2), x); }, "ntk::kernel");
}

TEST_CASE("Contracts: float kernels of bounded activations are finite at every scale a float holds", "[contracts]") {
  // Up to norms whose square overflows float (1e20 .. 1e37): the recursion is then redone in double
  // and rounded, so the float kernel must be exactly the double kernel of the same inputs rounded.
  // (Below that the float recursion runs, and at large variances it is ill-conditioned in float:
  // its ρ carries float rounding into corners of width 1/q, so only finiteness is asked there.)
  // The NNGP of every bounded activation is bounded; so is the NTK of tanh, erf and sigmoid (Ṫ
  // decays like 1/sqrt(q)), but sin's and cos's NTK grows like q (Ṫ(x, x) -> 1/2): beyond float
  // it is an overflow_error, and their NNGP alone is finite.
  const Eigen::MatrixXf base = ntk_test::normal_matrix(3, 2, 9).cast<float>();
  for (float scale : {1.0f, 1e5f, 1e10f, 1e15f, 1e18f, 1e20f, 1e30f, 1e37f}) {
    const Eigen::MatrixXf x = base * scale;
    const bool beyond_float = scale >= 1e20f;
    INFO("scale " << scale);
    const auto check = [&](const auto& arch, ntk::KernelKind kind) {
      const ntk::Kernels<float> narrow = ntk::kernel(arch, x, kind);
      if (beyond_float) {
        const Eigen::MatrixXd w = x.cast<double>();
        const ntk::Kernels<double> wide = ntk::kernel(arch, w, kind);
        CHECK(narrow.ntk == wide.ntk.cast<float>());
        CHECK(narrow.nngp == wide.nngp.cast<float>());
        if (kind != ntk::KernelKind::nngp) {
          const ntk::Kernels<float> diagonal = ntk::kernel_diagonal(arch, x);
          const ntk::Kernels<double> wide_diagonal = ntk::kernel_diagonal(arch, w);
          CHECK(diagonal.ntk == wide_diagonal.ntk.cast<float>());
        }
        Eigen::MatrixXf into(x.rows(), x.rows());
        ntk::kernel_into(arch, x, ntk::KernelKind::nngp, into);
        CHECK(into == narrow.nngp);
      }
      return kernels(narrow);
    };
    const auto both = ntk::KernelKind::both, nngp = ntk::KernelKind::nngp;
    const unsigned periodic_ntk = beyond_float ? overflow_error : returns_finite;
    std::string message;
    CHECK(outcome([&] { return check(ntk::mlp(ntk::Tanh{}, 2), both); }, message) == returns_finite);
    CHECK(outcome([&] { return check(ntk::mlp(ntk::Erf{}, 2), both); }, message) == returns_finite);
    CHECK(outcome([&] { return check(ntk::mlp(ntk::Sigmoid{}, 2), both); }, message) == returns_finite);
    CHECK(outcome([&] { return check(ntk::mlp(ntk::Sin{}, 2), nngp); }, message) == returns_finite);
    CHECK(outcome([&] { return check(ntk::mlp(ntk::Cos{}, 2), nngp); }, message) == returns_finite);
    CHECK(outcome([&] { return check(ntk::mlp(ntk::Sin{}, 2), both); }, message) == periodic_ntk);
    CHECK(outcome([&] { return check(ntk::mlp(ntk::Cos{}, 2), both); }, message) == periodic_ntk);
  }
  // An unbounded activation whose kernel does not fit float is still an overflow, not inf.
  std::string message;
  const Eigen::MatrixXf big = base * 1e30f;
  CHECK(outcome([&] { return kernels(ntk::kernel(ntk::mlp(ntk::Relu{}, 2), big)); }, message) == overflow_error);
  CHECK(outcome([&] { return kernels(ntk::kernel_diagonal(ntk::mlp(ntk::Relu{}, 2), big)); }, message) ==
        overflow_error);
}

namespace {

/// Adaptive Simpson in long double: an integrator independent of the library's rules.
template <class F>
long double simpson(const F& f, long double a, long double b, long double fa, long double fm, long double fb,
                    long double whole, long double tolerance, int depth) {
  const long double m = (a + b) / 2, lm = (a + m) / 2, rm = (m + b) / 2;
  const long double flm = f(lm), frm = f(rm);
  const long double left = (m - a) / 6 * (fa + 4 * flm + fm), right = (b - m) / 6 * (fm + 4 * frm + fb);
  if (depth <= 0 || std::fabs(left + right - whole) <= 15 * tolerance)
    return left + right + (left + right - whole) / 15;
  return simpson(f, a, m, fa, flm, fm, left, tolerance / 2, depth - 1) +
         simpson(f, m, b, fm, frm, fb, right, tolerance / 2, depth - 1);
}

/// ∫_0^12 f on intervals graded from `first` (the width of the feature at 0), by adaptive Simpson.
template <class F>
long double integrate_half_line(const F& f, long double first) {
  long double sum = 0, a = 0, b = first;
  while (a < 12) {
    const long double fa = f(a), fb = f(b), fm = f((a + b) / 2);
    sum += simpson(f, a, b, fa, fm, fb, (b - a) / 6 * (fa + 4 * fm + fb), 1e-15L * (b - a), 30);
    a = b;
    b = std::min(12.0L, 2 * b);
  }
  return sum;
}

/// The NTK and NNGP diagonal of mlp(φ, depth) (σ_w = σ_b = 1) at a point of Σ^0 = q0, from the
/// recursion with E[φ(√q Z)²] and E[φ'(√q Z)²] by 1-D adaptive Simpson (φ odd or even: twice the
/// half line).
template <class Phi>
std::pair<long double, long double> reference_diagonal(const Phi& phi, long double q0, int depth) {
  const long double inverse_root_2pi = 0.398942280401432677939946059934381868L;
  long double q = q0 + 1, theta = q;
  for (int l = 0; l < depth; ++l) {
    const long double root = std::sqrt(q);
    const auto square = [&](long double z) {
      const long double v = phi.value(root * z);
      return v * v * std::exp(-z * z / 2) * inverse_root_2pi;
    };
    const auto square_dot = [&](long double z) {
      const long double d = phi.derivative(root * z);
      return d * d * std::exp(-z * z / 2) * inverse_root_2pi;
    };
    const long double first = std::min(1e-2L, 1 / root);
    const long double t = 2 * integrate_half_line(square, first), t_dot = 2 * integrate_half_line(square_dot, first);
    q = t + 1;
    theta = t_dot * theta + q;
  }
  return {theta, q};
}

}  // namespace

TEST_CASE("Contracts: tanh and sigmoid kernels at large variance match an independent 1-D integration to 1e-10",
          "[contracts]") {
  // Issue 18: the row (100, 1) (Σ^0 = 5000.5) gave Θ = 2.343 against 7.518.  The diagonal needs only
  // the 1-D expectations, integrated here by adaptive Simpson on graded intervals.
  for (const double scale : {1.0, 100.0, 1e5}) {
    Matrix x(1, 2);
    x << scale, 1.0;
    const double q0 = x.squaredNorm() / 2;
    for (int depth : {1, 3}) {
      INFO("row (" << scale << ", 1), depth " << depth);
      const auto tanh_kernel = ntk::kernel_diagonal(ntk::mlp(ntk::Tanh{}, depth), x);
      const auto tanh_reference = reference_diagonal(ntk::Tanh{}, q0, depth);
      CHECK(ntk_test::relative_error(tanh_kernel.ntk(0, 0), static_cast<double>(tanh_reference.first)) < 1e-10);
      CHECK(ntk_test::relative_error(tanh_kernel.nngp(0, 0), static_cast<double>(tanh_reference.second)) < 1e-10);
      const auto full = ntk::kernel(ntk::mlp(ntk::Tanh{}, depth), x);
      CHECK(ntk_test::relative_error(full.ntk(0, 0), static_cast<double>(tanh_reference.first)) < 1e-10);
      const auto sigmoid_kernel = ntk::kernel_diagonal(ntk::mlp(ntk::Sigmoid{}, depth), x);
      const auto sigmoid_reference = reference_diagonal(ntk::Sigmoid{}, q0, depth);
      CHECK(ntk_test::relative_error(sigmoid_kernel.ntk(0, 0), static_cast<double>(sigmoid_reference.first)) < 1e-10);
    }
  }
  // The 2-D rule off the diagonal: at variances below the threshold it must agree with the
  // order-512 product Gauss–Hermite rule (accurate to 1e-12 there), and far beyond it tend to the
  // sign function's (2/π) asin ρ.
  for (const double rho : {-0.9, -0.3, 0.0, 0.5, 0.99, 0.999999}) {
    INFO("rho " << rho);
    const double q1 = 2.0, q2 = 1.3, c = rho * std::sqrt(q1 * q2);
    const auto a = ntk::detail::saturating_dual(ntk::Tanh{}, q1, c, q2);
    const auto b = ntk::dual(ntk::Tanh{}, q1, c, q2, ntk::DualOptions{512});
    CHECK(std::fabs(a.t - b.t) < 1e-12);
    CHECK(std::fabs(a.t_dot - b.t_dot) < 1e-12);
    const double q = 1e16;
    const auto far = ntk::dual(ntk::Tanh{}, q, rho * q, q);
    CHECK(std::fabs(far.t - 2 / ntk::detail::pi_v<double> * std::asin(rho)) < 1e-6);
  }
}
