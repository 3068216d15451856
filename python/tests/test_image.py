"""Image architectures from SPEC strings: bit for bit against the C++ library, the MLP as 1x1
images, the finite network's empirical NTK against its Jacobian, and clear errors."""
import numpy as np
import pytest

import ntk

SPEC = "conv:3x3:3:sb=0.1,relu,conv:2x2:3:valid:param=standard,tanh,avgpool:2:same,gap,dense:2"


def test_image_kernel_and_network_bit_for_bit(reference):
    a, b = reference["images"], reference["images2"]
    both = ntk.image_kernel(a, b, architecture=SPEC, shape=(4, 5, 2), kind="both")
    np.testing.assert_array_equal(both.ntk, reference["image ntk"])
    np.testing.assert_array_equal(both.nngp, reference["image nngp"])
    np.testing.assert_array_equal(ntk.image_kernel(a, architecture=SPEC, shape="4,5,2"), reference["image ntk_sym"])
    net = ntk.ImageNetwork(SPEC, (4, 5, 2), seed=7)
    np.testing.assert_array_equal(net.forward(a), reference["image forward"])
    np.testing.assert_array_equal(net.jacobian(b), reference["image jacobian"])
    # Fortran order and float32 give the same numbers (converted to C-order float64 first)
    np.testing.assert_array_equal(ntk.image_kernel(np.asfortranarray(a), architecture=SPEC, shape="4,5,2"),
                                  reference["image ntk_sym"])


def test_dense_layers_on_one_pixel_are_the_mlp():
    x = np.random.default_rng(0).standard_normal((6, 9))
    layer = "dense:sw=1.3:sb=0.2"
    image = ntk.image_kernel(x, architecture=f"{layer},relu,{layer},relu,{layer}", shape=(1, 1, 9), kind="both")
    mlp = ntk.kernel(x, activation="relu", depth=2, sigma_w=1.3, sigma_b=0.2, kind="both")
    np.testing.assert_allclose(image.ntk, mlp.ntk, rtol=1e-13, atol=0)
    np.testing.assert_allclose(image.nngp, mlp.nngp, rtol=1e-13, atol=0)


def test_standard_parametrization_same_nngp_other_ntk():
    x = np.random.default_rng(1).standard_normal((4, 4 * 4 * 2))
    base = "conv:3x3:8{p},relu,flatten,dense{p}"
    ntk_k = ntk.image_kernel(x, architecture=base.format(p=""), shape=(4, 4, 2), kind="both")
    std_k = ntk.image_kernel(x, architecture=base.format(p=":param=standard"), shape=(4, 4, 2), kind="both")
    np.testing.assert_array_equal(ntk_k.nngp, std_k.nngp)
    assert np.abs(std_k.ntk - ntk_k.ntk).max() > 0.1 * np.abs(ntk_k.ntk).max()


def test_image_network_empirical_ntk_is_the_jacobian_product():
    x = np.random.default_rng(2).standard_normal((3, 5 * 5 * 1))
    net = ntk.ImageNetwork("conv:3x3:4,relu,avgpool:2:same,conv:3x3:4,gelu,gap,dense:3", (5, 5, 1), seed=3)
    j = net.jacobian(x)
    k = net.parameter_count
    assert j.shape == (9, k)
    expected = sum(j[o::3] @ j[o::3].T for o in range(3)) / 3
    np.testing.assert_allclose(net.empirical_ntk(x), expected, rtol=1e-12, atol=1e-12)
    theta = net.parameters
    net.parameters = 2 * theta
    assert not np.allclose(net.forward(x), ntk.ImageNetwork("conv:3x3:4,relu,avgpool:2:same,conv:3x3:4,gelu,gap,"
                                                            "dense:3", (5, 5, 1), seed=3).forward(x))


def test_image_errors_are_value_errors_with_the_message():
    x = np.zeros((2, 16))
    with pytest.raises(ValueError, match="layer 0 'conv:3x:4': bad filter '3x'"):
        ntk.image_kernel(x, architecture="conv:3x:4,relu,gap,dense", shape=(4, 4, 1))
    with pytest.raises(ValueError, match="x must have 12 columns for shape 2x2x3"):
        ntk.image_kernel(x, architecture="conv,relu,gap,dense", shape=(2, 2, 3))
    with pytest.raises(ValueError, match="shape must be a string"):
        ntk.image_kernel(x, architecture="gap,dense", shape=4.5)
    with pytest.raises(ValueError, match="must be 2-D"):
        ntk.image_kernel(np.zeros(16), architecture="gap,dense", shape=(4, 4, 1))
    with pytest.raises(ValueError, match="needs at least 1 channel for a finite network"):
        ntk.ImageNetwork("conv:3x3,relu,gap,dense", (4, 4, 1))
    bad = x.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        ntk.image_kernel(bad, architecture="conv,relu,gap,dense", shape=(4, 4, 1))
