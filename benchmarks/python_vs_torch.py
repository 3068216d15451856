#!/usr/bin/python3
"""ntk from Python against the ways Python users compute the same things today, in one run:

  1. the empirical NTK of a 3-hidden-layer, width-512 ReLU network (NTK parametrization, one
     output) on 256 points, d = 100: ntk.Network.empirical_ntk against PyTorch's Jacobian
     contraction (functorch: vmap over jacrev, then J J^T), on the same parameters;
  2. the analytic ReLU NTK (depth 3, sigma_w = sigma_b = 1) on n = 4,000, d = 100: ntk.kernel
     against a NumPy layer-by-layer script (the arccos recursion over n x n arrays).

Both pairs are checked to agree (relative max difference printed) before the times count.
Usage: PYTHONPATH=build/python /usr/bin/python3 benchmarks/python_vs_torch.py [threads]
Prints medians of 7 runs (after the check's warm-up call) and the ratios (other / ntk).
"""
import sys

import numpy as np

import ntk
from numpy_relu_ntk import relu_ntk as numpy_relu_ntk  # benchmarks/, next to this script
from timing import median_seconds


def relative(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def torch_empirical_ntk(net, x, width, depth, threads):
    import torch
    try:
        from torch.func import jacrev, vmap  # PyTorch >= 2.0
    except ImportError:
        from functorch import jacrev, vmap  # PyTorch 1.13 (Debian 12)
    torch.set_num_threads(threads)
    theta = net.parameters
    d = x.shape[1]
    shapes, fan_in, offset, params = [], d, 0, []
    for out in [width] * depth + [1]:  # row-major weights (out x in), then biases (ntk/network.hpp)
        w = theta[offset:offset + out * fan_in].reshape(out, fan_in)
        offset += out * fan_in
        b = theta[offset:offset + out]
        offset += out
        params += [torch.tensor(w), torch.tensor(b)]
        shapes.append(fan_in)
        fan_in = out

    def f(params, xi):  # one sample -> one output; sigma_w = sigma_b = 1
        h = xi
        for layer in range(depth + 1):
            w, b = params[2 * layer], params[2 * layer + 1]
            h = w @ h / np.sqrt(shapes[layer]) + b
            if layer < depth:
                h = torch.relu(h)
        return h[0]

    xt = torch.tensor(x)
    params = tuple(params)

    def compute():
        jac = vmap(jacrev(f), (None, 0))(params, xt)  # per parameter tensor: n x shape
        flat = torch.cat([j.reshape(j.shape[0], -1) for j in jac], dim=1)
        return (flat @ flat.T).numpy()

    return compute


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    rng = np.random.default_rng(0)

    x = rng.standard_normal((256, 100))
    net = ntk.Network(100, activation="relu", depth=3, width=512, seed=1)
    ours = net.empirical_ntk(x)
    torch_compute = torch_empirical_ntk(net, x, 512, 3, threads)
    print(f"empirical NTK 256 points, width 512, depth 3: max relative difference {relative(torch_compute(), ours):.2e}")
    t_ntk = median_seconds(lambda: net.empirical_ntk(x))
    t_torch = median_seconds(torch_compute)
    print(f"  ntk.Network.empirical_ntk {t_ntk:.4f} s   PyTorch vmap(jacrev) + J J^T {t_torch:.4f} s   "
          f"ratio {t_torch / t_ntk:.2f}")

    x = rng.standard_normal((4000, 100))
    ours = ntk.kernel(x, depth=3, threads=threads)
    print(f"analytic ReLU NTK n = 4000, d = 100, depth 3: max relative difference "
          f"{relative(numpy_relu_ntk(x, 3), ours):.2e}")
    t_ntk = median_seconds(lambda: ntk.kernel(x, depth=3, threads=threads))
    t_numpy = median_seconds(lambda: numpy_relu_ntk(x, 3))
    print(f"  ntk.kernel {t_ntk:.4f} s   NumPy layer by layer {t_numpy:.4f} s   ratio {t_numpy / t_ntk:.2f}")


if __name__ == "__main__":
    main()
