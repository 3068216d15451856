#!/usr/bin/env bash
# Fashion-MNIST subsets (Debian dataset-fashion-mnist): flatten-readout CNTK against the MLP NTK,
# kernel regression at t = inf through `ntk predict`.  Usage:
#   benchmarks/fashion_mnist_cntk.sh path/to/ntk [TRAIN] [TEST] [KERNELS]
# (defaults 1000 1000 "mlp flatten"; KERNELS is a list of mlp, flatten, gap).  gap is the
# global-pooling CNTK on the images average-pooled to 14x14 (P^2 = 38k pixel pairs per layer instead
# of 615k at 28x28), three conv/relu layers as the flatten CNTK.  The pooling is done here, once per
# image: the kernel equals that of avgpool:2 as the first layer (pooling is linear), 3.5x cheaper.
set -euo pipefail
ntk=$1 train=${2:-1000} test=${3:-1000} kernels=${4:-mlp flatten}
dir=$(mktemp -d)
/usr/bin/python3 - "$dir" "$train" "$test" <<'PY'
import gzip, sys, numpy as np
out, n_train, n_test = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d = '/usr/share/datasets/fashion-mnist/'
def images(p):
    with gzip.open(p) as f: return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784) / 255.0
def labels(p):
    with gzip.open(p) as f: return np.frombuffer(f.read(), np.uint8, offset=8)
rng = np.random.default_rng(0)
def prep(x):  # per image: zero mean, unit mean square
    x = x - x.mean(1, keepdims=True)
    return x / np.sqrt((x ** 2).mean(1, keepdims=True))
def onehot(y):
    o = -0.1 * np.ones((len(y), 10)); o[np.arange(len(y)), y] = 0.9; return o
for name, n, img, lab in (('train', n_train, 'train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
                          ('test', n_test, 't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')):
    x, y = images(d + img), labels(d + lab)
    pick = rng.permutation(len(x))[:n]
    kept = prep(x[pick])
    np.save(f'{out}/{name}.npy', np.hstack([kept, onehot(y[pick])]))
    pooled = kept.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(-1, 196)
    np.save(f'{out}/{name}14.npy', np.hstack([pooled, onehot(y[pick])]))
PY
accuracy() { /usr/bin/python3 -c "
import numpy as np, sys
y = np.load('$dir/test.npy')[:, -10:].argmax(1); p = np.loadtxt('$1', delimiter=',')
print('accuracy', (p.argmax(1) == y).mean())"; }
conv3=conv:3x3,relu,conv:3x3,relu,conv:3x3,relu
for kernel in $kernels; do
  files=(--train "$dir/train.npy" --test "$dir/test.npy")
  case $kernel in
    mlp) args=() ;;
    flatten) args=(--architecture "$conv3,flatten,dense" --shape 28,28,1) ;;
    gap) args=(--architecture "$conv3,gap,dense" --shape 14,14,1) files=(--train "$dir/train14.npy" --test "$dir/test14.npy") ;;
    *) echo "unknown kernel $kernel (mlp, flatten, gap)" >&2; exit 2 ;;
  esac
  echo "== $kernel: $train training, $test test images ${args[*]}"
  /usr/bin/time -f "wall %e s, cpu %U+%S s, peak %M kB" \
    "$ntk" predict "${files[@]}" --outputs 10 --threads 2 "${args[@]}" \
    --out "$dir/$kernel.csv"
  accuracy "$dir/$kernel.csv"
done
rm -rf "$dir"
