#!/usr/bin/env bash
# compare.sh A.csv B.csv TOL: the two CSV matrices have equal shapes and entries within TOL (relative).
set -u
paste -d, "$1" "$2" | awk -F, -v tol="$3" '
  { n = NF / 2; for (i = 1; i <= n; i++) { a = $i; b = $(i + n); d = a - b; if (d < 0) d = -d;
      s = (b < 0 ? -b : b); if (s < 1) s = 1; if (d > tol * s) { print "row " NR " col " i ": " a " vs " b; bad = 1 } } }
  END { exit bad }'
