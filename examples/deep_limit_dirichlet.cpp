// The experiment of Radhakrishnan, Belkin & Uhler: two classes drawn from Dirichlet distributions
// on the simplex in R^3, mapped to the unit sphere (d = 2), prior 0.4 for the first class.  Prints
// the Bayes-optimal accuracy (from the Dirichlet densities), the limit classifiers and the deep
// kernel classifiers.  Usage: deep_limit_dirichlet [--small] [--full]
#include <ntk/deep_limit.hpp>
#include <ntk/random.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Matrix = Eigen::MatrixXd;

/// Gamma(shape, 1) by Marsaglia–Tsang, with the boost U^{1/shape} for shape < 1.
double gamma_sample(ntk::NormalGenerator& g, double shape) {
  if (shape < 1) return gamma_sample(g, shape + 1) * std::pow(g.uniform(), 1 / shape);
  const double d = shape - 1.0 / 3, c = 1 / std::sqrt(9 * d);
  while (true) {
    double z, v;
    do {
      z = g.normal();
      v = 1 + c * z;
    } while (v <= 0);
    v = v * v * v;
    const double u = g.uniform();
    if (std::log(u) < 0.5 * z * z + d - d * v + d * std::log(v)) return d * v;
  }
}

double log_dirichlet(const Eigen::Vector3d& p, const Eigen::Vector3d& a) {
  double r = std::lgamma(a.sum());
  for (int i = 0; i < 3; ++i) r += (a[i] - 1) * std::log(p[i]) - std::lgamma(a[i]);
  return r;
}

struct Data {
  Matrix simplex, x;
  std::vector<int> y;
};

const Eigen::Vector3d alpha_1(0.5, 0.5, 2.5), alpha_2(2.5, 0.1, 0.5);
constexpr double prior = 0.4;

Data draw(long n, std::uint64_t seed) {
  ntk::NormalGenerator g(seed);
  Data data;
  data.simplex.resize(n, 3);
  for (long i = 0; i < n; ++i) {
    const bool first = g.uniform() < prior;
    const Eigen::Vector3d& a = first ? alpha_1 : alpha_2;
    Eigen::Vector3d p;
    for (int k = 0; k < 3; ++k) p[k] = std::max(gamma_sample(g, a[k]), 1e-300);
    p /= p.sum();
    data.simplex.row(i) = p.transpose();
    data.y.push_back(first ? 1 : -1);
  }
  data.x = ntk::project_to_sphere(data.simplex);
  return data;
}

double seconds(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

template <class Phi>
void deep_row(const char* name, const Phi& phi, long depth, ntk::DeepKind kind, const Data& train, const Data& test) {
  const auto t0 = std::chrono::steady_clock::now();
  ntk::DeepKernelClassifier<Phi> clf(phi, depth, kind);
  clf.fit(train.x, train.y);
  const double acc = ntk::accuracy(clf.predict(test.x), test.y);
  std::printf("%-46s %8.4f  (%.1f s)\n",
              (std::string(name) + (kind == ntk::DeepKind::ntk ? " NTK" : " NNGP") + ", depth " + std::to_string(depth))
                  .c_str(),
              acc, seconds(t0));
}

}  // namespace

int main(int argc, char** argv) {
  bool small = false, full = false;
  for (int i = 1; i < argc; ++i) {
    small = small || std::strcmp(argv[i], "--small") == 0;
    full = full || std::strcmp(argv[i], "--full") == 0;
  }
  const long n = small ? 150 : 1000;
  const Data train = draw(n, 1), test = draw(n, 2);
  std::printf(
      "Dirichlet classes on the sphere in R^3 (d = 2): alpha1 = (0.5, 0.5, 2.5), alpha2 = (2.5, 0.1, 0.5), "
      "prior %.1f; %ld train / %ld test\n\n",
      prior, n, n);
  std::vector<int> bayes;
  for (long i = 0; i < n; ++i) {
    const Eigen::Vector3d p = test.simplex.row(i).transpose();
    bayes.push_back(std::log(prior) + log_dirichlet(p, alpha_1) > std::log(1 - prior) + log_dirichlet(p, alpha_2) ? 1
                                                                                                                  : -1);
  }
  const ntk::OptimalActivation opt(2);
  std::printf("%-46s %8.4f\n", "Bayes-optimal (Dirichlet densities)", ntk::accuracy(bayes, test.y));
  std::printf("%-46s %8.4f\n", "singular-kernel estimate, alpha = d = 2",
              ntk::accuracy(ntk::singular_kernel(train.x, train.y, test.x, 2.0), test.y));
  std::printf("%-46s %8.4f\n", "1-nearest neighbour",
              ntk::accuracy(ntk::nearest_neighbor(train.x, train.y, test.x), test.y));
  const auto majority = ntk::majority_vote(train.y, n);
  std::printf("%-46s %8.4f\n", "majority vote", ntk::accuracy(majority, test.y));
  const long depth = small ? 30 : 100;
  for (auto kind : {ntk::DeepKind::nngp, ntk::DeepKind::ntk}) {
    deep_row("deep phi_opt(d=2)", opt, depth, kind, train, test);
    deep_row("deep erf", ntk::Erf{}, depth, kind, train, test);
    deep_row("deep ReLU", ntk::Relu{}, depth, kind, train, test);
  }
  // ReLU's deep NTK tends to majority vote; how fast depends on the number of training points.
  const long relu_n = small ? 30 : 100, relu_depth = small ? 3000 : 30000;
  const Data few(draw(relu_n, 3));
  const auto t0 = std::chrono::steady_clock::now();
  ntk::DeepKernelClassifier<ntk::Relu> relu(ntk::Relu{}, relu_depth, ntk::DeepKind::ntk);
  relu.fit(few.x, few.y);
  const double agree = ntk::accuracy(relu.predict(test.x), ntk::majority_vote(few.y, n));
  std::printf("\ndeep ReLU NTK, %ld training points, depth %ld: agrees with majority vote on %.1f%% (%.1f s)\n", relu_n,
              relu_depth, 100 * agree, seconds(t0));
  if (full) {
    const auto t1 = std::chrono::steady_clock::now();
    ntk::DeepKernelClassifier<ntk::Relu> big(ntk::Relu{}, 10000, ntk::DeepKind::ntk);
    big.fit(train.x, train.y);
    std::printf("deep ReLU NTK, %ld training points, depth 10000: agrees with majority vote on %.1f%% (%.1f s)\n", n,
                100 * ntk::accuracy(big.predict(test.x), majority), seconds(t1));
  }
  return 0;
}
