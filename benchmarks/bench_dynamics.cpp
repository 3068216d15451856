// Closed-form dynamics: one eigendecomposition of an n = 2000 kernel, then 100 time points for
// 500 test inputs from one projection.  Built twice: with Eigen's own eigensolver and, where
// liblapacke is available, with EIGEN_USE_LAPACKE (bench_dynamics_lapacke).
#include <benchmark/benchmark.h>

#include <ntk/dynamics.hpp>
#include <ntk/kernel.hpp>
#include <ntk/random.hpp>

namespace {

using Matrix = Eigen::MatrixXd;

Matrix inputs(Eigen::Index n, Eigen::Index d, std::uint64_t seed) {
  return ntk::normal_matrix(n, d, seed);
}

struct Data {
  Matrix g, gt, y;
  Data() {
    const Matrix x = inputs(2000, 20, 1), xt = inputs(500, 20, 2);
    const auto net = ntk::mlp(ntk::Relu{}, 3);
    g = ntk::ntk_kernel(net, x);
    gt = ntk::ntk_kernel(net, xt, x);
    y = inputs(2000, 2, 3);
  }
};
const Data& data() {
  static const Data d;
  return d;
}

void BM_eigendecomposition(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(ntk::LinearizedDynamics<>(data().g, data().y));
}

void BM_project_500_test_points(benchmark::State& state) {
  const ntk::LinearizedDynamics<> dyn(data().g, data().y);
  for (auto _ : state) benchmark::DoNotOptimize(dyn.project(data().gt));
}

void BM_100_times_500_test_points(benchmark::State& state) {
  const ntk::LinearizedDynamics<> dyn(data().g, data().y);
  const auto projection = dyn.project(data().gt);
  std::vector<double> times;
  for (int i = 0; i < 100; ++i) times.push_back(0.01 * (i + 1));
  for (auto _ : state) benchmark::DoNotOptimize(dyn.test_predictions(projection, times));
}

}  // namespace

BENCHMARK(BM_eigendecomposition)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_project_500_test_points)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_100_times_500_test_points)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
