#!/usr/bin/python3
"""Baseline for `ntk predict --solver cholesky`: the same ReLU NTK (depth L, sigma_w, sigma_b, Σ⁰ = xᵀx'/d)
computed the fast NumPy way (one GEMM, then the arc-cosine recursion on whole matrices), solved
with scipy.linalg.cho_factor/cho_solve (OpenBLAS) on one-hot targets, predictions argmax.

Usage: scipy_cholesky.py TRAIN_X.npy TRAIN_LABELS.npy TEST_X.npy TEST_LABELS.npy [depth sigma_w sigma_b ridge]
"""
import sys
import time

import numpy as np
import scipy.linalg


def relu_ntk(x1, x2, depth, sw, sb):
    d = x1.shape[1]
    q1 = sw**2 * np.einsum("ij,ij->i", x1, x1) / d + sb**2
    q2 = sw**2 * np.einsum("ij,ij->i", x2, x2) / d + sb**2
    s = sw**2 * (x1 @ x2.T) / d + sb**2
    theta = s.copy()
    for _ in range(depth - 1):
        norm = np.sqrt(np.outer(q1, q2))
        c = np.clip(s / norm, -1, 1)
        angle = np.arccos(c)
        s_dot = sw**2 * (np.pi - angle) / (2 * np.pi)
        s = sw**2 * norm * (np.sin(angle) + (np.pi - angle) * c) / (2 * np.pi) + sb**2
        theta = s + s_dot * theta
        q1 = sw**2 * q1 / 2 + sb**2
        q2 = sw**2 * q2 / 2 + sb**2
    return theta


def main():
    tx, ty, vx, vy = (np.load(p) for p in sys.argv[1:5])
    depth = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    sw = float(sys.argv[6]) if len(sys.argv) > 6 else 2**0.5
    sb = float(sys.argv[7]) if len(sys.argv) > 7 else 0.1
    ridge = float(sys.argv[8]) if len(sys.argv) > 8 else 0.0
    tx = tx.astype(np.float64)
    vx = vx.astype(np.float64)
    labels = ty[:, 0].astype(int)
    y = np.eye(10)[labels]
    t0 = time.time()
    g = relu_ntk(tx, tx, depth, sw, sb)
    t1 = time.time()
    g[np.diag_indices_from(g)] += ridge
    alpha = scipy.linalg.cho_solve(scipy.linalg.cho_factor(g, lower=True, overwrite_a=True, check_finite=False), y,
                                   check_finite=False)
    t2 = time.time()
    pred = relu_ntk(vx, tx, depth, sw, sb) @ alpha
    t3 = time.time()
    acc = np.mean(np.argmax(pred, axis=1) == vy[:, 0].astype(int))
    print("scipy: kernel %.2f s, cholesky %.2f s, predict %.2f s, accuracy %.4f" % (t1 - t0, t2 - t1, t3 - t2, acc))


if __name__ == "__main__":
    main()
