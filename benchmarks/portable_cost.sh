#!/usr/bin/env bash
# The cost of a portable build: the same kernel and convolution benchmarks built twice from this
# tree, once with -march=native -fno-math-errno (NTK_NATIVE=ON, preset `benchmarks`) and once with
# the compiler's default target (NTK_NATIVE=OFF, what `cmake --install` of a default build ships).
# Prints each benchmark's time in both builds and the ratio portable / native.
#   benchmarks/portable_cost.sh [filter regex]
set -euo pipefail
cd "$(dirname "$0")/.."
filter=${1:-'BM_relu_ntk_fused/4000/3|BM_relu_ntk_fused/4000/10|BM_tanh_ntk_normalized/4000/3|BM_tanh_ntk_unnormalized/4000/3|BM_relu_dual_stream|BM_cnn21_flatten_entry$'}
for variant in native portable; do
  native=ON; [ "$variant" = portable ] && native=OFF
  cmake -S . -B "build-bench-$variant" -DCMAKE_BUILD_TYPE=Release -DNTK_BUILD_BENCHMARKS=ON \
    -DNTK_BUILD_TESTS=OFF -DNTK_BUILD_EXAMPLES=OFF -DNTK_BUILD_TOOLS=OFF -DNTK_NATIVE=$native >/dev/null
  cmake --build "build-bench-$variant" -j 2 --target bench_kernel bench_conv >/dev/null
done
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg); OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}"
for variant in native portable; do
  for b in bench_kernel bench_conv; do
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "build-bench-$variant/benchmarks/$b" --benchmark_filter="$filter" \
      --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
      --benchmark_out="build-bench-$variant/$b.json" --benchmark_out_format=json >/dev/null 2>&1
  done
done
python3 - <<'PY'
import json
times = {}
for variant in ("native", "portable"):
    for b in ("bench_kernel", "bench_conv"):
        for r in json.load(open(f"build-bench-{variant}/{b}.json"))["benchmarks"]:
            if r.get("aggregate_name") == "median":
                times.setdefault(r["run_name"], {})[variant] = (r["real_time"], r["time_unit"])
print(f"{'benchmark (median of 5)':44s} {'native':>12s} {'portable':>12s} {'portable/native':>16s}")
for name, t in times.items():
    (n, unit), (p, _) = t["native"], t["portable"]
    print(f"{name:44s} {n:10.2f}{unit:>2s} {p:10.2f}{unit:>2s} {p / n:16.2f}")
PY
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
