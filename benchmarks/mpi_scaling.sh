#!/usr/bin/env bash
# Ranks x threads 1x1, 2x1, 1x2 for the distributed Gram (kernel phase, K.V products), then the
# ScaLAPACK paths against Eigen's eigensolver.  Ratios are against the 1x1 run of this session.
#   benchmarks/mpi_scaling.sh [build dir] [n] [d]
# Needs a build with -DNTK_MPI=ON -DNTK_BUILD_BENCHMARKS=ON (target bench_mpi).
set -euo pipefail
build=${1:-build-mpi}
n=${2:-8000}
d=${3:-784}
bench="$build/benchmarks/bench_mpi"
# Open MPI: consent to run as root (containers), more ranks than cores, no pinning (1x2 needs both
# cores for one rank); one BLAS thread per rank.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
run() { OMP_NUM_THREADS=$2 mpirun --oversubscribe --bind-to none -np "$1" "$bench" "${@:3}"; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
base=""
for cfg in "1 1" "2 1" "1 2"; do
  set -- $cfg
  line=$(run "$1" "$2" gram "$n" "$d" 10 20)
  echo "$line"
  kernel=$(echo "$line" | field kernel_s)
  product=$(echo "$line" | field product_s)
  if [ -z "$base" ]; then base="$kernel $product"; fi
  set -- $base
  awk -v k="$kernel" -v p="$product" -v k1="$1" -v p1="$2" -v c="$cfg" \
    'BEGIN { printf "ranks x threads %s: kernel phase %.2fx, product %.2fx faster than 1x1\n", c, k1 / k, p1 / p }'
done
m=${NTK_BENCH_DENSE_N:-3000}
echo "# dense dynamics at n = $m"
OMP_NUM_THREADS=1 run 1 1 eigen-serial "$m" "$d"
for ranks in 1 2; do
  run "$ranks" 1 eigen "$m" "$d"
  run "$ranks" 1 cholesky "$m" "$d" 10
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
