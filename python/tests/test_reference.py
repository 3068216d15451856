"""The bindings return exactly what the C++ library returns on the same inputs (bit for bit), and the
reference values the C++ tests use (docs/mathematics.md T5) pass through Python too."""
import numpy as np
import pytest

import ntk

NAMES = ["relu", "leaky_relu:0.2", "abs", "erf", "tanh", "sigmoid", "gelu", "identity", "sin", "cos", "softplus",
         "hermite:0.1,0.5,0.3", "opt:3"]
SIGMA_W = [1.3, 0.9, 1.3, 1.3]
SIGMA_B = [0.2, 0.2, 0.2, 0.5]


def exact(a, b):
    a = np.asarray(a, dtype=np.float64)
    assert a.shape == b.shape
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_kernel_every_activation_bit_for_bit(reference, name):
    x1, x2 = reference["x1"], reference["x2"]
    options = dict(activation=name, depth=3, sigma_w=SIGMA_W, sigma_b=SIGMA_B)
    both = ntk.kernel(x1, x2, kind="both", **options)
    exact(both.ntk, reference[f"kernel {name} ntk"])
    exact(both.nngp, reference[f"kernel {name} nngp"])
    exact(ntk.kernel(x1, x2, **options), reference[f"kernel {name} ntk"])
    exact(ntk.kernel(x1, **options), reference[f"kernel {name} ntk_sym"])
    f1, f2 = x1.astype(np.float32), x2.astype(np.float32)
    k32 = ntk.kernel(f1, f2, **options)
    assert k32.dtype == np.float32
    exact(k32, reference[f"kernel {name} f32"])
    exact(ntk.kernel(f1, kind="nngp", **options), reference[f"kernel {name} f32_sym"])


@pytest.mark.parametrize("layout", ["C", "F", "rows_strided", "cols_strided", "mixed"])
def test_layouts_give_the_same_bits(reference, layout):
    x1, x2 = reference["x1"], reference["x2"]
    if layout == "C":
        a, b = np.ascontiguousarray(x1), np.ascontiguousarray(x2)
    elif layout == "F":
        a, b = np.asfortranarray(x1), np.asfortranarray(x2)
    elif layout == "rows_strided":  # every other row of a C array: rows contiguous, no copy
        big = np.zeros((2 * x1.shape[0], x1.shape[1]))
        big[::2] = x1
        a, b = big[::2], x2
        assert not a.flags.c_contiguous
    elif layout == "cols_strided":  # fully strided (neither rows nor columns contiguous): copied
        big = np.zeros((x1.shape[0], 2 * x1.shape[1]), order="F")
        big[:, ::2] = x1
        a, b = big[:, ::2][:, :], x2
        big2 = np.zeros((2 * x1.shape[0], 2 * x1.shape[1]))
        big2[::2, ::2] = x1
        a = big2[::2, ::2]
    else:
        a, b = np.ascontiguousarray(x1), np.asfortranarray(x2)
    options = dict(activation="gelu", depth=3, sigma_w=SIGMA_W, sigma_b=SIGMA_B)
    result = ntk.kernel(a, b, **options)
    if layout == "F":  # the reference program's own layout (column-major): the same bits
        exact(result, reference["kernel gelu ntk"])
    else:
        # Row-major and strided arrays are used in place (no copy); Eigen then forms the input
        # dot products in another order, so entries may differ in the last bits (measured: 1 ulp
        # on 84 of 777 GELU entries).  Anything beyond a few ulp would be a real difference.
        np.testing.assert_array_max_ulp(np.asarray(result), reference["kernel gelu ntk"], maxulp=8)


def test_per_layer_kernels_bit_for_bit(reference):
    layers = ntk.kernel_layers(reference["x1"], reference["x2"], activation="relu", depth=2)
    assert len(layers) == 3
    for l, layer in enumerate(layers):
        exact(layer.nngp, reference[f"layers {l} nngp"])
        exact(layer.nngp_dot, reference[f"layers {l} nngp_dot"])
        exact(layer.ntk, reference[f"layers {l} ntk"])


def test_network_bit_for_bit(reference):
    x1, x2, y = reference["x1"], reference["x2"], reference["y"]
    net = ntk.Network(5, activation="tanh", depth=2, width=16, outputs=2, sigma_w=1.2, sigma_b=0.3, seed=7)
    exact(net.parameters, reference["network parameters"][:, 0])
    exact(net.forward(x1), reference["network forward"])
    exact(net.jacobian(x2), reference["network jacobian"])
    exact(net.empirical_ntk(x1, x2), reference["network ntk"])
    exact(net.empirical_ntk(x2, full=True), reference["network ntk_full"])
    history = net.train(x1, y, learning_rate=0.01, steps=5)
    exact(history["loss"], reference["network loss"][:, 0])
    exact(net.parameters, reference["network trained"][:, 0])


def test_dynamics_bit_for_bit(reference):
    x1, x2, y = reference["x1"], reference["x2"], reference["y"]
    g = ntk.kernel(x1)
    k = ntk.kernel(x2, x1)
    kg, kx, kxx = ntk.kernel(x1, kind="nngp"), ntk.kernel(x2, x1, kind="nngp"), ntk.kernel(x2, kind="nngp")
    d = ntk.LinearizedDynamics(g, y, learning_rate=0.5, diag_reg=1e-3)
    times = [0.5, 3.0, np.inf]
    train = d.train_predictions(times)
    test = d.test_predictions(k, times)
    cov = d.ntk_gp_covariance(k, kg, kx, kxx, times)
    assert test.shape == (3, x2.shape[0], 2) and cov.shape == (3, x2.shape[0], x2.shape[0])
    for i, tag in enumerate(["0.500000", "3.000000", "inf"]):
        exact(train[i], reference[f"dynamics train {tag}"])
        exact(test[i], reference[f"dynamics test {tag}"])
        exact(cov[i], reference[f"dynamics ntk_gp {tag}"])
    exact(d.test_predictions(k, 3.0), reference["dynamics test 3.000000"])  # one time: one array


@pytest.mark.parametrize("name", ["relu", "tanh", "erf", "opt:3"])
def test_limit_constants_bit_for_bit(reference, name):
    c = ntk.limit_constants(name)
    got = np.array([c.E_phi, c.E_dphi, c.E_dphi2, c.E_phi2, c.A, c.A_prime, c.B, c.alpha])
    np.testing.assert_array_equal(got, reference[f"constants {name}"][:, 0])


def test_deep_limit_bit_for_bit(reference):
    x1, x2 = reference["x1"], reference["x2"]
    labels = np.where(x1[:, 0] + x1[:, 1] > 0, 1, -1)
    clf = ntk.DeepKernelClassifier("relu", depth=20).fit(x1, labels)
    exact(clf.predict(x2), reference["deep predict"][:, 0])
    sign, log_abs, _ = ntk.deep_kernel(x1, x2, activation="relu", depth=50, log=True)
    exact(log_abs, reference["deep log_abs"])


# docs/mathematics.md T5 (depth 2, d = 3): Sigma^3 and Theta^3 for the pairs P1 and P2, the values the C++
# tests check (closed forms to 1e-12 relative; tanh by quadrature to 1e-10).
T5 = [  # activation, sigma_w^2, sigma_b^2, pair, Sigma^3(x, x'), Theta^3(x, x')
    ("relu", 1.0, 1.0, "P1", 1.768869528399335, 2.597912775429742),
    ("relu", 1.0, 1.0, "P2", 1.795577676685438, 2.439925980209534),
    ("relu", 2.0, 0.1, "P1", 0.6032778576031545, 0.8964537813906558),
    ("erf", 1.0, 1.0, "P2", 1.372740013471754, 1.853423209874017),
    ("erf", 2.0, 0.1, "P2", -0.04800149727512407, -0.4218649075129454),
    ("gelu", 1.0, 1.0, "P1", 1.648812781212731, 2.479407899172409),
    ("gelu", 2.0, 0.1, "P2", 0.6569079057549613, 0.6638737391670683),
    ("tanh", 1.0, 1.0, "P2", 1.335624528325843, 1.756548907044199),
    ("tanh", 2.0, 0.1, "P2", -0.01979495641187536, -0.3313202478277302),
]
PAIRS = {"P1": ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]), "P2": ([1.0, -2.0, 0.5], [0.3, 0.4, -1.2])}


@pytest.mark.parametrize("name,sw2,sb2,pair,sigma,theta", T5)
def test_reference_table_t5(name, sw2, sb2, pair, sigma, theta):
    a, b = (np.array([v]) for v in PAIRS[pair])
    k = ntk.kernel(a, b, activation=name, depth=2, sigma_w=np.sqrt(sw2), sigma_b=np.sqrt(sb2), kind="both")
    tol = 1e-10 if name == "tanh" else 1e-12
    assert abs(k.nngp[0, 0] - sigma) <= tol * abs(sigma) + 1e-15
    assert abs(k.ntk[0, 0] - theta) <= tol * abs(theta) + 1e-15
