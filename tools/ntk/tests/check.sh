#!/usr/bin/env bash
# check.sh EXPECTED_STATUS STDERR_REGEX STDOUT_REGEX OUTPUT_FILE_OR_- -- command...
# Runs the command; checks its exit status, that stderr matches STDERR_REGEX (one line for errors),
# that stdout matches STDOUT_REGEX, and for a failure that OUTPUT_FILE was not left behind.
set -u
expected=$1 err_regex=$2 out_regex=$3 output=$4
shift 5
[ "$output" != "-" ] && rm -f "$output"
stdout=$("$@" 2>/tmp/ntk-cli-stderr.$$)
status=$?
stderr=$(cat /tmp/ntk-cli-stderr.$$)
rm -f /tmp/ntk-cli-stderr.$$
fail() { echo "FAIL: $*"; echo "command: $*"; echo "status: $status"; echo "stdout: ${stdout:0:2000}"; echo "stderr: $stderr"; exit 1; }
[ "$status" = "$expected" ] || fail "exit status $status, expected $expected"
echo "$stderr" | grep -Eq -- "$err_regex" || fail "stderr does not match /$err_regex/"
echo "$stdout" | grep -Eq -- "$out_regex" || fail "stdout does not match /$out_regex/"
if [ "$expected" != 0 ]; then
  [ "$(printf '%s\n' "$stderr" | grep -c .)" -le 1 ] || fail "error output is more than one line"
  [ "$output" = "-" ] || [ ! -e "$output" ] || fail "partial output file $output left behind"
  [ "$output" = "-" ] || [ ! -e "$output.partial" ] || fail "temporary file left behind"
fi
exit 0
