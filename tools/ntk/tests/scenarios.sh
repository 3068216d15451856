# Multi-step cases of cases.txt (sourced by run_case.sh; $NTK, $D, $W are set, `ntk` runs the tool).
# A function named in a case line is its command; setup_<case name> prepares the case's folder.

# compare A.csv B.csv TOL: equal shapes and entries within TOL (relative, absolute below 1).
compare() {
  paste -d, "$1" "$2" | awk -F, -v tol="$3" '
    { n = NF / 2; for (i = 1; i <= n; i++) { a = $i; b = $(i + n); d = a - b; if (d < 0) d = -d;
        s = (b < 0 ? -b : b); if (s < 1) s = 1; if (d > tol * s) { print "row " NR " col " i ": " a " vs " b; bad = 1 } } }
    END { exit bad }' >&2
}

kernel_from_stdin() { ntk kernel --x - --depth 2 <"$D/x.csv"; }

npy_float32_fortran_matches_float64() {
  ntk kernel --x "$D/x.npy" --out a.csv && ntk kernel --x "$D/x_f32_fortran.npy" --out b.csv && compare a.csv b.csv 1e-5
}

# .npy output is computed straight into the mapped file: the same numbers as the CSV output, read
# back through a deterministic command (the identity NNGP of depth 1 is x xᵀ).
npy_mapped_output_matches_csv() {
  ntk kernel --x "$D/x.csv" --x2 "$D/x2.csv" --activation tanh --out m.npy &&
    ntk kernel --x "$D/x.csv" --x2 "$D/x2.csv" --activation tanh --out m.csv &&
    ntk kernel --x m.npy --activation identity --depth 1 --sigma-b 0 --kernel nngp --out m1.csv &&
    ntk kernel --x m.csv --activation identity --depth 1 --sigma-b 0 --kernel nngp --out m2.csv &&
    compare m1.csv m2.csv 1e-15
}

npy_output_roundtrip() {
  ntk kernel --x "$D/x.npy" --out r.npy && ntk kernel --x "$D/x.npy" --out r.csv &&
    ntk empirical --x r.npy --width 3 --depth 1 --activation identity --sigma-b 0 --out r2.csv &&
    ntk empirical --x r.csv --width 3 --depth 1 --activation identity --sigma-b 0 --out r3.csv &&
    compare r2.csv r3.csv 1e-15
}

# ntk predict: the same fit from targets in their own files as from target columns of TRAIN/TEST,
# and the dense and iterative solvers against the eigendecomposition.
predict_separate() { ntk predict --train "$D/train_x.csv" --train-targets "$D/train_y.csv" --test "$D/test_x.csv" "$@"; }

predict_separate_targets_match_columns() {
  ntk predict --train "$D/train.csv" --test "$D/test.csv" --out p1.csv &&
    predict_separate --test-targets "$D/test_y.csv" --out p2.csv && compare p1.csv p2.csv 1e-14
}

predict_cholesky_and_cg_match_eigen_at_inf() {
  predict_separate --diag-reg 0.01 --solver eigen --out e.csv &&
    predict_separate --diag-reg 0.01 --solver cholesky --out c.csv &&
    predict_separate --diag-reg 0.01 --solver cg --tolerance 1e-13 --out g.csv &&
    compare e.csv c.csv 1e-8 && compare e.csv g.csv 1e-8
}

predict_cg_finite_times_match_eigen() {
  predict_separate --lr 0.05 --time 1,10,inf --diag-reg 0.01 --solver eigen --out e.csv &&
    predict_separate --lr 0.05 --time 1,10,inf --diag-reg 0.01 --solver cg --tolerance 1e-12 --out g.csv &&
    compare e.csv g.csv 1e-6
}
