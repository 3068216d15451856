#include <ntk/deep_limit.hpp>
#include <ntk/random.hpp>

#include <array>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "catch_shim.hpp"
#include "test_config.hpp"

namespace {

using Matrix = Eigen::MatrixXd;

struct T1Row {
  double e_phi, e_dphi, e_dphi2, e_phi2, a, a_prime, b, alpha;
};

template <class Phi>
void check_constants(const Phi& phi, const T1Row& row, ntk::Regime regime) {
  const auto c = ntk::limit_constants(phi);
  INFO(phi.name());
  auto close = [](double got, double want) { return std::fabs(got - want) <= 1e-12 * std::max(1.0, std::fabs(want)); };
  CHECK(close(c.E_phi, row.e_phi));
  CHECK(close(c.E_dphi, row.e_dphi));
  CHECK(close(c.E_dphi2, row.e_dphi2));
  CHECK(close(c.E_phi2, row.e_phi2));
  CHECK(close(c.A, row.a));
  CHECK(close(c.A_prime, row.a_prime));
  CHECK(close(c.B, row.b));
  CHECK(c.regime == regime);
  if (regime == ntk::Regime::singular_kernel) {
    CHECK(close(c.alpha, row.alpha));
  } else {
    CHECK(std::isnan(c.alpha));
  }
}

// Points on the positive orthant of the unit sphere S^{d-1}_+ (|normal| entries, normalized).
Matrix sphere_points(Eigen::Index n, Eigen::Index dim, std::uint64_t seed) {
  ntk::NormalGenerator g(seed);
  Matrix x(n, dim);
  for (Eigen::Index i = 0; i < n; ++i)
    for (Eigen::Index j = 0; j < dim; ++j) x(i, j) = std::fabs(g.normal());
  return ntk::project_to_sphere(x);
}

std::vector<int> labels_of(const Matrix& x, double share_positive) {
  std::vector<int> y;
  for (Eigen::Index i = 0; i < x.rows(); ++i) y.push_back(x(i, 0) * x(i, 0) > 1 - share_positive ? 1 : -1);
  return y;
}

double agreement(const std::vector<int>& a, const std::vector<int>& b) {
  return ntk::accuracy(a, b);
}

}  // namespace

TEST_CASE("Limit constants match docs/mathematics.md T1 to 1e-12", "[deep]") {
  using R = ntk::Regime;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  check_constants(ntk::Relu{}, {0.398942280401433, 0.5, 0.5, 0.5, 0.564189583547756, 0.707106781186548, 1.0, nan},
                  R::majority_vote);
  check_constants(ntk::LeakyRelu{0.1},
                  {0.359048052361289, 0.55, 0.505, 0.505, 0.505250656163193, 0.773957299203321, 1.0, nan},
                  R::majority_vote);
  check_constants(ntk::Erf{},
                  {0, 0.65147001587056, 0.569410034733742, 0.46455905439754, 0, 0.95581527651992, 1.22570000378569,
                   0.888214651283706},
                  R::singular_kernel);
  check_constants(ntk::Tanh{},
                  {0, 0.605705509602159, 0.464402902448268, 0.394294490397841, 0, 0.964608689373725, 1.17780723230418,
                   0.880703630807796},
                  R::singular_kernel);
  check_constants(ntk::Sigmoid{},
                  {0, 0.206620964141907, 0.0448362413501944, 0.043379035858093, 0, 0.992051998078328, 1.03359239003994,
                   0.966057743715587},
                  R::singular_kernel);
  check_constants(ntk::Gelu{},
                  {0.282094791773878, 0.5, 0.455850865649287, 0.425221482570299, 0.432600950487958, 0.766765220597768,
                   1.07203159843629, nan},
                  R::majority_vote);
  check_constants(ntk::Sin{},
                  {0, 0.606530659712633, 0.567667641618306, 0.432332358381694, 0, 0.922452236291572, 1.31303528549933,
                   1.18556576944557},
                  R::singular_kernel);
  for (double d : {2.0, 3.0, 4.0, 8.0}) {
    const double a1 = std::pow(2.0, -d / 4);
    check_constants(ntk::OptimalActivation(d), {0, a1, 2, 1, 0, a1, 2, d}, R::singular_kernel);
  }
}

TEST_CASE("Regimes: 1-NN for A = A' = 0, undetermined for B < 1 and for linear phi", "[deep]") {
  CHECK(ntk::limit_constants(ntk::Hermite({0, 0, 1})).regime == ntk::Regime::nearest_neighbor);
  CHECK(ntk::limit_constants(ntk::Hermite({0, 0, 0, 1})).regime == ntk::Regime::nearest_neighbor);
  const auto cos = ntk::limit_constants(ntk::Cos{});
  CHECK(cos.regime == ntk::Regime::undetermined);
  CHECK(cos.B == Approx((1 - std::exp(-2.0)) / (1 + std::exp(-2.0))).epsilon(1e-13));
  CHECK(ntk::limit_constants(ntk::Softplus{}).regime == ntk::Regime::undetermined);
  CHECK(ntk::limit_constants(ntk::Softplus{}).B < 1);
  CHECK(ntk::limit_constants(ntk::Identity{}).regime == ntk::Regime::undetermined);
  REQUIRE_THROWS_AS(ntk::limit_constants(ntk::Hermite({0.0})), std::domain_error);
}

TEST_CASE("Deep phi_opt(4) recursion matches docs/mathematics.md T9 (exact polynomial iterates)", "[deep]") {
  struct Row {
    double rho0;
    long depth;
    double nngp, ntk;
  };
  const std::array<Row, 12> rows = {{{0.5, 1, 0.28125, 0.75},
                                     {0.5, 2, 0.11542510986328125, 0.55835723876953125},
                                     {0.5, 5, 0.00245450853507549237, 0.0232470765084420604},
                                     {0.5, 20, 2.30095554614571719e-12, 5.6454865938092637e-11},
                                     {0.5, 100, 1.5743776725163322e-60, 1.64578200590217734e-58},
                                     {0.9, 5, 0.0965538652400776804, 3.06574620198080536},
                                     {0.9, 100, 7.99631664206232786e-59, 1.08242548634145417e-56},
                                     {0.99, 2, 0.960741319145250045, 6.68665204534657394},
                                     {0.99, 20, 1.3157023911961946e-8, 5.44308350482146284e-6},
                                     {0.99, 100, 9.00240139149597315e-57, 4.44450123824024845e-54},
                                     {1, 20, 1.0, 2097151.0},
                                     {1, 100, 1.0, 2.5353012004564588e+30}}};
  for (const auto& row : rows) {
    const ntk::DeepKernel<ntk::OptimalActivation> kernel(ntk::OptimalActivation(4), row.depth);
    const auto [rho, r] = kernel.entry(row.rho0);
    INFO("rho0 " << row.rho0 << " L " << row.depth);
    CHECK(ntk_test::relative_error(rho.value(), row.nngp) <= 1e-11);
    const double log_k = r.log_abs + kernel.log_diagonal();
    CHECK(std::fabs(log_k - std::log(row.ntk)) <= 1e-11);
    CHECK(r.sign == 1);
  }
}

TEST_CASE("Deep kernels stay finite up to depth 1e5 for every regime", "[deep]") {
  const Matrix x = sphere_points(4, 3, 2);
  const long depth = ntk_test::scaled(100000, 20000);
  auto check = [&](const auto& phi) {
    for (auto kind : {ntk::DeepKind::ntk, ntk::DeepKind::nngp}) {
      const ntk::DeepKernel<std::decay_t<decltype(phi)>> kernel(phi, depth, kind);
      const auto g = kernel.gram(x, x);
      INFO(phi.name());
      for (Eigen::Index i = 0; i < 4; ++i)
        for (Eigen::Index j = 0; j < 4; ++j) {
          CHECK(!std::isnan(g.log_abs(i, j)));
          CHECK((g.sign(i, j) == 0 || std::isfinite(g.log_abs(i, j))));
        }
      const Matrix ratio = g.ratio();
      CHECK(ratio.allFinite());
      CHECK(ratio.cwiseAbs().maxCoeff() <= 1 + 1e-9);
      CHECK((ratio.diagonal().array() - 1).abs().maxCoeff() <= 1e-9);
      CHECK(std::isfinite(g.log_diagonal));
    }
  };
  check(ntk::Relu{});
  check(ntk::OptimalActivation(2));
  check(ntk::Erf{});
}

TEST_CASE("Deep ReLU NTK classifier reproduces majority vote", "[deep]") {
  const Matrix x = sphere_points(ntk_test::scaled(30, 12), 3, 5), xt = sphere_points(100, 3, 6);
  const auto y = labels_of(x, 0.4);
  const long depth = ntk_test::scaled(30000, 3000);
  ntk::DeepKernelClassifier<ntk::Relu> clf(ntk::Relu{}, depth);
  clf.fit(x, y);
  const auto predicted = clf.predict(xt);
  CHECK(agreement(predicted, ntk::majority_vote(y, xt.rows())) >= 0.99);
  // Training points get their own labels.
  CHECK(clf.predict(x) == y);
}

TEST_CASE("Deep kernel with A = A' = 0 reproduces 1-nearest neighbour", "[deep]") {
  const Matrix x = sphere_points(40, 3, 7), xt = sphere_points(150, 3, 8);
  const auto y = labels_of(x, 0.5);
  for (auto kind : {ntk::DeepKind::ntk, ntk::DeepKind::nngp}) {
    ntk::DeepKernelClassifier<ntk::Hermite> clf(ntk::Hermite({0, 0, 1}), 30, kind);
    clf.fit(x, y);
    CHECK(agreement(clf.predict(xt), ntk::nearest_neighbor(x, y, xt)) >= 0.99);
  }
}

TEST_CASE("Deep phi_opt kernel approaches the singular-kernel estimate with alpha = d", "[deep]") {
  const Matrix x = sphere_points(60, 3, 9), xt = sphere_points(200, 3, 10);
  const auto y = labels_of(x, 0.5);
  const ntk::OptimalActivation phi(2);
  const auto singular = ntk::singular_kernel(x, y, xt, ntk::limit_constants(phi).alpha);
  ntk::DeepKernelClassifier<ntk::OptimalActivation> clf(phi, ntk_test::scaled(2000, 500), ntk::DeepKind::nngp);
  clf.fit(x, y);
  const double agree = agreement(clf.predict(xt), singular);
  INFO("agreement " << agree);
  CHECK(agree >= 0.99);
}

TEST_CASE("Multi-class labels, limit classifiers and bad input", "[deep]") {
  const Matrix x = sphere_points(30, 4, 11), xt = sphere_points(20, 4, 12);
  std::vector<int> y;
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    Eigen::Index c;
    x.row(i).head(3).maxCoeff(&c);
    y.push_back(static_cast<int>(c));
  }
  ntk::DeepKernelClassifier<ntk::Erf> clf(ntk::Erf{}, 5);
  clf.fit(x, y);
  const auto p = clf.predict(xt);
  for (int label : p) CHECK((label >= 0 && label <= 2));
  CHECK(clf.predict(x) == y);
  CHECK(ntk::majority_vote({1, -1, 1}, 2) == std::vector<int>{1, 1});
  CHECK(ntk::majority_vote({0, 2, 2, 1}, 1) == std::vector<int>{2});
  REQUIRE_THROWS_AS(clf.fit(x, std::vector<int>(3, 1)), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::DeepKernel<ntk::Relu>(ntk::Relu{}, 0), std::invalid_argument);
  REQUIRE_THROWS_AS(ntk::project_to_sphere(Matrix::Zero(2, 3)), std::invalid_argument);
  ntk::DeepKernelClassifier<ntk::Relu> unfitted(ntk::Relu{}, 3);
  REQUIRE_THROWS_AS(unfitted.predict(xt), std::logic_error);
  REQUIRE_THROWS_AS(ntk::singular_kernel(x, y, xt, -1.0), std::invalid_argument);
}

TEST_CASE("Deep Gram matrices by tiles equal entry() pair by pair in every regime", "[deep]") {
  const Matrix a = sphere_points(37, 3, 8), b = sphere_points(5, 3, 9);  // 37: two full tiles + padding
  auto check = [&](const auto& phi, long depth) {
    for (auto kind : {ntk::DeepKind::ntk, ntk::DeepKind::nngp}) {
      const ntk::DeepKernel<std::decay_t<decltype(phi)>> kernel(phi, depth, kind);
      const auto g = kernel.gram(a, b);
      const Matrix ua = ntk::project_to_sphere(a), ub = ntk::project_to_sphere(b);
      const Matrix cosines = ua * ub.transpose();
      INFO(phi.name() << " depth " << depth);
      for (Eigen::Index j = 0; j < b.rows(); ++j)
        for (Eigen::Index i = 0; i < a.rows(); ++i) {
          const double snap = 1 - 8 * std::numeric_limits<double>::epsilon(), c = cosines(i, j);
          const auto [rho, r] = kernel.entry(c >= snap ? 1.0 : (c <= -snap ? -1.0 : c));
          const ntk::LogNumber& v = kind == ntk::DeepKind::ntk ? r : rho;
          CHECK(g.sign(i, j) == v.sign);
          CHECK(g.log_abs(i, j) == v.log_abs + kernel.log_diagonal());
        }
    }
  };
  check(ntk::Relu{}, 2000);               // plain doubles throughout
  check(ntk::Erf{}, 300);                 // table-free closed form, correlations shrink
  check(ntk::OptimalActivation(2), 400);  // log form and the linear tail
  check(ntk::Tanh{}, 50);                 // the Chebyshev table of the quadrature dual
}
