// Analytic ReLU/tanh NTK Gram matrices: the fused library path against a layer-by-layer baseline
// over whole n x n arrays (how NumPy code computes it), in the same process.
//   build-bench/benchmarks/bench_kernel --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <cmath>
#include <map>
#include <ntk/kernel.hpp>
#include <random>

namespace {

using Matrix = Eigen::MatrixXd;
using Array = Eigen::ArrayXXd;

Matrix inputs(Eigen::Index n, Eigen::Index d, bool normalize) {
  std::mt19937_64 gen(42);
  std::normal_distribution<double> normal;
  Matrix x(n, d);
  for (Eigen::Index i = 0; i < n; ++i)
    for (Eigen::Index j = 0; j < d; ++j) x(i, j) = normal(gen);
  if (normalize) x.rowwise().normalize();
  return x;
}

// Baseline: layer by layer over n x n arrays, sigma_w = sigma_b = 1.
Matrix relu_ntk_layer_by_layer(const Matrix& x, int depth) {
  const double pi = 3.141592653589793;
  const Eigen::Index n = x.rows();
  Array sigma = (x * x.transpose()).array() / static_cast<double>(x.cols()) + 1.0;
  Array theta_ntk = sigma;
  for (int l = 0; l < depth; ++l) {
    const Eigen::ArrayXd diag = sigma.matrix().diagonal().array();
    const Eigen::ArrayXd root = diag.sqrt();
    const Array norms = (root.matrix() * root.matrix().transpose()).array();
    const Array rho = (sigma / norms).min(1.0).max(-1.0);
    const Array angle = rho.acos();
    const Array t = norms / (2 * pi) * ((1 - rho * rho).sqrt() + (pi - angle) * rho);
    const Array t_dot = (pi - angle) / (2 * pi);
    sigma = t + 1.0;
    theta_ntk = sigma + t_dot * theta_ntk;
  }
  (void)n;
  return theta_ntk.matrix();
}

void BM_relu_ntk_baseline(benchmark::State& state) {
  const Matrix x = inputs(state.range(0), 100, false);
  for (auto _ : state) benchmark::DoNotOptimize(relu_ntk_layer_by_layer(x, static_cast<int>(state.range(1))));
  state.counters["entry_layers_per_s"] =
      benchmark::Counter(static_cast<double>(state.range(0) * state.range(0) * state.range(1)),
                         benchmark::Counter::kIsIterationInvariantRate);
}

template <class Phi>
void run_ntk(benchmark::State& state, bool normalize, const ntk::KernelOptions& options = {}) {
  const Matrix x = inputs(state.range(0), 100, normalize);
  const auto net = ntk::mlp(Phi{}, state.range(1), 0, 1.0, 1.0);
  for (auto _ : state) benchmark::DoNotOptimize(ntk::ntk_kernel(net, x, options));
  state.counters["entry_layers_per_s"] =
      benchmark::Counter(static_cast<double>(state.range(0) * state.range(0) * state.range(1)),
                         benchmark::Counter::kIsIterationInvariantRate);
}

ntk::KernelOptions with_series_tolerance(double tolerance) {
  ntk::KernelOptions options;
  options.dual.series_tolerance = tolerance;
  return options;
}

ntk::KernelOptions with_quadrature_order(int order) {
  ntk::KernelOptions options;
  options.dual.quadrature_order = order;
  return options;
}

void BM_relu_ntk_fused(benchmark::State& state) {
  run_ntk<ntk::Relu>(state, false);
}
void BM_relu_ntk_fused_normalized(benchmark::State& state) {
  run_ntk<ntk::Relu>(state, true);
}
void BM_tanh_ntk_normalized(benchmark::State& state) {
  run_ntk<ntk::Tanh>(state, true);
}
// Different norms (|x|²/d = 1 ± 0.14, first-layer variance about 2): the Hermite series.
void BM_tanh_ntk_unnormalized(benchmark::State& state) {
  run_ntk<ntk::Tanh>(state, false);
}
// The cost/accuracy trade-off of the series: tolerance 10^-range(2); the counter max_rel_error is
// the largest relative error of Θ on the first 24 inputs against direct 2-D quadrature of order 512
// (computed once, outside the timing).
void BM_tanh_ntk_unnormalized_series_tolerance(benchmark::State& state) {
  const ntk::KernelOptions options = with_series_tolerance(std::pow(10.0, -static_cast<double>(state.range(2))));
  const auto net = ntk::mlp(ntk::Tanh{}, state.range(1), 0, 1.0, 1.0);
  const Matrix subset = inputs(state.range(0), 100, false).topRows(24);
  static std::map<long, Matrix> references;  // per depth
  if (references.count(state.range(1)) == 0)
    references[state.range(1)] = ntk::ntk_kernel(net, subset, with_quadrature_order(512));
  const Matrix& reference = references[state.range(1)];
  const Matrix approximate = ntk::ntk_kernel(net, subset, options);
  state.counters["max_rel_error"] = ((approximate - reference).array().abs() / reference.array().abs()).maxCoeff();
  run_ntk<ntk::Tanh>(state, false, options);
}
// The same by direct 2-D quadrature per entry (an explicit order turns the series off).
void BM_tanh_ntk_unnormalized_direct_quadrature_order_256(benchmark::State& state) {
  run_ntk<ntk::Tanh>(state, false, with_quadrature_order(256));
}

// Issue 18: n rows of different norms (variances about 1) plus range(1) far rows of first-layer
// variance about 5000 (norm 70 sqrt(d)), tanh depth 3.  The far rows' entries take the per-entry
// saturating rule, the rest the series; before, one far row sent every entry of the layer to
// per-entry quadrature (1,500 rows: over 12 minutes).
void BM_tanh_ntk_far_rows(benchmark::State& state) {
  Matrix x = inputs(state.range(0), 100, false);
  for (Eigen::Index i = 0; i < state.range(1); ++i) x.row(i) *= 70.0;
  const auto net = ntk::mlp(ntk::Tanh{}, 3, 0, 1.0, 0.1);
  for (auto _ : state) benchmark::DoNotOptimize(ntk::kernel(net, x, ntk::KernelKind::ntk).ntk.data());
}

}  // namespace

BENCHMARK(BM_tanh_ntk_far_rows)
    ->Args({1500, 0})
    ->Args({1500, 1})
    ->Args({1500, 10})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_relu_ntk_baseline)->Args({4000, 3})->Args({4000, 10})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_relu_ntk_fused)->Args({4000, 3})->Args({4000, 10})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_relu_ntk_fused_normalized)->Args({4000, 10})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_tanh_ntk_normalized)->Args({4000, 3})->Args({4000, 10})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_tanh_ntk_unnormalized)->Args({4000, 3})->Args({4000, 10})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_tanh_ntk_unnormalized_series_tolerance)
    ->Args({4000, 10, 13})
    ->Args({4000, 10, 12})
    ->Args({4000, 10, 10})
    ->Args({4000, 10, 8})
    ->Args({4000, 10, 6})
    ->Args({4000, 10, 4})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_tanh_ntk_unnormalized_direct_quadrature_order_256)
    ->Args({60, 3})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_MAIN();
