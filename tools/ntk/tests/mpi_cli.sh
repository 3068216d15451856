#!/usr/bin/env bash
# mpi_cli.sh NTK DATA WORK MPIEXEC [MPIEXEC FLAGS...]: the tool built with NTK_MPI under mpiexec at
# 2 and 3 ranks.  `ntk predict` gives the single-process predictions to 1e-9 (eigendecomposition
# path: times 1, 10, inf; Cholesky path: t = inf with a ridge; NNGP, discrete time; --solver eigen
# forced; --solver cg: CG and Chebyshev on the distributed triangle against the same solvers in one
# process; --variance, NTK-GP and NNGP-GP, continuous and discrete; --architecture image kernels on
# the eigen and Cholesky paths; --storage float on a dense path), writes them once and prints its results once; --quiet leaves only the results on
# stderr; every error is one "ntk: error:" line, status 2, no output file, and nothing hangs (each
# run is bounded by `timeout`).
set -u
# shellcheck source=scenarios.sh
source "$(dirname "$0")/scenarios.sh"  # compare
ntk=$1 data=$2 work=$3
shift 3
mpiexec=("$@")
mkdir -p "$work"
# Small 6x6x1 images for --architecture: 36 pixels and a ±1 target per row (awk's generator,
# seeded: the same files for both tools).
images() {
  awk -v seed="$1" -v rows="$2" 'BEGIN { srand(seed); for (r = 0; r < rows; r++) { line = "";
    for (p = 0; p < 36; p++) line = line sprintf("%.6f,", rand() - 0.5); print line (rand() < 0.5 ? -1 : 1) } }'
}
images 7 36 >"$work/images_train.csv"
images 8 10 >"$work/images_test.csv"
# Two features, a target: the linear kernel of these points has rank 2.
awk 'BEGIN { srand(11); for (r = 0; r < 40; r++) print rand() - 0.5 "," rand() - 0.5 "," rand() - 0.5 }' \
  >"$work/rank2_train.csv"
awk 'BEGIN { srand(12); for (r = 0; r < 5; r++) print rand() - 0.5 "," rand() - 0.5 }' >"$work/rank2_test.csv"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
run() { timeout 120 "${mpiexec[@]}" -n "$1" "$ntk" "${@:2}"; }
# `ntk predict ARGS...` in one process (stderr in serial_err.txt) and on $ranks ranks (stderr in
# err.txt): fails naming LABEL unless both succeed with the same predictions to 1e-9.
predict_both() {
  local label=$1
  shift
  "$ntk" predict "$@" --out "$work/serial.csv" 2>"$work/serial_err.txt" || fail "serial predict $label"
  rm -f "$work/mpi.csv"
  run "$ranks" predict "$@" --out "$work/mpi.csv" 2>"$work/err.txt" ||
    fail "$ranks ranks, $label: status $?: $(cat "$work/err.txt")"
  compare "$work/serial.csv" "$work/mpi.csv" 1e-9 || fail "$ranks ranks, $label: predictions differ from one process"
}
# After predict_both: the results (t= lines) printed by both runs are the same.
same_scores() {
  [ "$(grep '^t=' "$work/err.txt")" = "$(grep '^t=' "$work/serial_err.txt")" ] ||
    fail "$ranks ranks, $1: scores differ: $(grep '^t=' "$work/err.txt") vs $(grep '^t=' "$work/serial_err.txt")"
}

for ranks in 2 3; do
  for case in "--time 1,10,inf" "--time inf --diag-reg 0.01" "--kernel nngp --discrete --lr 0.01 --time 5,inf" \
    "--solver eigen --time inf --diag-reg 0.01" "--solver cg --tolerance 1e-13 --time inf --diag-reg 0.01" \
    "--solver cg --tolerance 1e-13 --preconditioner-rank 0 --time 1,10,inf --diag-reg 0.001" \
    "--solver cg --tolerance 1e-12 --discrete --lr 0.01 --time 5,50" "--variance --time 1,10,inf" \
    "--variance --kernel nngp --diag-reg 0.01 --time 1,inf" "--variance --discrete --lr 0.01 --time 5,inf" \
    "--variance --kernel nngp --discrete --lr 0.01 --time 0,5,50"; do
    # shellcheck disable=SC2086
    predict_both "$case" --train "$data/train.csv" --test "$data/test.csv" $case
    times=$(echo "$case" | sed 's/.*--time \([^ ]*\).*/\1/' | tr ',' '\n' | wc -l)
    [ "$(grep -c '^t=' "$work/err.txt")" -eq "$times" ] ||
      fail "$ranks ranks, $case: results not printed once per time: $(cat "$work/err.txt")"
  done
  # The options of one process: separate target files, --labels (classes out, accuracy), float
  # storage of the triangle, a per-rank --memory-limit the path fits in: same output, same scores.
  separate=(--train "$data/train_x.csv" --train-targets "$data/train_y.csv" --test "$data/test_x.csv"
    --test-targets "$data/test_y.csv")
  labels=(--train "$data/train_x.csv" --train-targets "$data/train_labels.csv" --test "$data/test_x.csv"
    --test-targets "$data/test_labels.csv" --labels)
  for case in "separate --time 1,inf" "labels --diag-reg 0.01" "labels --solver cg --tolerance 1e-13 --diag-reg 0.01" \
    "separate --solver cg --storage float --tolerance 1e-13 --diag-reg 0.01" "separate --memory-limit 1G --diag-reg 0.01"; do
    name=${case%% *} rest=${case#* }
    declare -n inputs=$name
    # shellcheck disable=SC2086
    predict_both "$case" "${inputs[@]}" $rest
    same_scores "$case"
    unset -n inputs
  done
  grep -q "accuracy=" "$work/err.txt" || fail "$ranks ranks: no accuracy reported"
  # --architecture: image kernels on the dense ScaLAPACK paths (eigen, Cholesky; with --variance).
  conv=(--train "$work/images_train.csv" --test "$work/images_test.csv" --architecture conv:3x3:4,relu,gap,dense
    --shape 6,6,1)
  for case in "--solver eigen --diag-reg 0.01 --time 1,inf" "--solver cholesky --diag-reg 0.01" "--diag-reg 0.01" \
    "--variance --time 10,inf" "--variance --kernel nngp --discrete --lr 0.01 --time 5,inf"; do
    # shellcheck disable=SC2086
    predict_both "images $case" "${conv[@]}" $case
    same_scores "images $case"
  done
  # --solver cholesky on a Gram matrix that is not positive definite (a linear kernel of rank 2 on
  # 40 points): the eigendecomposition's pseudo-inverse instead, with the same note, in both tools.
  for case in "--time inf"; do
    # shellcheck disable=SC2086
    predict_both "rank-2 cholesky $case" --train "$work/rank2_train.csv" --test "$work/rank2_test.csv" \
      --activation identity --depth 1 --sigma-b 0 --solver cholesky $case --progress
    note=$(grep 'not positive definite: eigendecomposition' "$work/serial_err.txt")
    [ -n "$note" ] && [ "$(grep 'not positive definite: eigendecomposition' "$work/err.txt")" = "$note" ] ||
      fail "$ranks ranks, rank-2 cholesky $case: the fallback note differs: $(cat "$work/err.txt")"
  done
  # --storage float on the paths that store no triangle (Cholesky, eigendecomposition): computed in
  # double as in one process, with the same progress note.
  for case in "--diag-reg 0.01" "--solver eigen --time 1,inf"; do
    # shellcheck disable=SC2086
    predict_both "$case --storage float" --train "$data/train.csv" --test "$data/test.csv" $case --storage float --progress
    note=$(grep '^ntk: --storage float: not used by the' "$work/serial_err.txt")
    [ -n "$note" ] && [ "$(grep '^ntk: --storage float' "$work/err.txt")" = "$note" ] ||
      fail "$ranks ranks, $case --storage float: not the single-process note '$note': $(cat "$work/err.txt")"
  done
  # --quiet: the results only.
  run "$ranks" predict --train "$data/train.csv" --test "$data/test.csv" --solver cg --diag-reg 0.01 --quiet \
    --out "$work/mpi.csv" 2>"$work/err.txt" || fail "$ranks ranks, --quiet: status $?"
  [ "$(grep -vc '^t=' "$work/err.txt")" -eq 0 ] || fail "$ranks ranks, --quiet: more than results: $(cat "$work/err.txt")"
  run "$ranks" predict --train "$data/train.csv" --test "$data/test.csv" --solver cg --diag-reg 0.01 \
    --out "$work/mpi.csv" 2>"$work/err.txt"
  grep -q '^ntk: kernel .*distributed triangle' "$work/err.txt" || fail "$ranks ranks, --solver cg: no progress line"
  run "$ranks" predict --train "$data/train.csv" --test "$data/test.csv" --solver eigen --diag-reg 0.01 \
    --out "$work/mpi.csv" 2>"$work/err.txt"
  grep -q '^ntk: kernel .*ScaLAPACK eigendecomposition' "$work/err.txt" || fail "$ranks ranks, --solver eigen: not taken"
  # Every error: one line, status 2, no file left behind.
  check_error() {
    local pattern=$1
    shift
    rm -f "$work/bad.csv"
    run "$ranks" "$@" 2>"$work/err.txt" >"$work/out.txt"
    status=$?
    [ "$status" -eq 2 ] || fail "$ranks ranks, $*: status $status (expected 2)"
    [ "$(grep -c '^ntk: error:' "$work/err.txt")" -eq 1 ] || fail "$ranks ranks, $*: not one error line: $(cat "$work/err.txt")"
    grep -q "^ntk: error: .*$pattern" "$work/err.txt" || fail "$ranks ranks, $*: no '$pattern' in $(cat "$work/err.txt")"
    [ ! -e "$work/bad.csv" ] || fail "$ranks ranks, $*: output file left behind"
  }
  check_error "cannot open" predict --train "$data/nope.csv" --test "$data/test.csv" --out "$work/bad.csv"
  check_error "non-numeric cell" predict --train "$data/nonnumeric.csv" --test "$data/test.csv" --out "$work/bad.csv"
  check_error "unknown option" predict --train "$data/train.csv" --test "$data/test.csv" --bogus 1 --out "$work/bad.csv"
  check_error "memory limit" predict --train "$data/train.csv" --test "$data/test.csv" --memory-limit 1K --out "$work/bad.csv"
  check_error "--labels needs one column" predict --train "$data/train_x.csv" --train-targets "$data/train_x.csv" --test "$data/test_x.csv" --labels --out "$work/bad.csv"
  check_error "--architecture: image kernels are computed dense; --solver cg does not apply" predict "${conv[@]}" --diag-reg 0.1 --solver cg --out "$work/bad.csv"
  check_error "--solver cg: .*covariances need the eigendecomposition" predict --train "$data/train.csv" --test "$data/test.csv" --variance --solver cg --diag-reg 0.1 --out "$work/bad.csv"
  check_error "--solver cholesky: .*t = inf only" predict --train "$data/train.csv" --test "$data/test.csv" --solver cholesky --time 1 --out "$work/bad.csv"
  check_error "--solver cg: .*" predict --train "$data/train.csv" --test "$data/test.csv" --solver cg --time inf --out "$work/bad.csv"
  check_error "cannot write" predict --train "$data/train.csv" --test "$data/test.csv" --out "$work/no-such-dir/p.csv"
  # Other commands run once, on rank 0.
  rows=$(run "$ranks" kernel --x "$data/x.csv" 2>/dev/null | wc -l)
  [ "$rows" -eq "$("$ntk" kernel --x "$data/x.csv" | wc -l)" ] || fail "$ranks ranks: ntk kernel output not written once ($rows lines)"
done
[ "$failures" -eq 0 ] && echo "all MPI CLI checks passed"
exit $((failures > 0))
