#!/usr/bin/python3
"""Cost model of the distributed Gram operator and the ScaLAPACK paths (README, "Beyond one
machine").  Constants are per core and come from bench_mpi on this machine (mpi_scaling.sh);
network constants are assumptions about a cluster (stated in the output).

  benchmarks/mpi_cost_model.py [--entry S] [--product S] [--cholesky S] [--eig S] [--d D] [--k K]

Model, for n points, P ranks (one core each), k right-hand sides, d features:
  entries E = n (n + 1) / 2 of the triangle, split in equal counts (1/P each, +- one tile)
  kernel phase per rank      T_kernel = (E / P) * c_entry        c_entry: seconds per entry (1 core)
  Gram memory per rank       8 E / P bytes (+ 8 n d replicated inputs, + 8 n r Nystrom factor)
  product K.V per rank       T_prod = (E / P) * k * c_prod       (each stored entry read once, used twice)
  bytes per product per rank 2 * 8 (n k + 1) (P - 1) / P sent (and as many received):
                             reduce-scatter + all-gather, O(n k), independent of n^2
  communication time         2 (P - 1)/P * 8 n k / beta + 2 ceil(log2 P) * alpha
  replicated CG work         4 n r k flops per iteration on every rank (Nystrom preconditioner
                             apply; not divided by P) / flops
  Cholesky (pdpotrf)         n^3 / 3 flops / P, eigendecomposition (pdsyevd, vectors) ~5 n^3 / P,
                             at --dense-flops per core and perfect scaling (a lower bound on the
                             time; memory 8 n^2 / P per matrix, two for pdsyevd plus workspace)
"""
import argparse
import math

parser = argparse.ArgumentParser()
parser.add_argument("--entry", type=float, default=7.94e-8, help="kernel seconds per entry, 1 core")
parser.add_argument("--product", type=float, default=2.0e-10, help="product seconds per entry and column, 1 core")
parser.add_argument("--dense-flops", type=float, default=10e9,
                    help="sustained ScaLAPACK flop/s per core (assumed; measured here under load: 2-3e9)")
parser.add_argument("--d", type=int, default=784)
parser.add_argument("--k", type=int, default=10)
parser.add_argument("--rank", type=int, default=1000, help="Nystrom preconditioner rank r")
parser.add_argument("--flops", type=float, default=2e10, help="dense GEMM flop/s per core, assumed")
parser.add_argument("--alpha", type=float, default=2e-6, help="network latency (s), assumed")
parser.add_argument("--beta", type=float, default=10e9, help="network bandwidth (bytes/s), assumed")
a = parser.parse_args()

def fmt_time(s):
    if s < 1: return f"{s * 1e3:.1f} ms"
    if s < 120: return f"{s:.1f} s"
    if s < 7200: return f"{s / 60:.1f} min"
    if s < 172800: return f"{s / 3600:.1f} h"
    return f"{s / 86400:.0f} d"

def fmt_bytes(b):
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= size: return f"{b / size:.1f} {unit}"
    return f"{b:.0f} B"

print(f"# constants: c_entry = {a.entry:.3g} s, c_prod = {a.product:.3g} s, d = {a.d}, k = {a.k}, "
      f"r = {a.rank}; GEMM {a.flops / 1e9:g} GFlop/s, ScaLAPACK {a.dense_flops / 1e9:g} GFlop/s, network alpha = {a.alpha:g} s, beta = {a.beta / 1e9:g} GB/s (assumed)")
print("| n | P | kernel phase | Gram per rank | other memory per rank | product per CG iteration | bytes per iteration per rank | comm per iteration | replicated preconditioner per iteration | Cholesky (pdpotrf) | eigendecomposition (pdsyevd) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for n in (8000, 60000, 1000000):
    for p in ((1, 2) if n == 8000 else (16, 256)):
        e = n * (n + 1) / 2
        kernel = e / p * a.entry
        gram = 8 * e / p
        other = 8 * n * a.d + 8 * n * a.rank + 8 * 8 * n * a.k
        product = e / p * a.k * a.product
        sent = 2 * 8 * (n * a.k + 1) * (p - 1) / p
        comm = sent / a.beta + 2 * math.ceil(math.log2(p)) * a.alpha if p > 1 else 0
        precond = 4 * n * a.rank * a.k / a.flops
        chol = n**3 / 3 / p / a.dense_flops
        eig = 5 * n**3 / p / a.dense_flops
        print(f"| {n:,} | {p} | {fmt_time(kernel)} | {fmt_bytes(gram)} | {fmt_bytes(other)} | "
              f"{fmt_time(product)} | {fmt_bytes(sent)} | {fmt_time(comm)} | {fmt_time(precond)} | {fmt_time(chol)} | {fmt_time(eig)} |")
