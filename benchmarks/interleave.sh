#!/usr/bin/env bash
# Compares Google Benchmark binaries on a machine whose speed drifts (shared memory bandwidth):
# runs every binary once per round, in turn, for R rounds, and prints each benchmark's minimum and
# (lower) median real time per binary, with every round's value.  Differences below the spread of a
# binary's own rounds are noise.
#   benchmarks/interleave.sh ROUNDS FILTER BINARY...
#   e.g. benchmarks/interleave.sh 6 'BM_packed_apply<double>/(1|10)/' /tmp/bench_gram_old build-bench/benchmarks/bench_gram
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 ROUNDS FILTER BINARY..." >&2
  exit 2
fi
rounds=$1 filter=$2
shift 2
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg); OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}; $rounds rounds"
for _ in $(seq "$rounds"); do
  for binary in "$@"; do
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$binary" --benchmark_filter="$filter" 2>/dev/null |
      awk -v b="$binary" '/^BM_/ {print b, $1, $2, $3}'
  done
done | sort -k2,2 -k1,1 -k3,3g | awk '
  { key = $2 "  " $1; times[key] = times[key] " " $3; count[key]++; unit[key] = $4 }
  END {
    for (key in times) {
      split(substr(times[key], 2), t, " ")
      printf "%s  min %s  median %s %s  (%s)\n", key, t[1], t[int((count[key] + 1) / 2)], unit[key], substr(times[key], 2)
    }
  }' | sort
