#!/usr/bin/env bash
# installed.sh BUILD_DIR SOURCE_DIR WORK BUILD_TYPE: `cmake --install` into a prefix, move the prefix elsewhere,
# and run the installed `ntk demo --quick` from an unrelated folder.  It must find its data set
# relative to itself, and the binary must not name the source tree (no compiled-in paths).
set -u
build=$1 source=$2 work=$3 build_type=${4:-Release}
rm -rf "$work" && mkdir -p "$work/run"
cmake --install "$build" --prefix "$work/prefix" >/dev/null || { echo "FAIL: cmake --install"; exit 1; }
mv "$work/prefix" "$work/moved"
ntk=$work/moved/bin/ntk
[ -x "$ntk" ] || { echo "FAIL: no installed bin/ntk"; exit 1; }
# (Release only: debug information and sanitizer metadata name source files by design.)
if [ "$build_type" = Release ] && readelf -p .rodata "$ntk" | grep -q -F "$source"; then echo "FAIL: the installed ntk names the source tree $source"; exit 1; fi
cd "$work/run" || exit 1
"$ntk" demo --quick --out-dir out >log.txt 2>&1 || { echo "FAIL: installed demo: $(tail -5 log.txt)"; exit 1; }
[ -s out/fig1_ntk_vs_angle.csv ] || { echo "FAIL: no figure data in out/: $(ls out)"; exit 1; }
# Without its data beside it, the error says where it looked and what to pass.
rm "$work/moved/share/ntk/breast_cancer.csv"
"$ntk" demo --quick --out-dir out2 2>err.txt
status=$?
[ "$status" -eq 2 ] && grep -q "^ntk: error: .*pass --data" err.txt ||
  { echo "FAIL: missing data: status $status, $(cat err.txt)"; exit 1; }
echo "installed tool relocatable: demo ran from $work/run"
