#!/usr/bin/python3
"""Coefficients of include/ntk/detail/math.hpp's asin polynomial (needs python3-mpmath).

g(z) = asin(sqrt z)/sqrt z on z in [0, 1/2] is interpolated at 20 Chebyshev points in 50-digit
arithmetic and written in monomials of z; prints the coefficients and the largest
relative error of the double-rounded polynomial on a fine grid."""
import mpmath as mp

mp.mp.dps = 50
N, LO, HI = 20, mp.mpf(0), mp.mpf(1) / 2
CENTER = LO  # monomials in z: the constant term is exactly 1


def g(z):
    if z == 0:
        return mp.mpf(1)
    y = mp.sqrt(z)
    return mp.asin(y) / y


nodes = [(LO + HI) / 2 + (HI - LO) / 2 * mp.cos(mp.pi * (k + mp.mpf(1) / 2) / N) for k in range(N)]
A = mp.matrix([[(z - CENTER) ** j for j in range(N)] for z in nodes])
c = mp.lu_solve(A, mp.matrix([g(z) for z in nodes]))
rounded = [float(c[j]) for j in range(N)]
for v in rounded:
    print("%.17e" % v)
worst = 0
for k in range(4001):
    z = LO + (HI - LO) * k / 4000
    p = mp.mpf(0)
    for v in reversed(rounded):
        p = p * (z - CENTER) + v
    worst = max(worst, abs(p / g(z) - 1))
print("max relative error", mp.nstr(worst, 3))
