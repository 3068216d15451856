// PackedGram::apply against its two bounds: one pass over the stored triangle (memory bandwidth)
// and 2·k fused multiply-adds per stored entry (the FMA peak).  BM_stream_read sums an array of
// the triangle's size; BM_stream_read_wide reads the same bytes with 8 partial sums per thread
// (the plain read's one add chain per thread can be the limit), the closer bandwidth bound;
// BM_fma_peak is one core's FMA rate with Eigen's widest packet (flops/s; times the threads for
// the machine).  BM_packed_apply/k/storage multiplies the packed Gram matrix by n x k right-hand
// sides (k = 1 for CG on one target, 10 for one-hot Fashion-MNIST, 4 and 16 around it).  The
// product's bound is max(read time, 4·k·entries / (threads · peak flops/s)), entries = bytes /
// sizeof(storage); compare within one run.  n from NTK_BENCH_GRAM_N (default 20,000: 1.6 GB double).
#include <benchmark/benchmark.h>

#include <ntk/gram.hpp>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

namespace {

Eigen::Index gram_n() {
  const char* s = std::getenv("NTK_BENCH_GRAM_N");
  return s ? std::atol(s) : 20000;
}

template <class Storage>
const ntk::PackedGram<double, Storage>& packed() {
  static const auto gram = [] {
    auto g = std::make_unique<ntk::PackedGram<double, Storage>>(gram_n());
    // Any symmetric content: the product's cost does not depend on the values.
    g->fill([](Eigen::Index c0, Eigen::Index c1, Eigen::Ref<Eigen::MatrixXd> out) {
      for (Eigen::Index j = 0; j < c1 - c0; ++j)
        for (Eigen::Index i = 0; i < c1; ++i)
          out(i, j) = 1.0 / (1.0 + static_cast<double>(i > c0 + j ? i - c0 - j : c0 + j - i));
    });
    return g;
  }();
  return *gram;
}

template <class Storage>
void BM_stream_read(benchmark::State& state) {
  const auto& g = packed<Storage>();
  const std::size_t count = g.bytes() / sizeof(Storage);
  const Storage* data = g.block_data(0);
  for (auto _ : state) {
    double total = 0;
#if defined(_OPENMP)
#pragma omp parallel for reduction(+ : total) schedule(static)
#endif
    for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(count); ++i) total += data[i];
    benchmark::DoNotOptimize(total);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(g.bytes()));
}

// The same bytes summed into 8 independent partial sums per thread (vectorized): BM_stream_read's
// single dependent add chain per thread can itself be the limit (on Zen 5 the k = 1 product runs
// faster than it), so this is the closer bandwidth bound.
template <class Storage>
void BM_stream_read_wide(benchmark::State& state) {
  const auto& g = packed<Storage>();
  const std::ptrdiff_t count = static_cast<std::ptrdiff_t>(g.bytes() / sizeof(Storage)), lanes = 8;
  const Storage* data = g.block_data(0);
  for (auto _ : state) {
    double total = 0;
#if defined(_OPENMP)
#pragma omp parallel reduction(+ : total)
#endif
    {
      double part[8] = {};
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
      for (std::ptrdiff_t i = 0; i < count / lanes; ++i)
        for (std::ptrdiff_t l = 0; l < lanes; ++l) part[l] += static_cast<double>(data[i * lanes + l]);
      for (const double p : part) total += p;
    }
    for (std::ptrdiff_t i = count / lanes * lanes; i < count; ++i) total += static_cast<double>(data[i]);
    benchmark::DoNotOptimize(total);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(g.bytes()));
}

// 12 independent multiply-add chains of packets on one core (enough to cover the FMA latency).
template <class Scalar>
void BM_fma_peak(benchmark::State& state) {
  using Packet = typename Eigen::internal::packet_traits<Scalar>::type;
  constexpr int lanes = Eigen::internal::packet_traits<Scalar>::size, chains = 12;
  constexpr std::int64_t steps = 1 << 22;
  const Packet a = Eigen::internal::pset1<Packet>(Scalar(0.999999)), b = Eigen::internal::pset1<Packet>(Scalar(1e-9));
  Packet acc[chains];
  for (auto& x : acc) x = Eigen::internal::pset1<Packet>(Scalar(1));
  for (auto _ : state) {
    for (std::int64_t s = 0; s < steps; ++s)
      for (auto& x : acc) x = Eigen::internal::pmadd(x, a, b);
    benchmark::DoNotOptimize(acc);
  }
  state.counters["flops"] =
      benchmark::Counter(2.0 * lanes * chains * static_cast<double>(steps) * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}

template <class Storage>
void BM_packed_apply(benchmark::State& state) {
  const auto& g = packed<Storage>();
  const Eigen::Index k = state.range(0);
  const Eigen::MatrixXd v = Eigen::MatrixXd::Random(g.rows(), k);
  Eigen::MatrixXd out(g.rows(), k);
  for (auto _ : state) {
    g.apply(v, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(g.bytes()));
}

BENCHMARK_TEMPLATE(BM_fma_peak, double)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_stream_read, double)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_stream_read_wide, double)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_packed_apply, double)
    ->Arg(1)
    ->Arg(4)
    ->Arg(10)
    ->Arg(16)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_TEMPLATE(BM_stream_read, float)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_stream_read_wide, float)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_packed_apply, float)
    ->Arg(1)
    ->Arg(4)
    ->Arg(10)
    ->Arg(16)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
