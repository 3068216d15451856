# Multi-step cases of cases.txt (sourced by run_case.sh; $NTK, $D, $W are set, `ntk` runs the tool).
# A function named in a case line is its command; setup_<case name> prepares the case's folder.

# compare A.csv B.csv TOL: equal shapes and entries within TOL (relative, absolute below 1).
compare() {
  paste -d, "$1" "$2" | awk -F, -v tol="$3" '
    { n = NF / 2; for (i = 1; i <= n; i++) { a = $i; b = $(i + n); d = a - b; if (d < 0) d = -d;
        s = (b < 0 ? -b : b); if (s < 1) s = 1; if (d > tol * s) { print "row " NR " col " i ": " a " vs " b; bad = 1 } } }
    END { exit bad }' >&2
}

# Dense layers on 1x1x3 "images" are the MLP of depth 2 (sigma_b = 1 in both).
architecture_dense_equals_mlp() {
  ntk kernel --x "$D/x.csv" --x2 "$D/x2.csv" --depth 2 --out mlp.csv &&
    ntk kernel --x "$D/x.csv" --x2 "$D/x2.csv" --architecture dense:sb=1,relu,dense:sb=1,relu,dense:sb=1 \
      --shape 1,1,3 --out arch.csv &&
    compare mlp.csv arch.csv 1e-13
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
