"""Likelihood precisions and their square-root factors against dense formulas.

``B_i`` is checked against the finite-difference Hessian of the negative
log-likelihood, ``L_i L_i^T = B_i`` against ``B_i`` and the NLL gradient
against finite differences.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from bayeslin.likelihoods import (
    GaussianLikelihood,
    LogisticLikelihood,
    SoftmaxLikelihood,
)


def _nll(kind, f, y, precision=2.0):
    """Negative log-likelihood of one observation (reference, plain NumPy)."""
    if kind == "softmax":
        return -(f[y] - np.log(np.sum(np.exp(f))))
    if kind == "logistic":
        return np.log1p(np.exp(-f[0])) if y == 1 else np.log1p(np.exp(f[0]))
    return 0.5 * precision * np.sum((y - f) ** 2)


def _make(kind, n=6, m=4, seed=0):
    rng = np.random.RandomState(seed)
    if kind == "softmax":
        f = rng.randn(n, m) * 2
        return SoftmaxLikelihood(f), f, rng.randint(0, m, size=n)
    if kind == "logistic":
        f = rng.randn(n, 1) * 2
        return LogisticLikelihood(f), f, rng.randint(0, 2, size=n)
    f = rng.randn(n, m)
    return GaussianLikelihood(f, precision=2.0), f, rng.randn(n, m)


def _fd_hessian(kind, f, y, h=1e-4):
    m = f.shape[0]
    H = np.zeros((m, m))
    E = np.eye(m) * h
    for a in range(m):
        for b in range(m):
            H[a, b] = (
                _nll(kind, f + E[a] + E[b], y)
                - _nll(kind, f + E[a] - E[b], y)
                - _nll(kind, f - E[a] + E[b], y)
                + _nll(kind, f - E[a] - E[b], y)
            ) / (4 * h * h)
    return H


@pytest.mark.parametrize("kind", ["softmax", "logistic", "gaussian"])
def test_precision_factor_and_gradient(kind):
    lik, f, y = _make(kind)
    n, m = f.shape
    L = np.asarray(lik.sqrt_factor())
    assert L.shape == (n, m, m)
    rng = np.random.RandomState(1)
    U = rng.randn(n, m, 3)
    for i in range(n):
        B_ref = _fd_hessian(kind, f[i], y[i])
        assert_allclose(L[i] @ L[i].T, B_ref, atol=1e-6)
        assert_allclose(lik.hessian_times(U)[i], B_ref @ U[i], atol=1e-6)
        assert_allclose(lik.sqrt_times(U)[i], L[i] @ U[i], atol=1e-12)
        assert_allclose(lik.sqrt_t_times(U)[i], L[i].T @ U[i], atol=1e-12)
        assert_allclose(lik.whitening_transform()[i], L[i].T)
        g_ref = np.array(
            [(_nll(kind, f[i] + e, y[i]) - _nll(kind, f[i] - e, y[i])) / 2e-6 for e in np.eye(m) * 1e-6]
        )
        assert_allclose(lik.gradient(y)[i], g_ref, atol=1e-6)


def test_softmax_precision_is_singular_along_the_common_shift():
    lik, f, _ = _make("softmax")
    ones = np.ones((f.shape[0], f.shape[1], 1))
    assert_allclose(lik.hessian_times(ones), 0.0, atol=1e-12)
    # The factor has the same null space, so draws L xi never move all logits together.
    assert_allclose(lik.sqrt_t_times(ones), 0.0, atol=1e-12)


def test_logistic_needs_one_logit():
    with pytest.raises(ValueError, match="one logit"):
        LogisticLikelihood(np.zeros((3, 2)))
