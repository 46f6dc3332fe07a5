"""Property-based checks (hypothesis): the exact solver and the centred operator on random shapes."""

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from bayeslin.operators import CenteredFeatures, as_features
from bayeslin.solvers import ExactFactorization, PosteriorPrecision

shapes = st.tuples(st.integers(1, 25), st.integers(1, 25))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), sparse=st.booleans(), log_ratio=st.floats(-6, 6))
def test_exact_solve_is_backward_stable(shape, seed, sparse, log_ratio):
    """``H x = r`` to a backward error of a few hundred ulps, primal or dual, any alpha/lambda."""
    n, d = shape
    rng = np.random.RandomState(seed)
    X = sp.random(n, d, density=0.5, format="csr", random_state=rng) if sparse else rng.randn(n, d)
    Xd = X.toarray() if sparse else X
    offset = Xd.mean(axis=0)
    F = CenteredFeatures(as_features(X), offset)
    alpha, lam = 10.0 ** (log_ratio / 2), 10.0 ** (-log_ratio / 2)
    system = PosteriorPrecision(F, alpha, lam)
    R = rng.randn(d, 3)
    x = ExactFactorization(F).solve(alpha, lam, R)
    Phi = Xd - offset
    H = alpha * Phi.T @ Phi + lam * np.eye(d)
    # Normwise backward error ||H x - r|| / (||H|| ||x|| + ||r||) of a stable solve is O(eps).
    backward = np.linalg.norm(H @ x - R) / (np.linalg.norm(H, 2) * np.linalg.norm(x) + np.linalg.norm(R))
    assert backward < 500 * np.finfo(float).eps * max(n, d)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), sparse=st.booleans())
def test_centred_operator_matches_dense(shape, seed, sparse):
    """Every product of the implicitly centred operator equals the explicitly centred matrix's."""
    n, d = shape
    rng = np.random.RandomState(seed)
    X = sp.random(n, d, density=0.5, format="csr", random_state=rng) if sparse else rng.randn(n, d) + 3.0
    Xd = X.toarray() if sparse else X
    offset = rng.randn(d)
    F = CenteredFeatures(as_features(X), offset)
    Phi = Xd - offset
    V, U, w = rng.randn(d, 2), rng.randn(n, 2), rng.uniform(0.1, 2.0, n)
    scale = 1.0 + np.abs(Phi).max() ** 2 * max(n, d)
    tol = 1e-12 * scale
    np.testing.assert_allclose(F.matmat(V), Phi @ V, atol=tol)
    np.testing.assert_allclose(F.rmatmat(U), Phi.T @ U, atol=tol)
    np.testing.assert_allclose(F.gram(np.sqrt(w)), Phi.T @ (w[:, None] * Phi), atol=tol)
    np.testing.assert_allclose(F.kernel(np.sqrt(w)), (np.sqrt(w)[:, None] * Phi) @ (Phi.T * np.sqrt(w)), atol=tol)
    np.testing.assert_allclose(F.row_sq_norms(), np.sum(Phi**2, axis=1), atol=tol)
    np.testing.assert_allclose(F.col_sq_norms(w), w @ Phi**2, atol=tol)
