#!/usr/bin/env bash
# Fashion-MNIST kernel regression with `ntk predict` (ReLU NTK and NNGP, depth 3, sigma_w = sqrt 2,
# sigma_b = 0.1, one-hot targets through --labels, t = inf): test accuracy, wall time and peak memory
# (/usr/bin/time -v) for each training size, and at N_SCIPY points the SciPy Cholesky baseline on
# the same .npy files.  Needs dataset-fashion-mnist and python3-numpy/scipy.
# Usage: benchmarks/fashion_mnist/run.sh [path/to/ntk] [sizes...]   (default 5000 10000 20000 60000)
# Environment: RIDGE (default 1e-4, absolute), SOLVER (auto), TOLERANCE (1e-4: CG's relative residual,
# ample for an argmax read-out; the dense paths ignore it), N_SCIPY (4000), WORK (a temp dir).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ntk=${1:-build/tools/ntk/ntk}
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(5000 10000 20000 60000)
ridge=${RIDGE:-1e-4}
solver=${SOLVER:-auto}
tolerance=${TOLERANCE:-1e-4}
work=${WORK:-$(mktemp -d)}
n_scipy=${N_SCIPY:-4000}
/usr/bin/python3 "$here/prepare.py" "$work" "${sizes[@]}" "$n_scipy"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in "${sizes[@]}"; do
  for kind in ntk nngp; do
    /usr/bin/time -v "$ntk" predict --train "$work/train_x_$n.npy" --train-targets "$work/train_labels_$n.npy" \
      --test "$work/test_x.npy" --test-targets "$work/test_labels.npy" --labels --kernel $kind \
      --depth 3 --sigma-w 1.4142135623730951 --sigma-b 0.1 --diag-reg "$ridge" --solver "$solver" --tolerance "$tolerance" --progress \
      --out "$work/pred_${kind}_$n.csv" 2>"$work/log_${kind}_$n.txt" || true
    acc=$(grep -o "accuracy=[0-9.]*" "$work/log_${kind}_$n.txt" | tail -1)
    wall=$(grep "Elapsed (wall" "$work/log_${kind}_$n.txt" | awk '{print $NF}')
    rss=$(grep "Maximum resident" "$work/log_${kind}_$n.txt" | awk '{printf "%.2f GB", $NF / 1048576}')
    echo "n=$n kernel=$kind $acc wall=$wall peak=$rss solver: $(grep -m1 'ntk: solver' "$work/log_${kind}_$n.txt" | cut -c1-80)"
    grep -E "ntk: (cg|cholesky|chebyshev) " "$work/log_${kind}_$n.txt" || true
  done
done
# t = inf at N_SCIPY points: ntk predict (Cholesky) end to end vs the SciPy script, same session.
start=$(date +%s.%N)
"$ntk" predict --train "$work/train_x_$n_scipy.npy" --train-targets "$work/train_labels_$n_scipy.npy" \
  --test "$work/test_x.npy" --test-targets "$work/test_labels.npy" --labels --depth 3 \
  --sigma-w 1.4142135623730951 --sigma-b 0.1 --diag-reg "$ridge" --solver cholesky --quiet --out "$work/p.csv"
mid=$(date +%s.%N)
/usr/bin/python3 "$here/scipy_cholesky.py" "$work/train_x_$n_scipy.npy" "$work/train_labels_$n_scipy.npy" \
  "$work/test_x.npy" "$work/test_labels.npy" 3 1.4142135623730951 0.1 "$ridge"
end=$(date +%s.%N)
echo "n=$n_scipy t=inf end to end: ntk $(echo "$mid - $start" | bc) s, scipy $(echo "$end - $mid" | bc) s, ratio scipy/ntk $(echo "($end - $mid) / ($mid - $start)" | bc -l | cut -c1-5)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
