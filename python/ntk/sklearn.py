"""scikit-learn estimators and kernels over ntk.

- ``NTKRegressor`` / ``NNGPRegressor``: the mean prediction of the infinite ensemble of networks
  trained for time ``time`` on the summed squared loss (closed-form linearized dynamics,
  f0 = 0); ``time=inf`` is kernel regression with the NTK (NNGP) and ``ridge``.
- ``NTKClassifier`` / ``NNGPClassifier``: the same regression on one-hot targets, argmax.
- ``NTKKernel``: the analytic kernel as a scikit-learn kernel object, usable as
  ``SVC(kernel=NTKKernel(...))``, ``KernelRidge(kernel=NTKKernel(...))``,
  ``GaussianProcessRegressor(kernel=NTKKernel(...), optimizer=None)`` and tunable in
  ``GridSearchCV`` (``kernel__depth``, ...).

Hyperparameters (constructor arguments): activation, depth, sigma_w, sigma_b, time (gradient-flow
time, learning rate 1), ridge (added to the kernel's diagonal, relative to its mean diagonal),
solver ("eigh": one eigendecomposition, any time; "cholesky": time=inf only; "cg": the C++
conjugate-gradient solver with the RPCholesky preconditioner at time=inf (needs ridge > 0) and
Chebyshev for finite times, to the relative tolerance ``tolerance``; "auto": the C++ plan, as
``ntk.kernel_regression``).  With "cg" and "auto" predict() runs ``ntk.kernel_regression`` on the
stored training set (the solve is repeated per call).
"""

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

import ntk

__all__ = ["NTKRegressor", "NNGPRegressor", "NTKClassifier", "NNGPClassifier", "NTKKernel"]

_SOLVERS = ("eigh", "cholesky", "cg", "auto")


class NTKKernel(Kernel):
    """The analytic NTK (``kind="ntk"``) or NNGP (``kind="nngp"``) kernel of an MLP, as a scikit-learn
    kernel: ``k(X, Y)`` is the n_X x n_Y Gram matrix.  No hyperparameter gradients (fixed kernel)."""

    def __init__(self, activation="relu", depth=3, sigma_w=1.0, sigma_b=1.0, kind="ntk"):
        self.activation = activation
        self.depth = depth
        self.sigma_w = sigma_w
        self.sigma_b = sigma_b
        self.kind = kind

    @property
    def hyperparameters(self):
        return []

    @property
    def theta(self):
        return np.zeros(0)

    @theta.setter
    def theta(self, theta):
        if len(theta):
            raise ValueError("NTKKernel has no tunable hyperparameters")

    @property
    def bounds(self):
        return np.zeros((0, 2))

    def _options(self):
        return dict(activation=self.activation, depth=self.depth, sigma_w=self.sigma_w, sigma_b=self.sigma_b,
                    kind=self.kind)

    def __call__(self, X, Y=None, eval_gradient=False):
        X = np.asarray(X)
        k = ntk.kernel(X, None if Y is None else np.asarray(Y), **self._options())
        if eval_gradient:
            if Y is not None:
                raise ValueError("eval_gradient can only be evaluated when Y is None")
            return k, np.empty((k.shape[0], k.shape[1], 0))
        return k

    def diag(self, X):
        d = ntk.kernel_diagonal(np.asarray(X), activation=self.activation, depth=self.depth, sigma_w=self.sigma_w,
                                sigma_b=self.sigma_b)
        return d.ntk if self.kind == "ntk" else d.nngp

    def is_stationary(self):
        return False

    @property
    def requires_vector_input(self):
        return True

    def __repr__(self):
        return (f"NTKKernel(activation={self.activation!r}, depth={self.depth}, sigma_w={self.sigma_w}, "
                f"sigma_b={self.sigma_b}, kind={self.kind!r})")

    def __eq__(self, other):
        return type(self) is type(other) and self.get_params() == other.get_params()

    def __hash__(self):
        return hash(repr(self))


def _check_hyperparameters(est):
    if est.solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS} (got {est.solver!r})")
    if not (est.time > 0):
        raise ValueError(f"time must be > 0 (got {est.time!r})")
    if not (est.ridge >= 0) or not np.isfinite(est.ridge):
        raise ValueError(f"ridge must be a finite number >= 0 (got {est.ridge!r})")
    if not (isinstance(est.tolerance, float) or isinstance(est.tolerance, int)) or not (0 < est.tolerance < 1):
        raise ValueError(f"tolerance must be a number in (0, 1) (got {est.tolerance!r})")
    if est.solver == "cg" and np.isinf(est.time) and not est.ridge > 0:
        raise ValueError("solver='cg' needs ridge > 0 at time=inf (a singular kernel has no unique solution)")
    if est.solver == "cholesky" and np.isfinite(est.time):
        raise ValueError("solver='cholesky' solves the converged (time=inf) problem only; use solver='eigh'")


class _KernelModel(BaseEstimator):
    """Shared fit/predict: dual coefficients A with f(x) = k(x, X) A."""

    _kind = "ntk"

    def __init__(self, activation="relu", depth=3, sigma_w=1.0, sigma_b=1.0, time=np.inf, ridge=0.0,
                 solver="eigh", tolerance=1e-10):
        self.activation = activation
        self.depth = depth
        self.sigma_w = sigma_w
        self.sigma_b = sigma_b
        self.time = time
        self.ridge = ridge
        self.solver = solver
        self.tolerance = tolerance

    def _kernel(self, X, Y=None):
        return ntk.kernel(X, Y, activation=self.activation, depth=self.depth, sigma_w=self.sigma_w,
                          sigma_b=self.sigma_b, kind=self._kind)

    def _fit_targets(self, X, Y):
        _check_hyperparameters(self)
        self.X_fit_ = X
        if self.solver in ("cg", "auto"):
            d = ntk.kernel_diagonal(X, activation=self.activation, depth=self.depth, sigma_w=self.sigma_w,
                                    sigma_b=self.sigma_b)
            self.diag_reg_ = float(self.ridge * np.mean(d.ntk if self._kind == "ntk" else d.nngp))
            self.targets_ = Y
            self.dual_coef_ = None  # the C++ solver runs per predict (kernel_regression)
            return self
        g = self._kernel(X)
        if self.solver == "cholesky":
            n = g.shape[0]
            g = g + (self.ridge * np.trace(g) / n) * np.eye(n)
            self.dual_coef_ = cho_solve(cho_factor(g, lower=True), Y)
        else:
            dynamics = ntk.LinearizedDynamics(g, Y, learning_rate=1.0, diag_reg=self.ridge, diag_reg_relative=True)
            # f_t(x) = k(x, X) G^-1 (I - e^{-G t}) Y (f0 = 0): the coefficients are the predictions
            # for the kernel row e_i, i.e. test_predictions of the identity.
            self.dual_coef_ = dynamics.test_predictions(np.eye(g.shape[0]), float(self.time))
        return self

    def _decision(self, X):
        check_is_fitted(self, "dual_coef_")
        X = self._validate_data(X, reset=False, dtype=np.float64)
        if self.dual_coef_ is None:
            return ntk.kernel_regression(self.X_fit_, self.targets_, X, activation=self.activation, depth=self.depth,
                                         sigma_w=self.sigma_w, sigma_b=self.sigma_b, kind=self._kind,
                                         time=float(self.time), diag_reg=self.diag_reg_, solver=self.solver,
                                         tolerance=float(self.tolerance))
        return self._kernel(X, self.X_fit_) @ self.dual_coef_


class NTKRegressor(RegressorMixin, _KernelModel):
    """The infinite-width network trained for ``time`` (mean over initializations), NTK kernel."""

    _kind = "ntk"

    def fit(self, X, y):
        X, y = self._validate_data(X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        self._y_1d = y.ndim == 1
        return self._fit_targets(X, y.reshape(len(y), -1).astype(np.float64))

    def predict(self, X):
        out = self._decision(X)
        return out.ravel() if self._y_1d else out

    def _more_tags(self):
        return {"multioutput": True}


class NNGPRegressor(NTKRegressor):
    """As NTKRegressor with the NNGP kernel (only the readout trained; time=inf: the GP posterior mean)."""

    _kind = "nngp"


class NTKClassifier(ClassifierMixin, _KernelModel):
    """Regression on one-hot targets (+1 for the class, 0 otherwise), predicted class = argmax."""

    _kind = "ntk"

    def fit(self, X, y):
        X, y = self._validate_data(X, y, dtype=np.float64)
        check_classification_targets(y)
        y = column_or_1d(y, warn=True)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        codes = encoder.transform(y)
        targets = np.zeros((len(codes), len(self.classes_)))
        targets[np.arange(len(codes)), codes] = 1.0
        return self._fit_targets(X, targets)

    def decision_function(self, X):
        """Scores per class (n x n_classes; one column, class 1 minus class 0, for two classes)."""
        scores = self._decision(X)
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, X):
        scores = self._decision(X)
        return self.classes_[np.argmax(scores, axis=1)]


class NNGPClassifier(NTKClassifier):
    """As NTKClassifier with the NNGP kernel."""

    _kind = "nngp"
