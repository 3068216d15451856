#!/usr/bin/env bash
# run_case.sh NTK DATA WORK 'CASE LINE' -- runs one line of cases.txt (see there for the format).
# The case runs in its own empty folder $W = WORK/<name>, with $NTK the tool, $D the data folder
# and the shell function `ntk` calling the tool.  A function setup_<name> in scenarios.sh, if any,
# prepares $W first.  Checks: the exit status, stderr and stdout against their regexes; for a failure
# also that stderr is one line and that $W holds exactly what it held before (no output, no
# temporary, planted files untouched).
set -u
export NTK=$1 D=$2
root=$3 line=$4
here=$(cd "$(dirname "$0")" && pwd)
ntk() { "$NTK" "$@"; }
# shellcheck source=scenarios.sh
source "$here/scenarios.sh"
eval "set -- $line"
name=$1 expected=$2 err_regex=$3 out_regex=$4
shift 4
export W=$root/$name
chmod -R u+w "$W" 2>/dev/null
rm -rf "$W" "$W.stdout" "$W.stderr"
mkdir -p "$W"
cd "$W" || exit 1
if declare -F "setup_$name" >/dev/null; then "setup_$name" || { echo "FAIL: setup_$name"; exit 1; }; fi
snapshot() {
  find "$W" -mindepth 1 -printf '%y %P %l %m\n' | LC_ALL=C sort
  find "$W" -mindepth 1 -type f -exec sha256sum {} + | LC_ALL=C sort
}
before=$(snapshot)
"$@" >"$W.stdout" 2>"$W.stderr"
status=$?
stdout=$(head -c 4000 "$W.stdout")
stderr=$(cat "$W.stderr")
fail() {
  echo "FAIL: $name: $*"
  echo "case:   $line"
  echo "status: $status"
  echo "stdout: $stdout"
  echo "stderr: $stderr"
  exit 1
}
[ "$status" = "$expected" ] || fail "exit status $status, expected $expected"
grep -Eq -- "$err_regex" <<<"$stderr" || fail "stderr does not match /$err_regex/"
grep -Eq -- "$out_regex" <<<"$stdout" || fail "stdout does not match /$out_regex/"
if [ "$expected" != 0 ]; then
  [ "$(printf '%s\n' "$stderr" | grep -c .)" -le 1 ] || fail "error output is more than one line"
  after=$(snapshot)
  [ "$before" = "$after" ] || fail "the work folder changed: $(diff <(echo "$before") <(echo "$after") | head -20)"
fi
exit 0
