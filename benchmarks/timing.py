"""Timing helper shared by the Python benchmark scripts in this directory."""
import time

import numpy as np


def median_seconds(f, repeats=7):
    """The median wall time of `repeats` calls of f(), in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return float(np.median(times))
