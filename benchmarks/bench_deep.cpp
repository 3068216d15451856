// The deep-limit ReLU NTK (normalized, log scale, depths to 1e5) against the plain ReLU NTK of
// kernel.hpp at the same depth and sizes, both between two different sets of points (no symmetry
// saving on either side), as cost per entry-layer.  Issue 15's target: the deep kernel within 2x.
//   build-bench/benchmarks/bench_deep --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <ntk/deep_limit.hpp>
#include <ntk/kernel.hpp>

#include <random>

namespace {

Eigen::MatrixXd sphere(Eigen::Index n, Eigen::Index d, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal;
  Eigen::MatrixXd x(n, d);
  for (Eigen::Index i = 0; i < n; ++i)
    for (Eigen::Index j = 0; j < d; ++j) x(i, j) = std::abs(normal(gen));  // the positive orthant
  x.rowwise().normalize();
  return x;
}

void count(benchmark::State& state) {
  state.counters["entry_layers_per_s"] =
      benchmark::Counter(static_cast<double>(state.range(0) * state.range(0) * state.range(1)),
                         benchmark::Counter::kIsIterationInvariantRate);
}

void BM_plain_relu_ntk(benchmark::State& state) {
  const Eigen::MatrixXd a = sphere(state.range(0), 50, 1), b = sphere(state.range(0), 50, 2);
  const auto net = ntk::mlp(ntk::Relu{}, state.range(1), 0, 1.0, 1.0);
  for (auto _ : state) benchmark::DoNotOptimize(ntk::ntk_kernel(net, a, b));
  count(state);
}

void BM_deep_relu_ntk(benchmark::State& state) {
  const Eigen::MatrixXd a = sphere(state.range(0), 50, 1), b = sphere(state.range(0), 50, 2);
  const ntk::DeepKernel<ntk::Relu> kernel(ntk::Relu{}, state.range(1));
  for (auto _ : state) benchmark::DoNotOptimize(kernel.gram(a, b));
  count(state);
}

}  // namespace

BENCHMARK(BM_plain_relu_ntk)->Args({400, 2000})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_deep_relu_ntk)->Args({400, 2000})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
