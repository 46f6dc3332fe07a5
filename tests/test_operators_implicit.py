"""Implicit features: the operator protocol, LinearOperator, random Fourier features.

Each is checked against the dense matrix it stands for, and a fit on it
against the same fit on that dense matrix.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.sparse.linalg import aslinearoperator

from bayeslin import BayesianLinearRegressor
from bayeslin.operators import features as operators
from bayeslin.operators import (
    DenseFeatures,
    ImplicitFeatures,
    LinearOperatorFeatures,
    RandomFourierFeatures,
    as_features,
)


class RowsProtocol:
    """A plain object following the protocol, with row batches (no base class)."""

    def __init__(self, X):
        self.X = X
        self.shape = X.shape

    def matmat(self, V):
        return self.X @ V

    def rmatmat(self, U):
        return self.X.T @ U

    def take_rows(self, rows):
        return RowsProtocol(self.X[rows])


class ProductsOnly:
    """The minimal protocol: shape and the two products."""

    def __init__(self, X):
        self._X = X
        self.shape = X.shape

    def matmat(self, V):
        return self._X @ V

    def rmatmat(self, U):
        return self._X.T @ U


@pytest.fixture
def matrix():
    rng = np.random.RandomState(0)
    return rng.randn(57, 11) * rng.uniform(0.5, 2, size=11) + 0.3


@pytest.fixture
def small_batches(monkeypatch):
    # Force several row batches in the streaming defaults.
    monkeypatch.setattr(operators, "_BATCH_BYTES", 8 * 11 * 10)


def test_as_features_recognises_protocols(matrix):
    assert isinstance(as_features(RowsProtocol(matrix)), ImplicitFeatures)
    assert isinstance(as_features(aslinearoperator(matrix)), LinearOperatorFeatures)


@pytest.mark.parametrize("wrap", [RowsProtocol, ProductsOnly, aslinearoperator])
def test_streamed_statistics_match_dense(wrap, matrix, small_batches):
    F = as_features(wrap(matrix))
    w = np.random.RandomState(1).uniform(0.2, 2.0, size=matrix.shape[0])
    sw = np.sqrt(w)
    assert_allclose(F.gram(sw), matrix.T @ (w[:, None] * matrix), rtol=1e-12)
    assert_allclose(F.kernel(sw), (sw[:, None] * matrix) @ (sw[:, None] * matrix).T, rtol=1e-12, atol=1e-12)
    if wrap is ProductsOnly:
        with pytest.raises(NotImplementedError, match="take_rows"):
            F.row_sq_norms()
        return
    assert_allclose(F.row_sq_norms(), np.sum(matrix**2, axis=1), rtol=1e-12)
    assert_allclose(F.col_sq_norms(w), w @ matrix**2, rtol=1e-12)


def test_linear_operator_has_no_row_batches(matrix):
    with pytest.raises(NotImplementedError, match="solver='cg' or 'exact'"):
        as_features(aslinearoperator(matrix)).take_rows(np.arange(3))


@pytest.mark.parametrize("solver", ["exact", "cg", "sgd"])
@pytest.mark.parametrize("wrap", [RowsProtocol, aslinearoperator])
def test_fit_on_operator_matches_fit_on_matrix(solver, wrap, matrix):
    y = matrix @ np.linspace(-1, 1, matrix.shape[1]) + np.random.RandomState(2).randn(matrix.shape[0])
    kw = dict(solver=solver, random_state=0)
    ref = BayesianLinearRegressor(**kw).fit(matrix, y)
    if solver == "sgd" and wrap is aslinearoperator:
        # Minibatches need rows; with all rows in each step (this small
        # problem) SGD needs none and runs.
        with pytest.raises(NotImplementedError, match="take_rows"):
            BayesianLinearRegressor(batch_size=10, **kw).fit(wrap(matrix), y)
    est = BayesianLinearRegressor(**kw).fit(wrap(matrix), y)
    assert est.n_features_in_ == matrix.shape[1]
    assert_allclose(est.coef_, ref.coef_, rtol=1e-8, atol=1e-10)
    assert_allclose([est.alpha_, est.lambda_, est.intercept_], [ref.alpha_, ref.lambda_, ref.intercept_], rtol=1e-8)
    Xq = matrix[:6]
    mean, std = est.predict(wrap(Xq), return_std=True)
    ref_mean, ref_std = ref.predict(Xq, return_std=True)
    assert_allclose(mean, ref_mean, rtol=1e-8)
    assert_allclose(std, ref_std, rtol=1e-8)
    with pytest.raises(ValueError, match="features"):
        est.predict(wrap(matrix[:, :4]))


# --------------------------------------------------------------------------
# Random Fourier features
# --------------------------------------------------------------------------


@pytest.fixture
def inputs():
    return np.random.RandomState(3).uniform(-2, 2, size=(40, 3))


def test_rff_products_match_explicit_features(inputs, small_batches):
    rff = RandomFourierFeatures(inputs, n_components=25, gamma=0.7, random_state=0, batch_rows=7)
    Phi = np.sqrt(2.0 / 25) * np.cos(inputs @ rff.omega + rff.phase)
    rng = np.random.RandomState(4)
    V, U = rng.randn(25, 3), rng.randn(40, 3)
    assert_allclose(rff.matmat(V), Phi @ V, rtol=1e-12)
    assert_allclose(rff.rmatmat(U), Phi.T @ U, rtol=1e-12, atol=1e-12)
    assert_allclose(rff.row_sq_norms(), np.sum(Phi**2, axis=1), rtol=1e-12)
    assert_allclose(rff.take_rows(np.array([5, 1])).dense(), Phi[[5, 1]], rtol=1e-12)
    assert_allclose(rff.with_inputs(inputs[:4]).dense(), Phi[:4], rtol=1e-12)
    assert_allclose(rff.gram(), Phi.T @ Phi, rtol=1e-12, atol=1e-12)


def test_rff_frequencies_follow_the_rbf_kernel(inputs):
    # omega ~ N(0, 2 gamma I): Phi Phi^T -> exp(-gamma |x - x'|^2). Each kernel
    # entry averages d terms (variance <= 2 / d per entry), so 4000 features
    # leave a standard error of at most 0.023; the bound is 5 of them.
    gamma, d = 0.7, 4000
    rff = RandomFourierFeatures(inputs, n_components=d, gamma=gamma, random_state=0)
    Phi = rff.dense()
    sq = np.sum((inputs[:, None, :] - inputs[None, :, :]) ** 2, axis=-1)
    assert np.max(np.abs(Phi @ Phi.T - np.exp(-gamma * sq))) < 5 * np.sqrt(2.0 / d)


def test_rff_fit_matches_materialised_features(inputs):
    y = np.sin(inputs[:, 0]) + 0.1 * np.random.RandomState(5).randn(len(inputs))
    rff = RandomFourierFeatures(inputs, n_components=60, gamma=0.5, random_state=0, batch_rows=9)
    # Batched and whole products round differently; solved tightly, both fits
    # reach the same answer.
    for solver, tol in [("exact", None), ("cg", 1e-11), ("sgd", 1e-9)]:
        kw = dict(solver=solver, random_state=0, solver_tol=tol, solver_max_iter=100000)
        est = BayesianLinearRegressor(**kw).fit(rff, y)
        ref = BayesianLinearRegressor(**kw).fit(rff.dense(), y)
        assert_allclose(est.coef_, ref.coef_, rtol=1e-7, atol=1e-9)
        assert_allclose(est.predict(rff.with_inputs(inputs[:5])), ref.predict(rff.dense()[:5]), rtol=1e-7)


def test_implicit_features_dtype_and_namespace_defaults(matrix):
    F = ImplicitFeatures(ProductsOnly(matrix))
    assert F.dtype == np.float64
    assert F.xp.__name__.endswith("numpy")
    assert F.shape == matrix.shape
    assert isinstance(DenseFeatures(matrix).take_rows(np.arange(2)), DenseFeatures)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("centred", [False, True])
def test_fused_gram_times_matches_dense(inputs, weighted, centred):
    from bayeslin.operators import CenteredFeatures

    rff = RandomFourierFeatures(inputs, n_components=30, gamma=0.7, random_state=0, batch_rows=11)
    Phi = rff.dense()
    rng = np.random.RandomState(6)
    F = rff
    if centred:
        offset = rng.randn(30) * 0.2
        F, Phi = CenteredFeatures(rff, offset), Phi - offset
    w = rng.uniform(0.2, 2.0, size=len(inputs)) if weighted else None
    V = rng.randn(30, 4)
    expected = Phi.T @ ((Phi @ V) * (1.0 if w is None else w[:, None]))
    assert_allclose(F.gram_times(V, w), expected, rtol=1e-11, atol=1e-12)
    # The default (two products) agrees too.
    assert_allclose(DenseFeatures(Phi).gram_times(V, w), expected, rtol=1e-11, atol=1e-12)
