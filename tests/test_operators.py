"""Feature operators against the dense matrix they represent.

Dense, sparse (CSR and other scipy formats), CenteredFeatures over both, and
the matrix-free defaults of the FeatureOperator base class.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose

from bayeslin.operators import CenteredFeatures, DenseFeatures, FeatureOperator, SparseFeatures, as_features

N, D = 23, 9


def _base_matrix(seed=0, n=N, d=D):
    rng = np.random.RandomState(seed)
    return sp.random(n, d, density=0.35, format="csr", random_state=rng, data_rvs=lambda k: rng.randn(k) + 1.5)


class _MatrixFree(FeatureOperator):
    """Only matmat / rmatmat / shape: exercises the base class's gram and kernel."""

    def __init__(self, X):
        self._X = X
        self.shape = X.shape
        self.dtype = X.dtype
        self.xp = DenseFeatures(X).xp

    def matmat(self, V):
        return self._X @ V

    def rmatmat(self, U):
        return self._X.T @ U


def _operator(kind, seed=0, n=N, d=D):
    """(operator, dense matrix it represents)."""
    S = _base_matrix(seed, n, d)
    Xd = S.toarray()
    offset = np.random.RandomState(seed + 100).randn(d)
    if kind == "dense":
        return DenseFeatures(Xd), Xd
    if kind == "sparse":
        return SparseFeatures(S), Xd
    if kind == "centred-dense":
        return CenteredFeatures(DenseFeatures(Xd), offset), Xd - offset
    if kind == "centred-sparse":
        return CenteredFeatures(SparseFeatures(S), offset), Xd - offset
    if kind == "matrix-free":
        return _MatrixFree(Xd), Xd
    raise ValueError(kind)


KINDS = ["dense", "sparse", "centred-dense", "centred-sparse"]


@pytest.fixture(params=KINDS)
def op(request):
    return _operator(request.param)


@pytest.fixture(params=KINDS + ["matrix-free"])
def any_op(request):
    return _operator(request.param)


def _weights(n=N, seed=3):
    return np.random.RandomState(seed).uniform(0.1, 2.5, size=n)


def test_shape_and_dtype(any_op):
    F, X = any_op
    assert tuple(F.shape) == X.shape
    assert np.dtype(F.dtype) == np.float64


@pytest.mark.parametrize("k", [1, 4])
def test_matmat_rmatmat(any_op, k):
    F, X = any_op
    rng = np.random.RandomState(k)
    V = rng.randn(X.shape[1], k)
    U = rng.randn(X.shape[0], k)
    out = F.matmat(V)
    assert isinstance(out, np.ndarray) and out.shape == (X.shape[0], k)
    assert_allclose(out, X @ V, rtol=1e-12, atol=1e-12)
    out = F.rmatmat(U)
    assert isinstance(out, np.ndarray) and out.shape == (X.shape[1], k)
    assert_allclose(out, X.T @ U, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rows", [np.array([5, 0, 17, 5, 22]), np.arange(N), np.array([3])], ids=["shuffled-repeats", "all", "one"])
def test_take_rows(op, rows):
    F, X = op
    sub = F.take_rows(rows)
    assert tuple(sub.shape) == (len(rows), X.shape[1])
    rng = np.random.RandomState(0)
    V = rng.randn(X.shape[1], 3)
    U = rng.randn(len(rows), 3)
    assert_allclose(sub.matmat(V), X[rows] @ V, rtol=1e-12, atol=1e-12)
    assert_allclose(sub.rmatmat(U), X[rows].T @ U, rtol=1e-12, atol=1e-12)
    assert_allclose(sub.row_sq_norms(), np.sum(X[rows] ** 2, axis=1), rtol=1e-12)
    # the original is untouched
    assert tuple(F.shape) == X.shape
    assert_allclose(F.matmat(V), X @ V, rtol=1e-12, atol=1e-12)


def test_row_sq_norms(op):
    F, X = op
    out = F.row_sq_norms()
    assert out.shape == (X.shape[0],)
    assert_allclose(out, np.sum(X**2, axis=1), rtol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_col_sq_norms(op, weighted):
    F, X = op
    w = _weights() if weighted else None
    ref = np.sum((np.ones(X.shape[0]) if w is None else w)[:, None] * X**2, axis=0)
    out = F.col_sq_norms(w)
    assert out.shape == (X.shape[1],)
    assert_allclose(out, ref, rtol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_gram(any_op, weighted):
    F, X = any_op
    sw = np.sqrt(_weights()) if weighted else None
    Xw = X if sw is None else X * sw[:, None]
    G = F.gram(sw)
    assert isinstance(G, np.ndarray) and G.shape == (X.shape[1], X.shape[1])
    assert_allclose(G, Xw.T @ Xw, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("weighted", [False, True])
def test_kernel(any_op, weighted):
    F, X = any_op
    sw = np.sqrt(_weights()) if weighted else None
    Xw = X if sw is None else X * sw[:, None]
    K = F.kernel(sw)
    assert isinstance(K, np.ndarray) and K.shape == (X.shape[0], X.shape[0])
    assert_allclose(K, Xw @ Xw.T, rtol=1e-11, atol=1e-11)


def test_centred_with_weighted_mean_has_zero_weighted_column_sums():
    # What the estimator relies on: centring at the weighted mean.
    S = _base_matrix()
    w = _weights()
    offset = np.asarray(S.T @ w).ravel() / w.sum()
    F = CenteredFeatures(SparseFeatures(S), offset)
    assert_allclose(F.rmatmat(w[:, None])[:, 0], 0.0, atol=1e-12)


def test_centred_sparse_stays_sparse():
    S = _base_matrix()
    F = CenteredFeatures(SparseFeatures(S), np.ones(D))
    assert sp.issparse(F.base.X)
    assert sp.issparse(F.take_rows(np.array([1, 2])).base.X)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "lil"])
def test_sparse_formats(fmt):
    S = _base_matrix()
    F = as_features(S.asformat(fmt))
    assert isinstance(F, SparseFeatures)
    V = np.random.RandomState(0).randn(D, 2)
    assert_allclose(F.matmat(V), S.toarray() @ V, rtol=1e-12, atol=1e-12)
    assert_allclose(F.take_rows(np.array([4, 1])).matmat(V), S.toarray()[[4, 1]] @ V, rtol=1e-12, atol=1e-12)


def test_sparse_array_input():
    S = sp.csr_array(_base_matrix())
    F = as_features(S)
    V = np.random.RandomState(0).randn(D, 2)
    assert_allclose(F.matmat(V), S.toarray() @ V, rtol=1e-12, atol=1e-12)
    assert_allclose(F.gram(), S.toarray().T @ S.toarray(), rtol=1e-12, atol=1e-12)


def test_as_features_dispatch():
    X = np.random.RandomState(0).randn(4, 3)
    assert isinstance(as_features(X), DenseFeatures)
    assert isinstance(as_features(sp.csr_matrix(X)), SparseFeatures)
    F = CenteredFeatures(as_features(X), np.zeros(3))
    assert as_features(F) is F


def test_sparse_products_on_threads_match_serial(monkeypatch):
    # Large sparse matrices are multiplied in row blocks on a thread pool.
    from bayeslin.operators import features as operators

    monkeypatch.setattr(operators, "_PARALLEL_MIN_NNZ", 0)
    monkeypatch.setattr(operators, "_n_threads", lambda: 3)
    S = _base_matrix(n=40, d=13)
    F = SparseFeatures(S)
    rng = np.random.RandomState(0)
    V, U = rng.randn(13, 4), rng.randn(40, 4)
    assert len(F._host_blocks()[0]) == 3
    assert_allclose(F.matmat(V), S.toarray() @ V, rtol=1e-12, atol=1e-12)
    assert_allclose(F.rmatmat(U), S.toarray().T @ U, rtol=1e-12, atol=1e-12)
    import pickle

    G = pickle.loads(pickle.dumps(F))
    assert_allclose(G.matmat(V), S.toarray() @ V, rtol=1e-12, atol=1e-12)
