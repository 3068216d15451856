#!/usr/bin/python3
"""The baseline for bench_gram's BM_packed_apply: what a NumPy user does with the Gram matrix held
dense (n x n float64, twice the packed triangle's memory): G @ V through OpenBLAS's dgemm, and
dsymm, which reads one triangle of the same dense array (NumPy's BLAS: OpenBLAS on Debian;
np.show_config() says which).  Prints the median of `repeats` times in ms per k; compare them with
`bench_gram` run in the same session at the same n and thread count.
The matrix is random: the time of a product does not depend on the values.
Usage: OPENBLAS_NUM_THREADS=2 /usr/bin/python3 benchmarks/numpy_dense_product.py [n=20000] [k=1,4,10,16] [repeats=5]"""
import sys

import numpy as np
import scipy.linalg.blas as blas

from timing import median_seconds  # benchmarks/, next to this script


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    ks = [int(k) for k in sys.argv[2].split(",")] if len(sys.argv) > 2 else [1, 4, 10, 16]
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    rng = np.random.default_rng(0)
    g = rng.random((n, n)).T  # Fortran order without a second n x n copy
    for k in ks:
        v = np.asfortranarray(rng.random((n, k)))
        gemm = 1e3 * median_seconds(lambda: g @ v, repeats)
        symm = 1e3 * median_seconds(lambda: blas.dsymm(1.0, g, v, side=0, lower=1), repeats)
        print(f"n = {n}  k = {k:3d}  dense G @ V (dgemm) {gemm:8.1f} ms   dsymm {symm:8.1f} ms")


if __name__ == "__main__":
    main()
