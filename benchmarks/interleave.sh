#!/usr/bin/env bash
# Compares Google Benchmark binaries on a machine whose speed drifts (shared memory bandwidth):
# runs every binary once per round for R rounds, in turn, the order reversed every other round (so
# that no binary always runs after the same one), and prints each benchmark's minimum and lower
# median real time per binary, then every round's value in round order.  Differences below the
# spread of a binary's own rounds are noise.  A binary that fails or matches nothing stops the
# script with its message (no partial table).
#   benchmarks/interleave.sh ROUNDS FILTER BINARY...
#   e.g. benchmarks/interleave.sh 6 'BM_packed_apply<double>/(1|10)/' /tmp/bench_gram_old build-bench/benchmarks/bench_gram
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 ROUNDS FILTER BINARY..." >&2
  exit 2
fi
rounds=$1 filter=$2
shift 2
binaries=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg); OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}; $rounds rounds"
for round in $(seq "$rounds"); do
  order=("${binaries[@]}")
  if [ $((round % 2)) -eq 0 ]; then
    order=()
    for ((i = ${#binaries[@]} - 1; i >= 0; i--)); do order+=("${binaries[i]}"); done
  fi
  for binary in "${order[@]}"; do
    if ! OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$binary" --benchmark_filter="$filter" >"$work/out" 2>"$work/err"; then
      echo "$0: $binary failed in round $round:" >&2
      cat "$work/err" >&2
      exit 1
    fi
    if ! grep -q '^BM_' "$work/out"; then
      echo "$0: $binary ran no benchmark matching '$filter'" >&2
      exit 1
    fi
    # round, binary, benchmark, real time, unit (tab-separated: paths may hold spaces)
    awk -v round="$round" -v binary="$binary" 'BEGIN { OFS = "\t" } /^BM_/ { print round, binary, $1, $2, $3 }' \
      "$work/out" >>"$work/times"
  done
done
awk -F '\t' '
  { key = $3 "  " $2; times[key] = times[key] " " $4; unit[key] = $5; n[key]++ }
  END {
    for (key in times) {
      split(substr(times[key], 2), t, " ")
      m = n[key]
      for (i = 1; i <= m; i++) s[i] = t[i] + 0
      for (i = 2; i <= m; i++) { v = s[i]; j = i - 1; while (j >= 1 && s[j] > v) { s[j + 1] = s[j]; j-- } s[j + 1] = v }
      printf "%s  min %s  median %s %s  (rounds: %s)\n", key, s[1], s[int((m + 1) / 2)], unit[key], substr(times[key], 2)
    }
  }' "$work/times" | sort
