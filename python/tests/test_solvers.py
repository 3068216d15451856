"""ntk.kernel_regression: the C++ large-n solvers (solvers.hpp) from Python.  The dense
eigendecomposition is the reference; Cholesky is exact up to rounding, CG and Chebyshev to the
tolerances docs/large_scale.md documents."""
import numpy as np
import pytest

import ntk


def problem(n=120, m=15, d=6, k=2, seed=0):
    rng = np.random.default_rng(seed)
    x, z = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    y = np.stack([np.sin(x @ np.ones(d)), np.cos(x[:, 0])], axis=1)[:, :k]
    return x, y, z


def reference(x, y, z, t, ridge, kind="ntk", depth=3):
    g = ntk.kernel(x, kind=kind, depth=depth)
    dynamics = ntk.LinearizedDynamics(g, y, diag_reg=ridge)
    return dynamics.test_predictions(ntk.kernel(z, x, kind=kind, depth=depth), t)


def relative(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_cholesky_and_cg_agree_with_the_eigendecomposition_at_t_inf(kind):
    x, y, z = problem()
    ridge = 1e-3
    expected = reference(x, y, z, np.inf, ridge, kind)
    eigen, info = ntk.kernel_regression(x, y, z, kind=kind, diag_reg=ridge, solver="eigen", return_info=True)
    assert info.method == "eigen" and info.iterations is None
    assert relative(eigen, expected) <= 1e-10  # LinearizedDynamics by another call sequence: rounding x cond
    chol, info = ntk.kernel_regression(x, y, z, kind=kind, diag_reg=ridge, solver="cholesky", return_info=True)
    assert info.method == "cholesky"
    # backward-stable Cholesky vs eigendecomposition: rounding times cond(G + ridge I) <= 1e6 here
    assert relative(chol, expected) <= 1e-8
    cg, info = ntk.kernel_regression(x, y, z, kind=kind, diag_reg=ridge, solver="cg", tolerance=1e-12,
                                     return_info=True)
    # converged at 1e-12 by CG's recurrence; the residual recomputed from alpha adds rounding (n eps cond)
    assert info.method == "packed" and info.converged and info.residual <= 1e-11 and info.iterations >= 1
    # docs/large_scale.md: at tolerance 1e-12, test predictions within 1e-8 relative of the eigen path
    assert relative(cg, expected) <= 1e-8
    free = ntk.kernel_regression(x, y, z, kind=kind, diag_reg=ridge, solver="matrix-free", tolerance=1e-12)
    assert relative(free, expected) <= 1e-8
    auto, info = ntk.kernel_regression(x, y, z, kind=kind, diag_reg=ridge, return_info=True)
    assert info.method == "cholesky"  # t = inf, small n: plan_solver's choice
    np.testing.assert_array_equal(auto, chol)


def test_finite_times_by_chebyshev_agree_with_the_eigendecomposition():
    x, y, z = problem(k=1)
    times = [1.0, np.inf]
    ridge = 1e-3
    expected = [reference(x, y, z, t, ridge) for t in times]
    eigen = ntk.kernel_regression(x, y, z, time=times, diag_reg=ridge, solver="auto")
    for a, b in zip(eigen, expected):
        assert relative(a, b) <= 1e-10
    cg, info = ntk.kernel_regression(x, y, z, time=times, diag_reg=ridge, solver="cg", tolerance=1e-10,
                                     max_iterations=20000, return_info=True)
    assert info.chebyshev_degree >= 1 and info.chebyshev_error <= 1e-9
    for a, b in zip(cg, expected):  # docs/large_scale.md: <= 1e-6 relative at tolerance 1e-10
        assert relative(a, b) <= 1e-6


# eta t lambda_max about 3700: the expansion once stopped at degree 63 with an error estimate of 0
# and predictions 19% off (fixed in solvers.hpp; the C++ test is "Chebyshev at long times").
def test_chebyshev_at_a_longer_time():
    x, y, z = problem(k=1)
    expected = reference(x, y, z, 10.0, 1e-3)
    cg = ntk.kernel_regression(x, y, z, time=10.0, diag_reg=1e-3, solver="cg", tolerance=1e-10,
                               max_iterations=20000)
    assert relative(cg, expected) <= 1e-6


def test_one_column_targets_and_custom_activations():
    x, y, z = problem(k=1)
    out = ntk.kernel_regression(x, y[:, 0], z, diag_reg=1e-3)
    assert out.shape == (15,)
    tanh = (np.tanh, lambda v: 1 - np.tanh(v) ** 2)
    a = ntk.kernel_regression(x, y, z, activation=tanh, diag_reg=1e-3, solver="cg", tolerance=1e-12)
    b = ntk.kernel_regression(x, y, z, activation="tanh", diag_reg=1e-3, solver="eigen")
    assert relative(a, b) <= 1e-8


def test_bad_arguments_raise_value_error():
    x, y, z = problem()
    with pytest.raises(ValueError, match="solver must be"):
        ntk.kernel_regression(x, y, z, solver="lu")
    with pytest.raises(ValueError, match="kind must be"):
        ntk.kernel_regression(x, y, z, kind="both")
    with pytest.raises(ValueError, match="cholesky answers t = inf only"):
        ntk.kernel_regression(x, y, z, time=1.0, solver="cholesky")
    with pytest.raises(ValueError, match="need a ridge > 0"):
        ntk.kernel_regression(x, y, z, solver="cg")
    with pytest.raises(ValueError, match="one row per x_train row"):
        ntk.kernel_regression(x, y[:5], z)
    with pytest.raises(ValueError, match="memory limit"):
        ntk.kernel_regression(x, y, z, diag_reg=1e-3, memory_limit=1000)
    with pytest.raises(ValueError, match="time"):
        ntk.kernel_regression(x, y, z, time=-1.0)


def test_cg_that_cannot_converge_raises_runtime_error():
    x, y, z = problem()
    with pytest.raises(RuntimeError, match="cg_solve"):
        ntk.kernel_regression(x, y, z, diag_reg=1e-9, solver="cg", tolerance=1e-14, max_iterations=1,
                              preconditioner_rank=0)
