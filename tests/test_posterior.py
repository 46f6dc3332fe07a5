"""What a fitted BayesianLinearRegressor keeps: the posterior object, its size, its independence from X.

The posterior's numbers are checked against numpy.linalg in test_linear_model
(draws, predictive std) and test_solvers (the factorisation); here: that a
pickle is sized by the model, that changing the training X after the fit
changes no later draw, and that many draws are solved in bounded blocks.
"""

import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import BayesianRidge

import bayeslin.posterior as posterior
from bayeslin import BayesianLinearRegressor


def test_pickle_of_a_large_exact_fit_is_sized_by_the_model():
    # 20,000 x 500: the factorisation is d x d (BayesianRidge keeps sigma_,
    # d x d too); the 80 MB training X stays out.
    rng = np.random.RandomState(0)
    n, d = 20000, 500
    X = rng.randn(n, d)
    y = X @ rng.randn(d) * 0.1 + rng.randn(n)
    est = BayesianLinearRegressor().fit(X, y)
    assert est.solver_ == "exact"
    size = len(pickle.dumps(est))
    assert size <= 8 * (d * d + 10 * d) + 2**16
    assert size <= 1.2 * len(pickle.dumps(BayesianRidge().fit(X[:2000], y[:2000])))
    loaded = pickle.loads(pickle.dumps(est))
    assert_allclose(loaded.predict(X[:5], return_std=True), est.predict(X[:5], return_std=True), rtol=1e-12)
    assert_allclose(loaded.sample_posterior(2, random_state=0), est.sample_posterior(2, random_state=0), rtol=1e-12)


def _fit(solver, X, y, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return BayesianLinearRegressor(solver=solver, random_state=0, **params).fit(X, y)


@pytest.mark.parametrize("solver", ["exact", "cg", "sgd"])
@pytest.mark.parametrize("shape", [(80, 12), (30, 60)])
def test_mutating_X_after_fit_changes_nothing(solver, shape):
    rng = np.random.RandomState(1)
    X = rng.randn(*shape)
    y = X @ rng.randn(shape[1]) + rng.randn(shape[0])
    est = _fit(solver, X, y)
    Xq = rng.randn(4, shape[1])
    before = (est.sample_posterior(3, random_state=0), est.sample_y(Xq, 3, random_state=0), est.predict(Xq, return_std=True))
    X[:] = rng.randn(*shape) * 10
    after = (est.sample_posterior(3, random_state=0), est.sample_y(Xq, 3, random_state=0), est.predict(Xq, return_std=True))
    for a, b in zip(before, after):
        assert_allclose(a, b, rtol=0, atol=0)


def test_many_draws_are_solved_in_bounded_blocks(monkeypatch):
    rng = np.random.RandomState(2)
    X = rng.randn(300, 20)
    y = X @ rng.randn(20) + rng.randn(300)
    est = _fit("cg", X, y)
    widths = []
    solve = posterior.SOLVERS["cg"]

    def recording(system, rhs, x0=None, **options):
        widths.append(rhs.shape[1])
        return solve(system, rhs, x0, **options)

    monkeypatch.setitem(posterior.SOLVERS, "cg", recording)
    draws = est.sample_posterior(600, random_state=0)
    assert draws.shape == (600, 20)
    assert sum(widths) == 600 and max(widths) <= posterior.SAMPLE_CHUNK and len(widths) == 3


def test_solver_stopping_short_while_sampling_warns_once():
    rng = np.random.RandomState(3)
    X = rng.randn(200, 30) * np.logspace(0, 3, 30)
    y = X @ rng.randn(30) + rng.randn(200)
    est = _fit("cg", X, y, solver_max_iter=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.sample_posterior(600, random_state=0)
    messages = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(messages) == 1 and "posterior sampling" in str(messages[0].message)


@pytest.mark.parametrize("shape", [(40, 12), (12, 40)], ids=["primal", "dual"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_exact_scalar_prior_covariance_factor_matches_numpy(shape, weighted):
    # Predictions on Dask input send this factor to the workers.
    from bayeslin.operators import as_features
    from bayeslin.solvers import ExactFactorization, PosteriorPrecision

    rng = np.random.RandomState(4)
    n, d = shape
    Phi = rng.randn(n, d) * rng.uniform(0.5, 2.0, size=d)
    w = rng.uniform(0.2, 3.0, size=n) if weighted else np.ones(n)
    sw = np.sqrt(w) if weighted else None
    alpha, lam = 1.7, 0.4
    F = as_features(Phi)
    system = PosteriorPrecision(F, alpha, lam, sw)
    post = posterior.Posterior(system, np.zeros(d), solver="exact", factorization=ExactFactorization(F, sw))
    C, weight = post.covariance_factor()
    Hinv = np.linalg.inv(alpha * Phi.T @ (w[:, None] * Phi) + lam * np.eye(d))
    assert_allclose(weight * C @ C.T, Hinv, rtol=1e-9, atol=1e-12)
