// Neural Tangents' CNN benchmark (its README's performance table): one NTK entry of a 21-layer
// CNN, [Conv(1, (3, 3), (1, 1), 'SAME'), Relu] x 21, then GlobalAvgPool or Flatten and a Dense
// readout, on 32x32x3 float64 images.  Against the same architecture through the generic P x P'
// engine (an identity AvgPool before the readout forces it), in the same process.
//   build/benchmarks/bench_conv --benchmark_counters_tabular=true
// Cost model (P = 1024 pixels, L = 21, filter k = 3x3): with GlobalAvgPool every pixel pair, P² L
// entry-layers (22M) of 2 x (3 + 3) adds (separable taps on Σ and Θ) + one ReLU dual; with Flatten
// matching pixels only, P L (21.5k).  The bound quoted in the README is the ReLU dual alone at its
// measured vectorized speed (BM_relu_dual_stream) times the entry-layer count.
#include <benchmark/benchmark.h>

#include <ntk/conv.hpp>

#include <random>
#include <vector>

namespace {

ntk::ImageArchitecture cnn21(bool global_pool, bool generic_engine) {
  std::vector<ntk::ImageArchitecture::Layer> layers;
  ntk::Conv conv;
  conv.channels = 1;
  conv.sigma_w = 1;
  conv.sigma_b = 0;
  for (int l = 0; l < 21; ++l) {
    layers.push_back(conv);
    layers.push_back(ntk::ImageActivation(ntk::Relu{}));
  }
  if (generic_engine) layers.push_back(ntk::AvgPool{1, 1, 1, 1, ntk::Padding::valid});
  if (global_pool)
    layers.push_back(ntk::GlobalAvgPool{});
  else
    layers.push_back(ntk::Flatten{});
  layers.push_back(ntk::Dense(1.0, 0.0, 1));
  return ntk::ImageArchitecture({32, 32, 3}, layers);
}

Eigen::MatrixXd images(Eigen::Index n) {
  std::mt19937_64 gen(7);
  std::normal_distribution<double> normal;
  Eigen::MatrixXd x(n, 32 * 32 * 3);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = normal(gen);
  return x;
}

/// One entry: the pair recursion for two images whose diagonal chains are already known
/// (in a Gram matrix the chains cost one pass per image, shared by its n entries).
void entry(benchmark::State& state, bool global_pool, bool generic_engine) {
  const ntk::ImageArchitecture arch = cnn21(global_pool, generic_engine);
  const Eigen::MatrixXd x = images(2);
  const Eigen::VectorXd a = x.row(0).transpose(), b = x.row(1).transpose();
  ntk::detail::ImagePairEngine engine(arch, {});
  ntk::detail::ImageChain ca, cb;
  engine.run(a.data(), a.data(), nullptr, nullptr, &ca);
  engine.run(b.data(), b.data(), nullptr, nullptr, &cb);
  for (auto _ : state) benchmark::DoNotOptimize(engine.run(a.data(), b.data(), &ca, &cb, nullptr));
  const double pixels = 1024, layers = 21;
  state.counters["entry_layers_per_s"] = benchmark::Counter(global_pool ? pixels * pixels * layers : pixels * layers,
                                                            benchmark::Counter::kIsIterationInvariantRate);
}
void BM_cnn21_gap_entry(benchmark::State& s) {
  entry(s, true, false);
}
void BM_cnn21_gap_entry_generic_engine(benchmark::State& s) {
  entry(s, true, true);
}
void BM_cnn21_flatten_entry(benchmark::State& s) {
  entry(s, false, false);
}
void BM_cnn21_flatten_entry_generic_engine(benchmark::State& s) {
  entry(s, false, true);
}

/// A whole n x n Gram matrix on both cores (chains included); time per distinct entry.
void gram(benchmark::State& state, bool global_pool) {
  const ntk::ImageArchitecture arch = cnn21(global_pool, false);
  const Eigen::Index n = state.range(0);
  const Eigen::MatrixXd x = images(n);
  ntk::ImageKernelOptions options;
  options.threads = 2;
  for (auto _ : state) benchmark::DoNotOptimize(ntk::image_kernel(arch, x, ntk::KernelKind::ntk, options));
  const double distinct = static_cast<double>(n * (n + 1) / 2);
  state.counters["entries_per_s"] = benchmark::Counter(distinct, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["s_per_entry"] =
      benchmark::Counter(distinct, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
void BM_cnn21_gap_gram_2threads(benchmark::State& s) {
  gram(s, true);
}
void BM_cnn21_flatten_gram_2threads(benchmark::State& s) {
  gram(s, false);
}

/// The ReLU dual alone over a stream of entries: the floor of the per-entry activation cost.
void BM_relu_dual_stream(benchmark::State& state) {
  const std::size_t n = 1 << 20;
  std::vector<double> s(n), t(n, 1.0), v(n + 1, 0.9), r(n + 1, 1.1);
  for (std::size_t i = 0; i < n; ++i) s[i] = 0.5 * std::sin(0.01 * static_cast<double>(i));
  const ntk::Relu phi;
  for (auto _ : state) {
    for (std::size_t i = 0; i < n; ++i) {
      auto d = phi.unit_dual(s[i] * v[i] * v[i + 1] * 0.999);
      s[i] = d.t * r[i] * r[i + 1] * 0.9;
      t[i] *= d.t_dot;
    }
    benchmark::DoNotOptimize(s.data());
    benchmark::DoNotOptimize(t.data());
  }
  state.counters["entries_per_s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_relu_dual_stream)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_cnn21_gap_entry)->Unit(benchmark::kMillisecond)->MinTime(2);
BENCHMARK(BM_cnn21_gap_entry_generic_engine)->Unit(benchmark::kMillisecond)->MinTime(2);
BENCHMARK(BM_cnn21_gap_gram_2threads)->Arg(4)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2);
BENCHMARK(BM_cnn21_flatten_entry)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_cnn21_flatten_entry_generic_engine)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_cnn21_flatten_gram_2threads)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
