#!/usr/bin/env bash
# The README's install command for the Python package, run exactly as documented in a clean clone
# of the committed tree, into a throwaway user base (PYTHONUSERBASE); then an import and a kernel
# from another directory, against the C++ reference value (docs/mathematics.md T5, pair P1).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q --depth 1 "file://$repo" "$work/ntk"
export PYTHONUSERBASE="$work/userbase" PIP_DISABLE_PIP_VERSION_CHECK=1
cd "$work/ntk"
# --- the command in README.md (Python) ---
/usr/bin/python3 -m pip install --user --break-system-packages --no-build-isolation --no-index ./python
# -----------------------------------------
cd "$work"
/usr/bin/python3 - <<'PY'
import numpy as np
import ntk
import ntk.sklearn
k = ntk.kernel(np.array([[1.0, 0, 0], [0, 1.0, 0]]), depth=2)
assert abs(k[0, 1] - 2.597912775429742) < 1e-12, k
assert "userbase" in ntk.__file__, ntk.__file__
print("installed", ntk.__version__, "at", ntk.__file__)
PY
