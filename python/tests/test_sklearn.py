"""scikit-learn: the estimators pass check_estimator; the kernel works in SVC, KernelRidge,
GaussianProcessRegressor and GridSearchCV; pipelines on sklearn's bundled data sets."""
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import check_estimator

import ntk
from ntk.sklearn import NNGPClassifier, NNGPRegressor, NTKClassifier, NTKKernel, NTKRegressor

ESTIMATORS = [NTKRegressor(), NNGPRegressor(), NTKClassifier(), NNGPClassifier(),
              NTKRegressor(time=5.0, ridge=1e-3, depth=2), NTKClassifier(solver="cholesky", ridge=1e-8),
              NTKRegressor(solver="cg", ridge=1e-3, tolerance=1e-8), NNGPClassifier(solver="auto", ridge=1e-6)]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=repr)
def test_check_estimator(estimator):
    check_estimator(estimator)


def test_regressor_is_the_closed_form_mean_prediction():
    rng = np.random.default_rng(0)
    x, z = rng.standard_normal((30, 4)), rng.standard_normal((7, 4))
    y = np.sin(x @ np.ones(4))
    for t in (np.inf, 2.0):
        model = NTKRegressor(depth=2, time=t, ridge=1e-6).fit(x, y)
        g = ntk.kernel(x, depth=2)
        expected = ntk.LinearizedDynamics(g, y, diag_reg=1e-6 * np.trace(g) / 30).test_predictions(
            ntk.kernel(z, x, depth=2), t)[:, 0]
        np.testing.assert_allclose(model.predict(z), expected, rtol=1e-8, atol=1e-10)
    # cholesky and eigh agree at t = inf.
    a = NTKRegressor(solver="cholesky", ridge=1e-6).fit(x, y).predict(z)
    b = NTKRegressor(solver="eigh", ridge=1e-6).fit(x, y).predict(z)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_bad_hyperparameters_are_reported_at_fit():
    x, y = np.ones((3, 2)) * [[1], [2], [3]], np.array([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="solver"):
        NTKRegressor(solver="lu").fit(x, y)
    with pytest.raises(ValueError, match="needs ridge > 0"):
        NTKRegressor(solver="cg").fit(x, y)
    with pytest.raises(ValueError, match="tolerance"):
        NTKRegressor(solver="cg", ridge=1e-3, tolerance=0.0).fit(x, y)
    with pytest.raises(ValueError, match=r"\(time=inf\) problem only"):
        NTKRegressor(solver="cholesky", time=1.0).fit(x, y)
    with pytest.raises(ValueError, match="sigma_w must be positive"):
        NTKRegressor(sigma_w=0.0).fit(x, y)


def test_kernel_in_svc_kernel_ridge_and_gaussian_process():
    x, y = load_breast_cancer(return_X_y=True)
    x = StandardScaler().fit_transform(x)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0)
    svc = SVC(kernel=NTKKernel(depth=2)).fit(xtr, ytr)
    assert svc.score(xte, yte) > 0.93
    kr = KernelRidge(kernel=NTKKernel(depth=2), alpha=1e-2).fit(xtr, ytr)
    # KernelRidge with the kernel object evaluates whole matrices: the same as precomputed.
    pre = KernelRidge(kernel="precomputed", alpha=1e-2).fit(ntk.kernel(xtr, depth=2), ytr)
    np.testing.assert_allclose(kr.predict(xte), pre.predict(ntk.kernel(xte, xtr, depth=2)), rtol=1e-8, atol=1e-10)
    gp = GaussianProcessRegressor(kernel=NTKKernel(depth=2, kind="nngp"), alpha=1e-2, optimizer=None).fit(xtr, ytr)
    assert np.mean((gp.predict(xte) > 0.5) == yte) > 0.93
    np.testing.assert_allclose(NTKKernel(depth=2).diag(xte), np.diag(ntk.kernel(xte, depth=2)), rtol=1e-14)


def test_grid_search_over_an_svc_kernel():
    x, y = load_breast_cancer(return_X_y=True)
    x = StandardScaler().fit_transform(x)[::3]
    y = y[::3]
    search = GridSearchCV(SVC(kernel=NTKKernel()), {"kernel__depth": [1, 3], "C": [0.1, 1.0]}, cv=3).fit(x, y)
    assert search.best_params_["kernel__depth"] in (1, 3)
    assert search.best_score_ > 0.9


@pytest.mark.parametrize("loader,threshold", [(load_breast_cancer, 0.94), (load_digits, 0.96)])
def test_pipeline_grid_search_on_bundled_data(loader, threshold):
    x, y = loader(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    pipe = make_pipeline(StandardScaler(), NTKClassifier())
    grid = {"ntkclassifier__depth": [1, 3], "ntkclassifier__ridge": [1e-3, 1e-1]}
    search = GridSearchCV(pipe, grid, cv=3).fit(xtr, ytr)
    accuracy = search.score(xte, yte)
    print(f"{loader.__name__}: best {search.best_params_}, test accuracy {accuracy:.4f}")
    assert accuracy >= threshold
