"""Activations from Python: vectorized callables phi (and phi'), evaluated in a few batch calls per
layer by the library's setup paths (Hermite series, tabulated dual, diagonal chains), never once per
kernel entry; errors in the callable arrive as Python exceptions."""
import numpy as np
import pytest

import ntk


def tanh_derivative(z):
    return 1.0 - np.tanh(z) ** 2


class Counting:
    """A vectorized callable that counts its calls and the points it was given."""

    def __init__(self, f):
        self.f, self.calls, self.points = f, 0, 0

    def __call__(self, z):
        assert isinstance(z, np.ndarray) and z.ndim == 1 and z.dtype == np.float64
        self.calls += 1
        self.points += z.size
        return self.f(z)


def equal_norm(n, d=5, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(d)


def different_norm(n, d=5, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * rng.uniform(0.5, 1.5, size=(n, 1))


def relative_error(a, b):
    scale = np.max(np.abs(b))
    return np.max(np.abs(a - b)) / scale if scale > 0 else np.max(np.abs(a))


@pytest.mark.parametrize("inputs", [equal_norm, different_norm])
def test_python_tanh_reproduces_the_builtin_tanh_kernel(inputs):
    # Both use the library's Gauss-Hermite machinery with tolerance 1e-12 per layer (series or
    # table); the built-in tabulates product quadrature, the callable the Mehler series, so they
    # agree to about 1e-12 per layer, far inside 1e-10.
    x, z = inputs(30), inputs(7, seed=5)
    for kind in ("nngp", "ntk"):
        for args in ((x,), (x, z)):
            builtin = ntk.kernel(*args, activation="tanh", depth=3, sigma_b=0.5, kind=kind)
            custom = ntk.kernel(*args, activation=(np.tanh, tanh_derivative), depth=3, sigma_b=0.5, kind=kind)
            assert relative_error(custom, builtin) <= 1e-10, (kind, relative_error(custom, builtin))
    layers_builtin = ntk.kernel_layers(x, z, activation="tanh", depth=2, sigma_b=0.5)
    layers_custom = ntk.kernel_layers(x, z, activation=(np.tanh, tanh_derivative), depth=2, sigma_b=0.5)
    for a, b in zip(layers_custom, layers_builtin):
        for u, v in zip(a, b):
            assert relative_error(u, v) <= 1e-10
    d_builtin = ntk.kernel_diagonal(x, activation="tanh", sigma_b=0.5)
    d_custom = ntk.kernel_diagonal(x, activation=(np.tanh, tanh_derivative), sigma_b=0.5)
    assert relative_error(d_custom.ntk, d_builtin.ntk) <= 1e-12  # the same 1-D rule per point


@pytest.mark.parametrize("inputs", [equal_norm, different_norm])
def test_python_calls_are_a_few_per_layer_whatever_the_number_of_points(inputs):
    counts = []
    for n in (20, 400):
        phi, dphi = Counting(np.tanh), Counting(tanh_derivative)
        ntk.kernel(inputs(n), activation=(phi, dphi), depth=3, sigma_w=0.8, sigma_b=0.5)
        assert phi.calls == dphi.calls
        counts.append(phi.calls)
    assert counts[0] == counts[1], counts  # independent of n: no call per entry or per point
    # Per activation layer: the series (one call per rule order tried, at most 3 here; rules go up
    # to 4096 nodes) and the diagonal chain (one call below 2^20 nodes).
    assert counts[1] <= 3 * (3 + 1), counts


def test_phi_alone_uses_the_documented_numerical_derivative():
    # 4-point central difference, error ~1e-12 for tanh (h = 2^-10: truncation h^4 |phi^(5)|/30 ~ 1e-13,
    # rounding 1.5 eps / h ~ 3.4e-13); through three layers that stays below 1e-10 relative.
    assert ntk.numerical_derivative_step(0.3) == 2.0 ** -10
    assert ntk.numerical_derivative_step(5.0) == 2.0 ** -10 * 8
    for x in (equal_norm(20), different_norm(20)):
        builtin = ntk.kernel(x, activation="tanh", depth=3)
        counted = Counting(np.tanh)
        custom = ntk.kernel(x, activation=counted, depth=3)
        assert relative_error(custom, builtin) <= 1e-10
        assert counted.calls <= 3 * 2 * (3 + 1)  # phi at z, and once at the four shifted points


def test_limit_constants_and_deep_kernel_of_a_python_tanh():
    builtin = ntk.limit_constants("tanh")
    custom = ntk.limit_constants((np.tanh, tanh_derivative))
    for a, b in zip(custom[:-1], builtin[:-1]):
        assert abs(a - b) <= 1e-12 * max(1.0, abs(b))
    assert custom.regime == builtin.regime
    x = different_norm(6)
    np.testing.assert_allclose(ntk.deep_kernel(x, activation=(np.tanh, tanh_derivative), depth=20),
                               ntk.deep_kernel(x, activation="tanh", depth=20), rtol=0, atol=1e-10)


def test_python_tanh_network_matches_the_builtin_network():
    x = different_norm(8, d=4)
    builtin = ntk.Network(4, activation="tanh", depth=2, width=64, seed=3)
    phi, dphi = Counting(np.tanh), Counting(tanh_derivative)
    custom = ntk.Network(4, activation=(phi, dphi), depth=2, width=64, seed=3)
    np.testing.assert_allclose(custom.forward(x), builtin.forward(x), rtol=1e-14, atol=1e-14)
    assert phi.calls == 2  # one batch per activation layer, n x width values each
    np.testing.assert_allclose(custom.empirical_ntk(x), builtin.empirical_ntk(x), rtol=1e-12)
    np.testing.assert_allclose(custom.gradient(x, np.ones(8)), builtin.gradient(x, np.ones(8)), rtol=1e-12,
                               atol=1e-13)


def raising(z):
    raise RuntimeError("boom from phi")


@pytest.mark.parametrize("inputs", [equal_norm, different_norm])
def test_a_raising_callable_raises_its_exception(inputs):
    with pytest.raises(RuntimeError, match="boom from phi"):
        ntk.kernel(inputs(10), activation=(raising, tanh_derivative))
    with pytest.raises(RuntimeError, match="boom from phi"):
        ntk.kernel(inputs(10), activation=(np.tanh, raising))
    with pytest.raises(RuntimeError, match="boom from phi"):
        ntk.Network(5, activation=(raising, tanh_derivative), depth=1, width=4).forward(inputs(3))


@pytest.mark.parametrize("inputs", [equal_norm, different_norm])
def test_nan_results_raise_floating_point_error(inputs):
    def nan_at_large(z):
        return np.where(np.abs(z) > 2.0, np.nan, np.tanh(z))

    with pytest.raises(FloatingPointError, match="phi returned a non-finite value"):
        ntk.kernel(inputs(10), activation=(nan_at_large, tanh_derivative))
    with pytest.raises(FloatingPointError, match="dphi returned a non-finite value"):
        ntk.kernel(inputs(10), activation=(np.tanh, lambda z: np.full_like(z, np.inf)))


@pytest.mark.parametrize("bad, message", [
    (lambda z: np.tanh(z)[:-1], r"same length \(got shape \(\d+,\) for an input of shape"),
    (lambda z: np.tanh(z).reshape(1, -1), r"got shape \(1, \d+\)"),
    (lambda z: "tanh", r"got an object of type str|got shape"),
    (lambda z: None, r"got an object of type NoneType|got shape"),
    (lambda z: 1.0, r"got shape \(\)"),
])
def test_wrong_shapes_and_types_raise_value_error(bad, message):
    for x in (equal_norm(10), different_norm(10)):
        with pytest.raises(ValueError, match=message):
            ntk.kernel(x, activation=(bad, tanh_derivative))
    with pytest.raises(ValueError, match=message):
        ntk.Network(5, activation=(bad, tanh_derivative), depth=1, width=4).forward(equal_norm(3))


def relu_pair():
    return (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float))


def scaled_to_variance(x, q_max, sigma_w=1.0, sigma_b=1.0):
    """x scaled so that the largest first-layer variance sigma_w^2 |x|^2 / d + sigma_b^2 is q_max."""
    largest = sigma_w ** 2 * np.max(np.sum(x ** 2, axis=1)) / x.shape[1]
    return x * np.sqrt((q_max - sigma_b ** 2) / largest)


@pytest.mark.parametrize("inputs", [equal_norm, different_norm])
def test_python_relu_is_refused_not_silently_wrong(inputs):
    # A kink: no Hermite series converges (the discrete tail stays ~1e-3 of E[phi^2] at 4096 nodes),
    # and product quadrature converges only algebraically (the old table of a Python ReLU at a common
    # norm was 2.4e-2 off the closed form at depth 1, silently).  Now a ValueError that says so.
    x = inputs(10)
    for depth in (1, 3):
        with pytest.raises(ValueError, match=r"does not converge to the series tolerance within 4096 nodes.*ReLU"):
            ntk.kernel(x, activation=relu_pair(), depth=depth)
    with pytest.raises(ValueError, match="does not converge"):
        ntk.kernel_diagonal(x, activation=relu_pair())


def test_explicit_quadrature_order_accepts_an_approximate_python_relu():
    # At a common norm an explicit order is product quadrature of that order, batched; at the kink its
    # error is algebraic in the order: measured 1.5e-2 (order 64), 4.9e-3 (512), 2.0e-3 (2048) on the depth-2 NTK.
    x = equal_norm(10)
    exact = ntk.kernel(x, activation="relu", depth=2)
    errors = [relative_error(ntk.kernel(x, activation=relu_pair(), depth=2, quadrature=order), exact)
              for order in (64, 512)]
    assert errors[1] < errors[0] < 5e-2, errors
    # Inputs of different norms would need it per entry: refused.
    with pytest.raises(ValueError, match="evaluated in batches only.*explicit quadrature order"):
        ntk.kernel(different_norm(10), activation=(np.tanh, tanh_derivative), quadrature=64)
    assert relative_error(ntk.kernel(x, activation=(np.tanh, tanh_derivative), quadrature=128),
                          ntk.kernel(x, activation="tanh", quadrature=128)) <= 1e-13


@pytest.mark.parametrize("q_max", [6.0, 10.0, 17.0])
def test_python_tanh_at_large_variances_and_mixed_norms_matches_the_builtin(q_max):
    # The Hermite series of a batch-only activation may use rules up to 4096 nodes (built-in
    # activations stop at 1024 and switch to per-entry rules, which a Python callable cannot afford):
    # a Python tanh converges to the 1e-12 series tolerance for variances up to about 17.9.  The old
    # code refused variances beyond about 5 (ValueError).  The built-in tanh takes its saturating
    # rule beyond 3.4, so this compares two different methods.
    x, z = different_norm(24), different_norm(7, seed=5)
    x, z = scaled_to_variance(x, q_max, 1.5, 0.5), scaled_to_variance(z, q_max * 0.8, 1.5, 0.5)
    arch = dict(depth=3, sigma_w=1.5, sigma_b=0.5)
    for args in ((x,), (x, z)):
        builtin = ntk.kernel(*args, activation="tanh", kind="both", **arch)
        custom = ntk.kernel(*args, activation=(np.tanh, tanh_derivative), kind="both", **arch)
        for u, v in zip(custom, builtin):
            assert relative_error(u, v) <= 1e-10, (q_max, relative_error(u, v))
    d_builtin = ntk.kernel_diagonal(x, activation="tanh", **arch)
    d_custom = ntk.kernel_diagonal(x, activation=(np.tanh, tanh_derivative), **arch)
    for u, v in zip(d_custom, d_builtin):
        assert relative_error(u, v) <= 1e-10


@pytest.mark.parametrize("q", [5.0, 16.0])
def test_python_tanh_at_a_common_norm_and_large_variance_matches_the_builtin(q):
    # At a common norm the series is tabulated in the correlation only where the table reproduces it
    # to the series tolerance (checked on 1025 correlations); at large variance the dual has corners
    # of width ~1/q at rho = +-1 and the series is used per entry instead.  The old table came from a
    # 512-node product rule beyond q ~ 5, silently off (depth-3 NTK: 8.2e-8 at q = 10, 5.3e-6 at
    # q = 16) in 97 calls of 71 million points.
    x = scaled_to_variance(equal_norm(20), q, 1.0, 1.0)
    for kind in ("nngp", "ntk"):
        builtin = ntk.kernel(x, activation="tanh", depth=3, kind=kind)
        phi, dphi = Counting(np.tanh), Counting(tanh_derivative)
        custom = ntk.kernel(x, activation=(phi, dphi), depth=3, kind=kind)
        assert relative_error(custom, builtin) <= 1e-10, (q, kind, relative_error(custom, builtin))
        assert phi.calls <= 3 * 5  # per layer: at most 4 rule orders here, and the diagonal


def test_python_calls_stay_a_few_per_layer_at_large_variances():
    counts = []
    for n in (20, 200):
        x = scaled_to_variance(different_norm(n), 15.0)
        phi, dphi = Counting(np.tanh), Counting(tanh_derivative)
        ntk.kernel(x, activation=(phi, dphi), depth=3)
        counts.append(phi.calls)
    # Per layer: rule orders 1024, 2048, 4096 at the first layer's variances (one call each while the
    # n x order points stay below 2^20), the diagonal chain; the later layers see variances below 2.
    assert counts[1] <= 3 * 6 and counts[0] <= counts[1], counts


def test_series_limit_beyond_the_documented_variance_is_a_clear_error():
    # Beyond about 17.9 the series of tanh needs more than 4096 nodes: a ValueError naming the
    # variance and the bound, not per-entry quadrature.
    x = scaled_to_variance(different_norm(30), 25.0)
    with pytest.raises(ValueError, match=r"within 4096 nodes at these variances \(up to 25.*17\.9 for tanh"):
        ntk.kernel_diagonal(x, activation=(np.tanh, tanh_derivative))
    with pytest.raises(ValueError, match=r"within 4096 nodes at variance \d.*17\.9 for tanh"):
        ntk.kernel(scaled_to_variance(equal_norm(10), 25.0), activation=(np.tanh, tanh_derivative), depth=1)


def test_bad_activation_arguments_raise_type_error():
    with pytest.raises(TypeError, match="pair"):
        ntk.kernel(equal_norm(4), activation=(np.tanh,))
    with pytest.raises(TypeError, match="pair"):
        ntk.kernel(equal_norm(4), activation=(np.tanh, 3))


def test_deep_limit_refuses_a_kinked_callable():
    # Gauss-Hermite at a kink: a Python ReLU's E[phi] was 8e-4 off and deep_kernel 8.5e-3, silently.
    with pytest.raises(ValueError, match="moments of this activation callable do not converge"):
        ntk.limit_constants(relu_pair())
    with pytest.raises(ValueError, match="moments of this activation callable do not converge"):
        ntk.deep_kernel(different_norm(4), activation=relu_pair(), depth=5)
    # a smooth callable without its derivative (finite differences) still passes
    custom = ntk.limit_constants(np.tanh)
    assert abs(custom.B - ntk.limit_constants("tanh").B) <= 1e-9
