// Empirical NTK of a finite network: structured (no Jacobian) against the explicit Jacobian
// contraction J Jᵀ, in the same process.  n = 256, d = 100, width 512, 3 hidden layers, 1 output.
//   build-bench/benchmarks/bench_network
#include <benchmark/benchmark.h>

#include <ntk/network.hpp>

namespace {

using Matrix = Eigen::MatrixXd;

Matrix inputs(Eigen::Index n, Eigen::Index d) {
  return ntk::normal_matrix(n, d, 3);
}

const auto architecture = ntk::mlp(ntk::Relu{}, 3, 512, 1.0, 0.1, 1);

void BM_empirical_ntk_structured(benchmark::State& state) {
  const Matrix x = inputs(256, 100);
  const ntk::Network<ntk::Mlp<ntk::Relu>> net(architecture, 100, 1);
  for (auto _ : state) benchmark::DoNotOptimize(net.empirical_ntk(x, x));
}

void BM_empirical_ntk_explicit_jacobian(benchmark::State& state) {
  const Matrix x = inputs(256, 100);
  const ntk::Network<ntk::Mlp<ntk::Relu>> net(architecture, 100, 1);
  for (auto _ : state) benchmark::DoNotOptimize(net.empirical_ntk_via_jacobian(x, x));
}

void BM_forward_backward_gradient(benchmark::State& state) {
  const Matrix x = inputs(256, 100), y = inputs(256, 1);
  const ntk::Network<ntk::Mlp<ntk::Relu>> net(architecture, 100, 1);
  for (auto _ : state) benchmark::DoNotOptimize(net.gradient(x, y));
}

}  // namespace

BENCHMARK(BM_empirical_ntk_structured)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_empirical_ntk_explicit_jacobian)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_forward_backward_gradient)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
