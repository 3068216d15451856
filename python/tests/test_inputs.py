"""Bad and unusual inputs: handled (converted, no copy where possible) or rejected with a clear
Python exception carrying the C++ message; the GIL is released while C++ computes."""
import threading
import time

import numpy as np
import pytest

import ntk


def data(n=6, d=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def test_nan_and_inf_inputs_raise_value_error_naming_the_entry():
    x = data()
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"ntk::kernel: x1 has a non-finite entry at \(2, 1\)"):
        ntk.kernel(x)
    y = data()
    y[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"x2 has a non-finite entry at \(0, 0\)"):
        ntk.kernel(data(), y)


def test_one_dimensional_and_empty_inputs_are_rejected():
    with pytest.raises(ValueError, match=r"must be 2-D.*reshape\(1, -1\)"):
        ntk.kernel(np.ones(3))
    with pytest.raises(ValueError, match=r"x1 must be non-empty|x1.*empty"):
        ntk.kernel(np.ones((0, 3)))
    with pytest.raises(ValueError, match="empty"):
        ntk.kernel(np.ones((2, 0)))
    with pytest.raises(ValueError, match="same number of features"):
        ntk.kernel(data(4, 3), data(4, 2))
    with pytest.raises(ValueError, match="numeric"):
        ntk.kernel(np.array([["a", "b"]]))


def test_bad_parameters_raise_value_error_with_the_library_message():
    with pytest.raises(ValueError, match=r"ntk::mlp: sigma_w must be positive"):
        ntk.kernel(data(), sigma_w=-1.0)
    with pytest.raises(ValueError, match=r"ntk::mlp: depth must be"):
        ntk.kernel(data(), depth=0)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        ntk.kernel(data(), activation="swish")
    with pytest.raises(ValueError, match="kind must be"):
        ntk.kernel(data(), kind="gp")
    with pytest.raises(ValueError, match="depth \\+ 1 = 4"):
        ntk.kernel(data(), depth=3, sigma_w=[1.0, 1.0])
    with pytest.raises(TypeError, match="activation must be a name"):
        ntk.kernel(data(), activation=3)
    with pytest.raises(ValueError, match="threads"):
        ntk.kernel(data(), threads=0)


def test_overflow_raises_overflow_error():
    with pytest.raises(OverflowError, match="overflows"):
        ntk.kernel(data(), depth=10000, sigma_w=2.0, sigma_b=0.0)


def test_integer_boolean_and_float32_inputs():
    xi = np.arange(12).reshape(4, 3)
    np.testing.assert_array_equal(ntk.kernel(xi), ntk.kernel(xi.astype(np.float64)))
    x32 = data().astype(np.float32)
    k = ntk.kernel(x32)
    assert k.dtype == np.float32
    np.testing.assert_allclose(k, ntk.kernel(x32.astype(np.float64)), rtol=1e-5)
    # x2 of another dtype follows x1's.
    assert ntk.kernel(x32, data(2)).dtype == np.float32


def test_results_are_numpy_arrays_of_the_right_shapes():
    x, z = data(5), data(3)
    k = ntk.kernel(x, z)
    assert isinstance(k, np.ndarray) and k.shape == (5, 3)
    d = ntk.kernel_diagonal(x)
    np.testing.assert_allclose(d.ntk, np.diag(ntk.kernel(x)), rtol=1e-14)
    np.testing.assert_allclose(d.nngp, np.diag(ntk.kernel(x, kind="nngp")), rtol=1e-14)


def test_threads_do_not_change_the_result():
    x = data(200, 7)
    np.testing.assert_array_equal(ntk.kernel(x, threads=1), ntk.kernel(x, threads=2))


def test_the_gil_is_released_during_the_computation():
    x = data(1500, 50)
    done = threading.Event()
    result = {}

    def work():
        result["k"] = ntk.kernel(x, activation="erf", depth=20)
        done.set()

    start = time.perf_counter()
    thread = threading.Thread(target=work)
    thread.start()
    ticks = 0
    while not done.is_set():  # runs only if the worker does not hold the GIL
        ticks += 1
        time.sleep(0.001)
    thread.join()
    elapsed = time.perf_counter() - start
    assert result["k"].shape == (1500, 1500)
    # Holding the GIL, the loop would get about one tick per switch interval (5 ms) at most.
    assert ticks >= 0.3 * elapsed / 0.001 or elapsed < 0.05


def test_network_and_dynamics_input_errors():
    with pytest.raises(ValueError, match="input_dimension"):
        ntk.Network(0)
    net = ntk.Network(3, width=8, seed=1)
    with pytest.raises(ValueError, match="features|columns|input"):
        net.forward(data(4, 2))
    with pytest.raises(ValueError, match="theta must have"):
        net.parameters = np.zeros(3)
    with pytest.raises(ValueError, match="positive semi-definite"):
        ntk.LinearizedDynamics(-np.eye(3), np.ones(3))
    with pytest.raises(ValueError, match="diverges"):
        ntk.LinearizedDynamics(np.eye(3) * 10, np.ones(3), learning_rate=1.0, discrete=True)
    with pytest.raises(ValueError, match="labels"):
        ntk.DeepKernelClassifier().fit(data(4), [0.5, 1, 1, 1])


def test_dynamics_match_the_closed_form_in_numpy():
    x, z = data(8), data(3, seed=1)
    y = np.sin(x[:, :2])
    g, k = ntk.kernel(x), ntk.kernel(z, x)
    d = ntk.LinearizedDynamics(g, y, learning_rate=0.3)
    lam, v = np.linalg.eigh(g)
    t = 2.0
    expected = k @ v @ np.diag(-np.expm1(-0.3 * lam * t) / lam) @ v.T @ y
    np.testing.assert_allclose(d.test_predictions(k, t), expected, rtol=1e-9, atol=1e-12)
    # theta_t - theta_0 for the empirical kernel J J^T equals -J^T G^-1 (I - e^{-eta G t})(f0 - y).
    net = ntk.Network(3, width=32, seed=4)
    j = net.jacobian(x)
    f0 = net.forward(x)
    e = ntk.LinearizedDynamics(j @ j.T, y[:, :1], f0, learning_rate=0.3)
    lam, v = np.linalg.eigh(j @ j.T)
    change = -j.T @ (v @ np.diag(-np.expm1(-0.3 * lam * t) / lam) @ v.T @ (f0 - y[:, :1]))
    np.testing.assert_allclose(e.parameter_change(j, t), change[:, 0], rtol=1e-6, atol=1e-10)
