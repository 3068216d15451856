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

# Runs a command with stdout on /dev/full (a full disk): the lost output must be an error.
to_dev_full() { "$@" >/dev/full; }

# Writes rows x cols of deterministic numbers to a CSV file.
make_rows() {
  awk -v n="$2" -v d="$3" 'BEGIN { for (i = 1; i <= n; i++) { line = ""; for (j = 1; j <= d; j++)
    line = line (j > 1 ? "," : "") sin(i * 7.1 + j * 3.3); print line } }' >"$1"
}

# n = 1100 > one block column of 1024: the tiled Gram (rectangles above the diagonal blocks, the
# diagonal blocks by the symmetric path, mirrored) equals the cross kernel of the set with itself,
# and --progress reports its tiles (to 100 %) on stderr, never in the output.  (1e-9: a misplaced
# block would be off by O(1); the two paths round differently, and make_rows has near-duplicate
# rows, where the arc-cosine kernel amplifies rounding: 1.5e-12 measured.)
kernel_tiles_match_cross_kernel() {
  make_rows in.csv 1100 3
  ntk kernel --x in.csv --depth 2 --progress --out g.csv 2>err.txt &&
    ntk kernel --x in.csv --x2 in.csv --depth 2 --quiet --out c.csv &&
    compare g.csv c.csv 1e-9 && grep -q '^ntk: kernel tiles 100\.0% ' err.txt &&
    [ "$(wc -l <g.csv)" -eq 1100 ]
}

# Two runs writing the same --out at once each write a whole file: the result is one run's
# complete output (the old shared "<out>.partial" gave SIGBUS or an all-zero Gram).
concurrent_writers() {
  make_rows in.csv 1500 3
  ntk kernel --x in.csv --depth 40 --out ref.npy || return 1
  for trial in 1 2 3; do
    "$NTK" kernel --x in.csv --depth 40 --out C.npy & a=$!
    "$NTK" kernel --x in.csv --depth 40 --out C.npy & b=$!
    wait $a || { echo "trial $trial: first writer failed" >&2; return 1; }
    wait $b || { echo "trial $trial: second writer failed" >&2; return 1; }
    cmp -s C.npy ref.npy || { echo "trial $trial: C.npy differs from a single run" >&2; return 1; }
    rm -f C.npy
  done
  [ -z "$(find . -name '.*ntk-*')" ] || { echo "temporary left behind" >&2; return 1; }
}

# A planted symlink at the old predictable temporary name, and an unrelated X.partial file: both
# stay untouched; the symlink's target is not overwritten.
setup_planted_symlink() { echo precious >victim && ln -s victim out.csv.partial && echo mine >k.csv.partial; }
planted_symlink() {
  ntk kernel --x "$D/x.csv" --out out.csv && ntk kernel --x "$D/x.csv" --out k.csv || return 1
  [ "$(cat victim)" = precious ] || { echo "the symlink's target was overwritten" >&2; return 1; }
  [ -L out.csv.partial ] && [ "$(cat k.csv.partial)" = mine ] || { echo "a planted file was changed" >&2; return 1; }
  [ -f out.csv ] && [ ! -L out.csv ] && grep -q , out.csv || { echo "no output" >&2; return 1; }
}

# A symlinked --out is followed: the file it names gets the result, the link stays a link.
setup_symlinked_out() { echo old >real.csv && ln -s real.csv out.csv; }
symlinked_out() {
  ntk kernel --x "$D/x.csv" --out out.csv || return 1
  [ -L out.csv ] && [ "$(readlink out.csv)" = real.csv ] || { echo "the link was replaced" >&2; return 1; }
  grep -q , real.csv && ! grep -q old real.csv || { echo "the link's target did not get the result" >&2; return 1; }
}
setup_dangling_symlink_out() { ln -s nowhere/k.csv out.csv; }
setup_readonly_out() { echo keep >ro.csv && chmod 444 ro.csv; }
setup_out_is_directory() { mkdir outdir; }
setup_out_onto_input() { cp "$D/x.csv" in.csv; }
setup_out_onto_input_npy() { cp "$D/x.npy" in.npy; }
setup_out_onto_input_link() { cp "$D/x.csv" in.csv && ln -s in.csv link.csv; }

# A device is written in place, never replaced by a regular file.
out_dev_null() { ntk kernel --x "$D/x.csv" --out /dev/null && [ -c /dev/null ]; }

# The existing file's permission bits are kept when it is replaced.
setup_keeps_mode() { echo old >k.csv && chmod 640 k.csv; }
keeps_mode() { ntk kernel --x "$D/x.csv" --out k.csv && [ "$(stat -c %a k.csv)" = 640 ] && grep -q , k.csv; }

# SIGTERM and SIGHUP during a long run remove the temporary (the old code left a full-size
# .partial).  The run is long enough to be interrupted: 3000 rows at depth 3000.
interrupted_run() {
  local signal=$1 out=$2
  make_rows in.csv 3000 3
  "$NTK" kernel --x in.csv --depth 3000 --out "$out" & pid=$!  # the tool itself, not a subshell
  for _ in $(seq 1 200); do [ -n "$(find . -name ".$out.ntk-*")" ] && break; sleep 0.05; done
  [ -n "$(find . -name ".$out.ntk-*")" ] || { echo "no temporary appeared" >&2; kill $pid; return 1; }
  kill -s "$signal" $pid
  wait $pid
  status=$?
  rm -f in.csv
  [ -z "$(ls -A)" ] || { echo "left behind: $(ls -A)" >&2; return 1; }
  [ $status -gt 128 ] || { echo "exit status $status, expected death by signal" >&2; return 1; }
}
sigterm_removes_temporary() { interrupted_run TERM K.npy; }
sighup_removes_temporary() { interrupted_run HUP K.csv; }

# A 40 MB line of 20 million cells is refused by its column count, without gigabytes of memory.
long_line() {
  head -c 40000000 /dev/zero | tr '\0' '1' | sed 's/1/1,/g' | head -c 40000000 >"$W.line.csv"
  echo 1 >>"$W.line.csv"
  ntk kernel --x "$W.line.csv" --out out.csv
  local status=$?
  rm -f "$W.line.csv"
  return $status
}

# Huge n: 200,000 rows make a 320 GB kernel, refused before any work; as .npy, the file's blocks
# are refused by the file system.
setup_huge_kernel() { make_rows big.csv 200000 2; }
setup_huge_kernel_npy() { make_rows big.csv 200000 2; }
setup_huge_time_list() { make_rows big.csv 200000 3; }
huge_time_list() {
  ntk predict --train "$D/train.csv" --test big.csv --time "$(seq -s, 1 20000)" --out out.csv
}

# The demo with a hostile --out-dir: no shell ever sees the folder's name.
demo_hostile_out_dir() {
  ntk demo --quick --out-dir "d';touch PWNED;echo '" >/dev/null || return 1
  [ ! -e PWNED ] && [ ! -e "d';touch PWNED;echo '/PWNED" ] || { echo "injected command ran" >&2; return 1; }
  [ -s "d';touch PWNED;echo '/fig1_ntk_vs_angle.csv" ] || { echo "no figure" >&2; return 1; }
}

# The demo on a full disk (file size limit 8 KB, SIGXFSZ ignored so writes fail with EFBIG): an
# error, and no empty or partial figure files.  Its folder lives beside $W and is removed.
demo_full_disk() {
  local dir="$W.aux"
  rm -rf "$dir"
  (ulimit -f 8 && trap '' XFSZ && ntk demo --quick --out-dir "$dir" 2>"$W.err")
  local status=$?
  grep -v '^\[demo\]' "$W.err" >&2  # the error line without the progress lines
  local bad
  bad=$(find "$dir" -type f \( -empty -o -name '.*ntk-*' \) 2>/dev/null)
  rm -rf "$dir" "$W.err"
  [ -z "$bad" ] || { echo "empty or temporary files: $bad" >&2; return 1; }
  return $status
}

# The demo with stdout on a full disk fails (exit 2) once its results cannot be printed.
demo_stdout_full() {
  local dir="$W.aux"
  rm -rf "$dir"
  ntk demo --quick --out-dir "$dir" >/dev/full 2>"$W.err"
  local status=$?
  grep -v '^\[demo\]' "$W.err" >&2
  rm -rf "$dir" "$W.err"
  return $status
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

# Float storage of the triangle: entries rounded to 2^-24, so predictions move by about
# cond(G + 0.01 I) * 6e-8 (a bound of a few 1e-4 for this G) and are not bit-identical to double
# storage.
predict_cg_float_storage() {
  predict_separate --diag-reg 0.01 --solver cg --tolerance 1e-12 --out d.csv &&
    predict_separate --diag-reg 0.01 --solver cg --tolerance 1e-12 --storage float --out f.csv &&
    compare d.csv f.csv 1e-3 && ! compare d.csv f.csv 1e-15 2>/dev/null
}

# --storage float on a path that stores no triangle (Cholesky by auto, eigen, forced or by auto):
# the double computation, bit for bit.
predict_float_storage_dense_is_double() {
  local run
  for run in "--diag-reg 0.01" "--solver eigen --time 1,inf" "--solver cholesky --diag-reg 0.01"; do
    # shellcheck disable=SC2086
    predict_separate $run --out d.csv && predict_separate $run --storage float --out f.csv && cmp -s d.csv f.csv ||
      return 1
  done
}

predict_cg_finite_times_match_eigen() {
  predict_separate --lr 0.05 --time 1,10,inf --diag-reg 0.01 --solver eigen --out e.csv &&
    predict_separate --lr 0.05 --time 1,10,inf --diag-reg 0.01 --solver cg --tolerance 1e-12 --out g.csv &&
    compare e.csv g.csv 1e-6
}

# Dense layers on 1x1x3 "images" through ntk predict: the MLP's predictions, on the
# eigendecomposition path (t = 10 and inf) and on the Cholesky path (t = inf).
predict_architecture_dense_equals_mlp() {
  local run
  for run in "eigen 10,inf" "cholesky inf"; do
    set -- $run
    ntk predict --train "$D/train.csv" --test "$D/test.csv" --depth 2 --time "$2" --diag-reg 0.01 \
      --solver "$1" --out mlp.csv &&
      ntk predict --train "$D/train.csv" --test "$D/test.csv" --time "$2" --diag-reg 0.01 --solver "$1" \
        --architecture dense:sb=1,relu,dense:sb=1,relu,dense:sb=1 --shape 1,1,3 --out arch.csv &&
      compare mlp.csv arch.csv 1e-12 || return 1
  done
}
