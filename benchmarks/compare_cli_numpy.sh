#!/usr/bin/env bash
# End to end: `ntk kernel --x X.npy --depth 10 --out K.npy` against the NumPy script doing the same
# (np.load, the layer-by-layer recursion, np.save), n = 4000, d = 100.  Needs python3-numpy.
# Usage: benchmarks/compare_cli_numpy.sh [path/to/ntk]
set -euo pipefail
ntk=${1:-build/tools/ntk/ntk}
dir=$(mktemp -d)
/usr/bin/python3 -c "import numpy as np; np.save('$dir/x.npy', np.random.default_rng(0).normal(size=(4000, 100)))"
start=$(date +%s.%N); "$ntk" kernel --x "$dir/x.npy" --depth 10 --out "$dir/k_ntk.npy"; mid=$(date +%s.%N)
/usr/bin/python3 "$(dirname "$0")/numpy_relu_ntk.py" "$dir/x.npy" 10 "$dir/k_numpy.npy"; end=$(date +%s.%N)
/usr/bin/python3 -c "
import numpy as np
a = np.load('$dir/k_ntk.npy'); b = np.load('$dir/k_numpy.npy')
print('max relative difference %.2e' % (abs(a - b).max() / abs(b).max()))"
echo "ntk kernel: $(echo "$mid - $start" | bc) s   numpy: $(echo "$end - $mid" | bc) s   ratio: $(echo "($end - $mid) / ($mid - $start)" | bc -l | cut -c1-5)"
rm -rf "$dir"
