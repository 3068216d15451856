#!/usr/bin/python3
"""The ReLU NTK the NumPy way (layer by layer over n x n arrays), for the end-to-end comparison
with `ntk kernel`.  Usage: numpy_relu_ntk.py X.npy DEPTH OUT.npy  (sigma_w = sigma_b = 1)."""
import sys

import numpy as np


def relu_ntk(x, depth):
    sigma = x @ x.T / x.shape[1] + 1.0
    theta = sigma.copy()
    for _ in range(depth):
        root = np.sqrt(np.diag(sigma))
        norms = np.outer(root, root)
        rho = np.clip(sigma / norms, -1.0, 1.0)
        angle = np.arccos(rho)
        t = norms / (2 * np.pi) * (np.sqrt(1 - rho * rho) + (np.pi - angle) * rho)
        t_dot = (np.pi - angle) / (2 * np.pi)
        sigma = t + 1.0
        theta = sigma + t_dot * theta
    return theta


if __name__ == "__main__":
    np.save(sys.argv[3], relu_ntk(np.load(sys.argv[1]), int(sys.argv[2])))
