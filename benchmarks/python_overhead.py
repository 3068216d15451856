#!/usr/bin/python3
"""Overhead of the Python layer: ntk.kernel on n = 4,000, d = 100 (ReLU NTK, depth 3, sigma_w =
sigma_b = 1) against the same C++ call in bench_kernel (BM_relu_ntk_fused/4000/3), in one session.

Usage: PYTHONPATH=build/python benchmarks/python_overhead.py build-bench/benchmarks/bench_kernel
Prints the median of 7 Python calls (C and Fortran order input), the C++ median, and the ratio.
"""
import json
import subprocess
import sys

import numpy as np

import ntk
from timing import median_seconds  # benchmarks/, next to this script


def main():
    bench = sys.argv[1]
    x = np.random.default_rng(0).standard_normal((4000, 100))
    xf = np.asfortranarray(x)
    ntk.kernel(x, depth=3)  # warm up (threads, pages)
    python_c = median_seconds(lambda: ntk.kernel(x, depth=3))
    python_f = median_seconds(lambda: ntk.kernel(xf, depth=3))
    out = subprocess.run([bench, "--benchmark_filter=BM_relu_ntk_fused/4000/3", "--benchmark_repetitions=7",
                          "--benchmark_format=json"], check=True, capture_output=True, text=True).stdout
    runs = [b for b in json.loads(out)["benchmarks"] if b.get("aggregate_name") == "median"]
    cpp = runs[0]["real_time"] / 1e3  # ms -> s
    print(f"C++ BM_relu_ntk_fused/4000/3 median {cpp:.4f} s")
    print(f"Python ntk.kernel, C order   median {python_c:.4f} s  ratio {python_c / cpp:.3f}")
    print(f"Python ntk.kernel, F order   median {python_f:.4f} s  ratio {python_f / cpp:.3f}")


if __name__ == "__main__":
    main()
