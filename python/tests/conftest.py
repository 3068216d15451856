"""Shared fixtures: the C++ reference outputs (tests/reference.cpp), exact hex floats."""
import os
import subprocess

import numpy as np
import pytest


@pytest.fixture(scope="session")
def reference():
    program = os.environ.get("NTK_REFERENCE")
    if not program:
        if os.environ.get("NTK_PYTEST_REQUIRE_REFERENCE"):  # set by CTest: a skip there would hide a defect
            pytest.fail("NTK_REFERENCE (the ntk_python_reference program) is not set")
        pytest.skip("NTK_REFERENCE (the ntk_python_reference program) is not set")
    text = subprocess.run([program], check=True, capture_output=True, text=True).stdout
    out = {}
    for line in text.splitlines():
        words = line.split()
        # The name is every word before the two integer sizes that precede the values.
        for k in range(1, len(words) - 1):
            if words[k].isdigit() and words[k + 1].isdigit():
                name, rows, cols = " ".join(words[:k]), int(words[k]), int(words[k + 1])
                values = [float.fromhex(v) for v in words[k + 2:]]
                out[name] = np.array(values, dtype=np.float64).reshape((rows, cols), order="F")
                break
    return out
