"""ntk: Neural Tangent Kernels from NumPy, over the ntk C++ library.

Conventions (as in the C++ headers): rows are samples (x is n x d), the NTK parametrization, the
summed loss 1/2 sum_i ||f(x_i) - y_i||^2, ``depth`` counts hidden (Dense, activation) pairs before
the readout.  Activations are names (``ntk.activation_names``), a vectorized callable ``phi``
(derivative by finite differences), or a pair ``(phi, dphi)`` of vectorized callables; those are
called a few times per layer on 1-D float64 arrays (never per kernel entry).  Their kernels come
from Hermite series checked against a 1e-12 tolerance (rules up to 4096 nodes); where the series does
not converge the result is a ValueError, never a silent approximation: a kinked phi (a Python ReLU:
use the built-in names), or a smooth phi at too large a variance (tanh works up to variances of 17.9
and then matches the built-in to ~3e-12).  ``quadrature=`` accepts product quadrature of that order at
a common input norm (approximate at a kink: a Python ReLU is 1.5e-2 off at order 64).

Kernels read float64 and float32 arrays in C or Fortran order without copying them and return
arrays of the input's dtype; other inputs (integers, non-contiguous views, mixed layouts) are
converted first.  Networks compute in their own dtype, dynamics and the deep limit in float64.
The GIL is released while the C++ code runs.  Errors: ValueError for bad shapes and parameters
(and non-finite inputs), OverflowError when a result leaves the floating-point range,
FloatingPointError when an activation callable returns a non-finite value.
"""

from collections import namedtuple
import numbers

import numpy as np

from . import _core

__version__ = _core.__version__
#: The activation names every function accepts (as the ``ntk`` command-line tool spells them).
activation_names = _core.activation_names

Kernels = namedtuple("Kernels", ["nngp", "ntk"])
LayerKernels = namedtuple("LayerKernels", ["nngp", "nngp_dot", "ntk"])
SolverInfo = namedtuple("SolverInfo", ["method", "reason", "memory_estimate", "iterations", "residual", "converged",
                                       "chebyshev_degree", "chebyshev_error", "preconditioner_rank"])
LimitConstants = namedtuple("LimitConstants", ["E_phi", "E_dphi", "E_dphi2", "E_phi2", "A", "A_prime", "B",
                                               "alpha", "regime"])

__all__ = ["kernel", "kernel_layers", "kernel_diagonal", "kernel_regression", "SolverInfo", "Network", "LinearizedDynamics", "limit_constants",
           "deep_kernel", "DeepKernelClassifier", "majority_vote", "nearest_neighbor", "singular_kernel",
           "numerical_derivative_step", "activation_names", "Kernels", "LayerKernels", "LimitConstants"]


def numerical_derivative_step(z):
    """The step h of the derivative used when only phi is given: the 4-point central difference
    [8 (phi(z+h) - phi(z-h)) - (phi(z+2h) - phi(z-2h))] / (12 h) with h = 2^-10 max(1, 2^ceil(log2|z|)),
    whose error for smooth phi of unit scale is about 1e-12 (truncation h^4 |phi'''''| / 30 plus rounding
    1.5 eps |phi| / h); within 2h of a kink it is wrong."""
    return _core.numerical_derivative_step(float(z))


def _matrix(x, name, dtype=None):
    """x as a 2-D float32/float64 array whose rows or columns are contiguous (no copy if it is)."""
    if x is None:
        raise ValueError(f"ntk: {name} must be an array (got None)")
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise ValueError(f"ntk: {name} must be a numeric array (got dtype {a.dtype})")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"ntk: {name} must be real (got dtype {a.dtype})")
    if a.ndim != 2:
        hint = ""
        if a.ndim == 1:
            hint = ": use x.reshape(1, -1) for one sample or x.reshape(-1, 1) for one feature"
        raise ValueError(f"ntk: {name} must be 2-D, one sample per row (got {a.ndim}-D, shape {a.shape}){hint}")
    target = dtype if dtype is not None else (a.dtype if a.dtype in (np.float32, np.float64) else np.float64)
    a = a.astype(target, copy=False)
    item = a.itemsize
    s0, s1 = a.strides
    rows_ok = (s1 == item or a.shape[1] <= 1) and (a.shape[0] <= 1 or (s0 > 0 and s0 % item == 0))
    cols_ok = (s0 == item or a.shape[0] <= 1) and (a.shape[1] <= 1 or (s1 > 0 and s1 % item == 0))
    if not (rows_ok or cols_ok):
        a = np.ascontiguousarray(a)
    return a


def _row_major(a):
    return a.strides[1] == a.itemsize or a.shape[1] <= 1


def _pair(x1, x2):
    a = _matrix(x1, "x1")
    if x2 is None:
        return a, None
    b = _matrix(x2, "x2", dtype=a.dtype)
    if a.shape[0] > 1 and a.shape[1] > 1 and b.shape[0] > 1 and b.shape[1] > 1 and _row_major(a) != _row_major(b):
        b = np.ascontiguousarray(b) if _row_major(a) else np.asfortranarray(b)
    return a, b


def _sigmas(value, name):
    if isinstance(value, numbers.Real):
        return [float(value)]
    values = [float(v) for v in value]
    if not values:
        raise ValueError(f"ntk: {name} must be a number or a non-empty list, one per affine layer")
    return values


def _threads(threads):
    if threads is None:
        return 0
    if not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"ntk: threads must be None or a positive integer (got {threads!r})")
    return int(threads)


def _depth(depth):
    if not isinstance(depth, numbers.Integral) or isinstance(depth, bool):
        raise ValueError(f"ntk: depth must be an integer (got {depth!r})")
    return int(depth)


def _quadrature(quadrature):
    if quadrature is None:
        return 0
    if not isinstance(quadrature, numbers.Integral) or quadrature < 1:
        raise ValueError(f"ntk: quadrature must be None or a positive integer order (got {quadrature!r})")
    return int(quadrature)


def kernel(x1, x2=None, *, activation="relu", depth=3, sigma_w=1.0, sigma_b=1.0, kind="ntk", threads=None,
           quadrature=None, divide_by_dimension=True):
    """Infinite-width NTK Theta^L and/or NNGP Sigma^L between the rows of x1 (n1 x d) and x2 (n2 x d).

    x2=None computes the symmetric x1 x x1 matrix (one triangle).  ``sigma_w`` and ``sigma_b`` are one
    number or a list of depth + 1 numbers (one per affine layer, readout last).  ``kind`` is "ntk",
    "nngp" (an n1 x n2 array) or "both" (``Kernels(nngp, ntk)``).  ``quadrature`` forces Gauss-Hermite
    quadrature of that order (a checking mode; for Python callables only with inputs of a common norm).  ``divide_by_dimension``:
    Sigma^0 = x.x'/d (default) or x.x'.  ``threads``: OpenMP threads (None: all).
    The result has the dtype of x1 (float32 or float64); other dtypes compute in float64."""
    a, b = _pair(x1, x2)
    return _wrap_kind(_core.kernel(a, b, activation, _depth(depth), _sigmas(sigma_w, "sigma_w"),
                                   _sigmas(sigma_b, "sigma_b"), kind, _threads(threads), _quadrature(quadrature),
                                   bool(divide_by_dimension)), kind)


def _wrap_kind(result, kind):
    return Kernels(*result) if kind == "both" else result


def kernel_layers(x1, x2=None, *, activation="relu", depth=3, sigma_w=1.0, sigma_b=1.0, threads=None,
                  quadrature=None, divide_by_dimension=True):
    """Per-layer kernels: a list of ``LayerKernels(nngp, nngp_dot, ntk)``, one per affine layer
    l = 1..depth+1 (Sigma^l, Sigma-dot^l = sigma_w^2 L^phi'(Sigma^(l-1)) and Theta^l), each n1 x n2."""
    a, b = _pair(x1, x2)
    layers = _core.kernel_layers(a, b, activation, _depth(depth), _sigmas(sigma_w, "sigma_w"),
                                 _sigmas(sigma_b, "sigma_b"), _threads(threads), _quadrature(quadrature),
                                 bool(divide_by_dimension))
    return [LayerKernels(*layer) for layer in layers]


def kernel_diagonal(x, *, activation="relu", depth=3, sigma_w=1.0, sigma_b=1.0, threads=None, quadrature=None,
                    divide_by_dimension=True):
    """The diagonals Sigma^L(x, x) and Theta^L(x, x) as ``Kernels(nngp, ntk)`` of 1-D arrays (O(n depth))."""
    a = _matrix(x, "x")
    return Kernels(*_core.kernel_diagonal(a, activation, _depth(depth), _sigmas(sigma_w, "sigma_w"),
                                          _sigmas(sigma_b, "sigma_b"), _threads(threads), _quadrature(quadrature),
                                          bool(divide_by_dimension)))


def _memory(limit):
    if limit is None:
        return 0
    if not isinstance(limit, numbers.Integral) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"ntk.kernel_regression: memory_limit must be None or a positive number of bytes "
                         f"(got {limit!r})")
    return int(limit)


def kernel_regression(x_train, y_train, x_test, *, activation="relu", depth=3, sigma_w=1.0, sigma_b=1.0,
                      kind="ntk", time=float("inf"), diag_reg=0.0, solver="auto", tolerance=1e-10,
                      max_iterations=1000, preconditioner_rank=1000, memory_limit=None, learning_rate=1.0,
                      threads=None, return_info=False):
    """Mean predictions at x_test of the infinite-width network trained for ``time`` by gradient flow on
    the summed squared loss from f0 = 0 (the C++ solvers, chosen as ``ntk predict`` chooses them):
    f_t(x) = k(x, X) K^-1 (I - e^(-eta K t)) Y with K = Theta (``kind="ntk"``) or Sigma (``"nngp"``) plus
    ``diag_reg`` I (absolute ridge); ``time=inf`` is kernel (ridge) regression.

    ``time`` is a number (one m x k array) or a list (a list of arrays, one per time).  ``solver``:
    "auto" (ntk::plan_solver: Cholesky for t = inf when it fits and n <= 40,000, eigendecomposition for
    finite times when n <= 20,000, else the iterative paths), "eigen" (dense eigendecomposition: exact,
    any time), "cholesky" (t = inf only; a G + diag_reg I that is not positive definite falls back to
    eigen), "cg" (conjugate gradients with the RPCholesky preconditioner of rank
    ``preconditioner_rank`` on the stored triangle, matrix-free when ``memory_limit`` cannot hold it;
    finite times by a Chebyshev expansion; needs diag_reg > 0 at t = inf), "packed" or "matrix-free".
    ``tolerance``: CG's relative residual per column, Chebyshev's relative error of g_t;
    ``max_iterations``: CG iterations / Chebyshev degree.  Errors: ValueError for bad arguments or a
    memory limit no path fits, RuntimeError (ntk::NotConverged) when CG does not converge.
    With ``return_info`` the result is (predictions, SolverInfo)."""
    a = _f64(x_train, "x_train")
    t = _f64(x_test, "x_test")
    y = _targets(y_train)
    one_column = np.ndim(y_train) == 1
    times, scalar = _times(time)
    if not isinstance(solver, str):
        raise ValueError(f"ntk.kernel_regression: solver must be a string (got {solver!r})")
    predictions, info = _core.kernel_regression(
        a, _f64(y, "y_train"), t, activation, _depth(depth), _sigmas(sigma_w, "sigma_w"),
        _sigmas(sigma_b, "sigma_b"), kind, times, float(diag_reg), solver, float(tolerance), int(max_iterations),
        int(preconditioner_rank), _memory(memory_limit), _threads(threads), float(learning_rate))
    if one_column:
        predictions = [p[:, 0] for p in predictions]
    result = predictions[0] if scalar else predictions
    return (result, SolverInfo(**info)) if return_info else result


class Network:
    """A finite network in the NTK parametrization with parameters theta ~ N(0, 1) drawn from ``seed``
    (the C++ ntk::Network: same seed, same parameters): ``depth`` hidden layers of ``width`` units and
    ``outputs`` readout units.  ``dtype`` "float64" or "float32"."""

    def __init__(self, input_dimension, *, activation="relu", depth=3, width=512, outputs=1, sigma_w=1.0,
                 sigma_b=1.0, seed=0, dtype="float64"):
        if not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"ntk.Network: seed must be a non-negative integer (got {seed!r})")
        self._dtype = np.dtype(dtype)
        self._net = _core.Network(int(input_dimension), activation, _depth(depth), int(width), int(outputs),
                                  _sigmas(sigma_w, "sigma_w"), _sigmas(sigma_b, "sigma_b"), int(seed),
                                  self._dtype.name)

    def _x(self, x, name="x"):
        return np.asfortranarray(_matrix(x, name, dtype=self._dtype))

    def _y(self, y):
        y = np.asarray(y, dtype=self._dtype)
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        return np.asfortranarray(_matrix(y, "y", dtype=self._dtype))

    @property
    def parameters(self):
        """The flat parameter vector theta (a copy; assign to replace it)."""
        return self._net.parameters

    @parameters.setter
    def parameters(self, theta):
        theta = np.asarray(theta, dtype=self._dtype)
        if theta.ndim != 1:
            raise ValueError(f"ntk.Network: parameters must be 1-D (got shape {theta.shape})")
        self._net.parameters = theta

    input_dimension = property(lambda self: self._net.input_dimension)
    output_dimension = property(lambda self: self._net.output_dimension)
    parameter_count = property(lambda self: self._net.parameter_count)

    def forward(self, x):
        """f(x): n x k outputs."""
        return self._net.forward(self._x(x))

    def jacobian(self, x):
        """d f / d theta as an (n k) x p array (row i k + o is output o of sample i)."""
        return self._net.jacobian(self._x(x))

    def empirical_ntk(self, x1, x2=None, *, full=False, via_jacobian=False):
        """grad f(x1) . grad f(x2): averaged over outputs (n1 x n2) or ``full`` ((n1 k) x (n2 k)).
        Structured by default (no Jacobian); ``via_jacobian`` forms J(x1) J(x2)^T instead."""
        return self._net.empirical_ntk(self._x(x1, "x1"), None if x2 is None else self._x(x2, "x2"), bool(full),
                                       bool(via_jacobian))

    def loss(self, x, y):
        """1/2 sum_i ||f(x_i) - y_i||^2."""
        return self._net.loss(self._x(x), self._y(y))

    def gradient(self, x, y):
        """The gradient of the loss with respect to theta."""
        return self._net.gradient(self._x(x), self._y(y))

    def train(self, x, y, *, learning_rate=1e-3, steps=100, record_ntk=False):
        """``steps`` steps of full-batch gradient descent on the summed loss, in place.  Returns a dict:
        "loss" (steps + 1 values) and, with ``record_ntk``, "ntk_before" / "ntk_after"."""
        return self._net.train(self._x(x), self._y(y), float(learning_rate), int(steps), bool(record_ntk))


def _times(t):
    """(list of floats, scalar?)"""
    if np.ndim(t) == 0:
        return [float(t)], True
    return [float(v) for v in np.asarray(t, dtype=float).ravel()], False


def _targets(y):
    y = np.asarray(y, dtype=np.float64)
    return y.reshape(-1, 1) if y.ndim == 1 else y


def _f64(x, name):
    return np.asfortranarray(_matrix(x, name, dtype=np.float64))


class LinearizedDynamics:
    """Closed-form dynamics of the linearized network trained on the summed squared loss, from one
    eigendecomposition of g0 (n x n shared kernel, or the full (n k) x (n k) empirical kernel).

    Times ``t`` may be one number (then one array is returned) or a sequence (then an array with a
    leading time axis); ``float("inf")`` is the converged solution.  ``discrete`` uses gradient descent
    (I - eta G)^t with integer t instead of gradient flow.  ``diag_reg`` adds a ridge (relative to
    trace(G)/N with ``diag_reg_relative``)."""

    def __init__(self, g0, y, f0=None, *, learning_rate=1.0, discrete=False, diag_reg=0.0,
                 diag_reg_relative=False, pinv_tolerance=-1.0):
        self._k = _targets(y).shape[1]
        self._d = _core.LinearizedDynamics(_f64(g0, "g0"), _f64(_targets(y), "y"),
                                           None if f0 is None else _f64(_targets(f0), "f0"), float(learning_rate),
                                           bool(discrete), float(diag_reg), bool(diag_reg_relative),
                                           float(pinv_tolerance))

    @property
    def eigenvalues(self):
        """Eigenvalues of g0 (+ ridge), ascending."""
        return self._d.eigenvalues

    @property
    def max_learning_rate(self):
        """2 / lambda_max: discrete gradient descent diverges at or above it."""
        return self._d.max_learning_rate

    @staticmethod
    def _shape(results, scalar):
        return results[0] if scalar else np.stack(results)

    def train_predictions(self, t):
        """f_t(X), n x k."""
        times, scalar = _times(t)
        return self._shape(self._d.train_predictions(times), scalar)

    def train_loss(self, t):
        """1/2 ||f_t(X) - Y||^2."""
        times, scalar = _times(t)
        out = np.asarray(self._d.train_loss(times))
        return out[0] if scalar else out

    def test_predictions(self, kernel_test_train, t, f0_test=None):
        """f_t(x) for test points from their kernel against the training set (m x n, or (m k) x (n k))."""
        times, scalar = _times(t)
        f0 = None if f0_test is None else _f64(_targets(f0_test), "f0_test")
        return self._shape(self._d.test_predictions(_f64(kernel_test_train, "kernel_test_train"), times, f0),
                           scalar)

    def parameter_change(self, jacobian, t):
        """theta_t - theta_0 = -J0^T G^-1 (I - e^(-eta G t)) (f0(X) - Y) for the Jacobian J0 ((n k) x p)."""
        times, scalar = _times(t)
        return self._shape(self._d.parameter_change(_f64(jacobian, "jacobian"), times), scalar)

    def ntk_gp_covariance(self, theta_test_train, nngp_train_train, nngp_test_train, nngp_test_test, t):
        """Covariance of the test outputs of the infinite ensemble trained for time t (dynamics on Theta)."""
        times, scalar = _times(t)
        return self._shape(self._d.ntk_gp_covariance(_f64(theta_test_train, "theta_test_train"),
                                                     _f64(nngp_train_train, "nngp_train_train"),
                                                     _f64(nngp_test_train, "nngp_test_train"),
                                                     _f64(nngp_test_test, "nngp_test_test"), times), scalar)

    def nngp_gp_covariance(self, nngp_test_train, nngp_test_test, t):
        """Covariance when only the readout is trained (dynamics on the NNGP K); t = inf: GP posterior."""
        times, scalar = _times(t)
        return self._shape(self._d.nngp_gp_covariance(_f64(nngp_test_train, "nngp_test_train"),
                                                      _f64(nngp_test_test, "nngp_test_test"), times), scalar)


def limit_constants(activation):
    """Gaussian moments of phi and the deep-limit constants of the normalized phi:
    ``LimitConstants(E_phi, E_dphi, E_dphi2, E_phi2, A, A_prime, B, alpha, regime)``."""
    c = _core.limit_constants(activation)
    return LimitConstants(**c)


def deep_kernel(x1, x2=None, *, activation="relu", depth=100, kind="ntk", log=False):
    """The deep-limit kernel of ``depth`` nonlinear layers in the theorems' setting (rows projected on the
    sphere, phi normalized, no bias): K_L(x_i, x_j) / K_L(x, x) (an n1 x n2 array, diagonal 1); with
    ``log=True`` the tuple (sign, log|K_L|, log K_L(x, x)), exact at any depth."""
    a = _f64(x1, "x1")
    b = a if x2 is None else _f64(x2, "x2")
    sign, log_abs, log_diagonal = _core.deep_kernel(a, b, activation, _depth(depth), kind)
    if log:
        return sign, log_abs, log_diagonal
    return sign * np.exp(log_abs - log_diagonal)


def _labels(labels):
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"ntk: labels must be 1-D (got shape {y.shape})")
    if y.size and not np.all(np.equal(np.mod(y, 1), 0)):
        raise ValueError("ntk: labels must be integers (all +1/-1, or class ids 0..k-1)")
    return [int(v) for v in y]


class DeepKernelClassifier:
    """f(x) = sgn(Y^T G^-1 kappa^L(X, x)) with the deep kernel (binary +1/-1 labels or class ids 0..k-1)."""

    def __init__(self, activation="relu", depth=100, kind="ntk"):
        self._c = _core.DeepKernelClassifier(activation, _depth(depth), kind)

    def fit(self, x, labels):
        self._c.fit(_f64(x, "x"), _labels(labels))
        return self

    def predict(self, x):
        return np.asarray(self._c.predict(_f64(x, "x")), dtype=np.int64)


def majority_vote(labels, count):
    """The most frequent training label, ``count`` times."""
    return np.asarray(_core.majority_vote(_labels(labels), int(count)), dtype=np.int64)


def nearest_neighbor(x, labels, test):
    """1-nearest-neighbour labels on the sphere (largest cosine)."""
    return np.asarray(_core.nearest_neighbor(_f64(x, "x"), _labels(labels), _f64(test, "test")), dtype=np.int64)


def singular_kernel(x, labels, test, alpha):
    """The singular-kernel estimate sgn sum_i y_i ||x - x_i||^-alpha on the sphere."""
    return np.asarray(_core.singular_kernel(_f64(x, "x"), _labels(labels), _f64(test, "test"), float(alpha)),
                      dtype=np.int64)




# Image architectures (conv.hpp): the SPEC strings and shapes of the command-line tool.

def _image_shape(shape):
    if isinstance(shape, str):
        return shape
    if isinstance(shape, (tuple, list)) and all(isinstance(v, numbers.Integral) for v in shape):
        return ",".join(str(int(v)) for v in shape)
    raise ValueError(f"ntk: shape must be a string 'H,W,C' or a tuple of integers (got {shape!r})")


def _images(x, name):
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"ntk: {name} must be 2-D, one image per row (n x H*W*C, channels last) "
                         f"(got {a.ndim}-D, shape {a.shape})")
    return np.ascontiguousarray(a, dtype=np.float64)


def image_kernel(x1, x2=None, *, architecture, shape, kind="ntk", threads=None):
    """NTK and/or NNGP of an image architecture between the rows of x1 and x2 (n x H*W*C, channels last).

    ``architecture`` is a SPEC string as the command-line tool takes it, e.g.
    ``"conv:3x3:64,relu,avgpool:2,conv:3x3:64,relu,gap,dense"`` (docs/architectures.md: conv, avgpool,
    gap, flatten, dense, every activation name, layernorm, res(...), param=standard); ``shape`` is
    "H,W,C" or (H, W, C).  ``kind``: "ntk", "nngp" or "both".  Computes in float64."""
    b = None if x2 is None else _images(x2, "x2")
    result = _core.image_kernel(_images(x1, "x1"), b, str(architecture), _image_shape(shape), kind,
                                _threads(threads))
    return _wrap_kind(result, kind)


class ImageNetwork:
    """A finite image network of the SPEC ``architecture`` on ``shape``, parameters N(0, 1) from ``seed``.

    Every conv needs its channel count and every dense its width (``conv:3x3:64``, ``dense:10``)."""

    def __init__(self, architecture, shape, *, seed=0):
        self._n = _core.ImageNetwork(str(architecture), _image_shape(shape), int(seed))

    @property
    def parameter_count(self):
        return self._n.parameter_count

    @property
    def parameters(self):
        return self._n.parameters()

    @parameters.setter
    def parameters(self, theta):
        self._n.set_parameters(np.ascontiguousarray(theta, dtype=np.float64))

    def forward(self, x):
        return self._n.forward(_images(x, "x"))

    def jacobian(self, x):
        """(n k) x p, rows sample-major (row i k + o)."""
        return self._n.jacobian(_images(x, "x"))

    def empirical_ntk(self, x1, x2=None):
        """J(x1) J(x2)^T averaged over the k outputs, from explicit Jacobians."""
        a = _images(x1, "x1")
        return self._n.empirical_ntk(a, a if x2 is None else _images(x2, "x2"))


__all__ += ["image_kernel", "ImageNetwork"]
