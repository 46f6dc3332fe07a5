"""The SGD solver against dense solves, on blocks of posterior-mean and sample right-hand sides.

Every block is what the evidence loop builds: column 0 is the posterior mean's
``alpha Phi^T W y`` started from zero, the others are sample-then-optimise
right-hand sides ``A theta_n`` started from ``theta_n``.

How the tolerances follow from the solver's contract:

- The reported ``residual_norms`` must be the true relative residuals
  ``||R - H X|| / ||R||`` (one full pass in the solver, a dense product
  here): equal up to rounding.
- From ``X - X* = H^-1 (H X - R)``,
  ``||X - X*|| <= ||H X - R|| / lambda_min(H)``. This is asserted per column:
  it ties the error to the reported residual without any slack for the
  solver.
- The relative error is asserted <= 1e-2 on every column and <= 1e-3 on the
  posterior mean, the accuracy the solver's default ``tol`` is meant to
  give on these problems. The sample columns carry more of their weight
  in low-curvature directions, where a residual of ``tol`` allows an error
  up to ``cond(H) * tol``. The largest measured errors are about 3e-3
  (samples) and 1.5e-4 (mean).
"""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_diabetes

from bayeslin.operators import CenteredFeatures, SparseFeatures, as_features
from bayeslin.solvers import PosteriorPrecision, solve_sgd

N_SAMPLES = 3


def _dense_precision(X, alpha, prior, sqrt_weights):
    Xw = X if sqrt_weights is None else X * sqrt_weights[:, None]
    return alpha * Xw.T @ Xw + np.diag(np.broadcast_to(prior, (X.shape[1],)).astype(float))


def _block(X, y, alpha, prior, sqrt_weights, seed):
    """Mean and sample right-hand sides with the evidence loop's warm starts."""
    rng = np.random.default_rng(seed)
    n, d = X.shape
    a = np.broadcast_to(prior, (d,)).astype(float)
    Xw = X if sqrt_weights is None else X * sqrt_weights[:, None]
    yw = y if sqrt_weights is None else y * sqrt_weights
    mean_rhs = alpha * Xw.T @ yw
    # A theta_n = A theta_0 + Phi^T B^1/2 xi with theta_0 ~ N(0, A^-1).
    sample_rhs = np.sqrt(a)[:, None] * rng.standard_normal((d, N_SAMPLES)) + np.sqrt(alpha) * Xw.T @ rng.standard_normal(
        (n, N_SAMPLES)
    )
    rhs = np.column_stack([mean_rhs, sample_rhs])
    x0 = np.column_stack([np.zeros(d), sample_rhs / a[:, None]])
    return rhs, x0


def _diabetes(standardise):
    X, y = load_diabetes(return_X_y=True)
    X = X - X.mean(axis=0)
    if standardise:
        X = X / X.std(axis=0)
    return X, y - y.mean()


def _synthetic(n, d, seed, weights=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.linspace(0.2, 2.0, d)
    y = X @ rng.standard_normal(d) * (10.0 / d**0.5) + rng.standard_normal(n)
    sw = np.sqrt(rng.uniform(0.5, 2.0, n)) if weights else None
    return X, y, sw


def _sparse(n=3000, d=200, seed=1):
    rng = np.random.default_rng(seed)
    S = sp.random(n, d, density=0.05, format="csr", random_state=seed)
    S.data = rng.uniform(0.0, 3.0, S.nnz)
    offset = np.asarray(S.mean(axis=0)).ravel()
    y = S @ rng.standard_normal(d) + rng.standard_normal(n)
    return S, offset, y - y.mean()


def _problem(name):
    """Return (features, dense X, y, alpha, prior, sqrt_weights, batch_size)."""
    if name == "diabetes-raw":
        # Around BayesianRidge's evidence optimum on this data.
        X, y = _diabetes(False)
        return as_features(X), X, y, 1 / 3000, 1e-5, None, None
    if name == "diabetes-raw-unit":
        X, y = _diabetes(False)
        return as_features(X), X, y, 1.0, 1.0, None, None
    if name == "diabetes-standardised":
        X, y = _diabetes(True)
        return as_features(X), X, y, 1 / 3000, 1e-5, None, None
    if name == "diabetes-standardised-large":
        X, y = _diabetes(True)
        return as_features(X), X, y, 1e3, 1e-3, None, None
    if name == "n>d-weighted-minibatch":
        X, y, sw = _synthetic(2000, 50, 0, weights=True)
        return as_features(X), X, y, 4.0, 1.0, sw, 200
    if name == "n<d":
        X, y, _ = _synthetic(100, 400, 1)
        return as_features(X), X, y, 1.0, 0.5, None, None
    if name == "n<d-minibatch":
        X, y, _ = _synthetic(100, 400, 1)
        return as_features(X), X, y, 1.0, 0.5, None, 20
    if name == "diagonal-prior":
        X, y, _ = _synthetic(500, 30, 2)
        prior = np.exp(np.random.default_rng(3).uniform(-3.0, 3.0, 30))
        return as_features(X), X, y, 2.0, prior, None, None
    if name == "diagonal-prior-weighted-minibatch":
        X, y, sw = _synthetic(2000, 50, 4, weights=True)
        prior = np.exp(np.random.default_rng(5).uniform(-2.0, 2.0, 50))
        return as_features(X), X, y, 1.0, prior, sw, 100
    if name in ("sparse-centred", "sparse-centred-minibatch"):
        S, offset, y = _sparse()
        features = CenteredFeatures(SparseFeatures(S), offset)
        batch = None if name == "sparse-centred" else 300
        return features, S.toarray() - offset, y, 1.0, 0.1, None, batch
    raise ValueError(name)


PROBLEMS = [
    "diabetes-raw",
    "diabetes-raw-unit",
    "diabetes-standardised",
    "diabetes-standardised-large",
    "n>d-weighted-minibatch",
    "n<d",
    "n<d-minibatch",
    "diagonal-prior",
    "diagonal-prior-weighted-minibatch",
    "sparse-centred",
    "sparse-centred-minibatch",
]


@pytest.mark.parametrize("name", PROBLEMS)
def test_matches_dense_solve(name):
    features, X, y, alpha, prior, sw, batch = _problem(name)
    rhs, x0 = _block(X, y, alpha, prior, sw, seed=0)
    H = _dense_precision(X, alpha, prior, sw)
    ref = np.linalg.solve(H, rhs)
    system = PosteriorPrecision(features, alpha, prior, sw)

    res = solve_sgd(system, rhs, x0, batch_size=batch, random_state=0)

    assert res.converged
    if batch is not None:
        assert res.info["batch_size"] == batch
    true_rel = np.linalg.norm(rhs - H @ res.solution, axis=0) / np.linalg.norm(rhs, axis=0)
    np.testing.assert_allclose(res.residual_norms, true_rel, rtol=1e-6, atol=1e-12)
    assert np.all(true_rel <= 1e-4)  # the default tol

    err = np.linalg.norm(res.solution - ref, axis=0)
    bound = true_rel * np.linalg.norm(rhs, axis=0) / np.linalg.eigvalsh(H)[0]
    assert np.all(err <= bound * (1 + 1e-6))
    rel_err = err / np.linalg.norm(ref, axis=0)
    assert np.all(rel_err <= 1e-2), rel_err
    assert rel_err[0] <= 1e-3, rel_err


def test_max_iter_reached_is_not_converged():
    features, X, y, alpha, prior, sw, batch = _problem("n>d-weighted-minibatch")
    rhs, x0 = _block(X, y, alpha, prior, sw, seed=0)
    system = PosteriorPrecision(features, alpha, prior, sw)
    res = solve_sgd(system, rhs, x0, batch_size=batch, max_iter=3, random_state=0)
    assert not res.converged
    assert res.n_iter == 3
    assert np.max(res.residual_norms) > 1e-4


def test_warm_start_at_solution_returns_immediately():
    features, X, y, alpha, prior, sw, batch = _problem("n>d-weighted-minibatch")
    rhs, _ = _block(X, y, alpha, prior, sw, seed=0)
    exact = np.linalg.solve(_dense_precision(X, alpha, prior, sw), rhs)
    system = PosteriorPrecision(features, alpha, prior, sw)
    res = solve_sgd(system, rhs, exact, batch_size=batch, random_state=0)
    assert res.converged
    assert res.n_iter == 0
    np.testing.assert_array_equal(res.solution, exact)
    assert np.all(res.residual_norms <= 1e-10)


def test_defaults_use_all_rows_on_small_data():
    # Minibatches of a few hundred rows save nothing here: plain accelerated GD.
    features, X, y, alpha, prior, sw, _ = _problem("diabetes-raw")
    rhs, x0 = _block(X, y, alpha, prior, sw, seed=0)
    res = solve_sgd(PosteriorPrecision(features, alpha, prior, sw), rhs, x0, random_state=0)
    assert res.info["batch_size"] == X.shape[0]


def test_same_random_state_same_result():
    features, X, y, alpha, prior, sw, batch = _problem("n>d-weighted-minibatch")
    rhs, x0 = _block(X, y, alpha, prior, sw, seed=0)
    runs = [
        solve_sgd(PosteriorPrecision(features, alpha, prior, sw), rhs, x0, batch_size=batch, random_state=7)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].solution, runs[1].solution)
    assert runs[0].n_iter == runs[1].n_iter


@pytest.mark.parametrize("name", ["diabetes-standardised", "n>d-weighted-minibatch", "n<d", "sparse-centred"])
def test_curvature_estimate_is_cached_and_from_above(name):
    # The Ritz value plus its residual bounds the top eigenvalue from above
    # in practice; 5% above it still leaves Nesterov's step well inside its
    # stable range, and a larger overestimate would waste iterations.
    features, X, y, alpha, prior, sw, batch = _problem(name)
    rhs, x0 = _block(X, y, alpha, prior, sw, seed=0)
    system = PosteriorPrecision(features, alpha, prior, sw)
    res = solve_sgd(system, rhs, x0, batch_size=batch, random_state=0)
    Xw = X if sw is None else X * sw[:, None]
    top = np.linalg.eigvalsh(Xw.T @ Xw)[-1]
    assert top * (1 - 1e-9) <= res.info["lmax"] <= 1.05 * top
    assert system.statistics.gram_lmax == res.info["lmax"]

    # New hyperparameters share the statistics and still converge to the new solution.
    other = system.with_hyperparameters(alpha * 3.0, prior * 0.5)
    assert other.statistics.gram_lmax == res.info["lmax"]
    rhs2, x02 = _block(X, y, alpha * 3.0, prior * 0.5, sw, seed=1)
    res2 = solve_sgd(other, rhs2, x02, batch_size=batch, random_state=0)
    assert res2.converged
    ref2 = np.linalg.solve(_dense_precision(X, alpha * 3.0, prior * 0.5, sw), rhs2)
    rel_err = np.linalg.norm(res2.solution - ref2, axis=0) / np.linalg.norm(ref2, axis=0)
    assert np.all(rel_err <= 1e-2), rel_err


def test_stable_where_the_minibatch_noise_bound_is_tight():
    # One coordinate per row: E||(H_b - H) v||^2 reaches the bound the step
    # size and the momentum cap are built from. Tiny batches and a tiny
    # prior (Nesterov's momentum would be ~1) must neither diverge nor stall.
    d = 50
    X = np.tile(np.eye(d) * np.linspace(0.3, 1.0, d), (4, 1))
    rng = np.random.default_rng(0)
    alpha, lam = 1.0, 1e-4
    H = _dense_precision(X, alpha, lam, None)
    rhs = np.column_stack([X.T @ rng.standard_normal(X.shape[0]), rng.standard_normal((d, 2))])
    for batch in (2, 10, 50):
        res = solve_sgd(PosteriorPrecision(as_features(X), alpha, lam), rhs, batch_size=batch, random_state=0)
        assert res.converged, batch
        rel_err = np.linalg.norm(res.solution - np.linalg.solve(H, rhs), axis=0) / np.linalg.norm(
            np.linalg.solve(H, rhs), axis=0
        )
        assert np.all(rel_err <= 1e-2), (batch, rel_err)


def test_float32():
    features, X, y, alpha, prior, sw, batch = _problem("n>d-weighted-minibatch")
    rhs, x0 = _block(X, y, alpha, prior, sw, seed=0)
    ref = np.linalg.solve(_dense_precision(X, alpha, prior, sw), rhs)
    f32 = as_features(X.astype(np.float32))
    system = PosteriorPrecision(f32, alpha, prior, sw.astype(np.float32))
    res = solve_sgd(system, rhs.astype(np.float32), x0.astype(np.float32), batch_size=batch, random_state=0)
    assert res.converged
    assert res.solution.dtype == np.float32
    rel_err = np.linalg.norm(res.solution - ref, axis=0) / np.linalg.norm(ref, axis=0)
    assert np.all(rel_err <= 1e-2), rel_err


def test_zero_right_hand_side_column():
    features, X, y, alpha, prior, sw, _ = _problem("diabetes-raw-unit")
    rhs, x0 = _block(X, y, alpha, prior, sw, seed=0)
    rhs[:, 1] = 0.0
    x0[:, 1] = 0.0
    res = solve_sgd(PosteriorPrecision(features, alpha, prior, sw), rhs, x0, random_state=0)
    assert res.converged
    np.testing.assert_array_equal(res.solution[:, 1], 0.0)


def test_rejects_bad_batch_size():
    features, X, y, alpha, prior, sw, _ = _problem("diabetes-raw-unit")
    rhs, x0 = _block(X, y, alpha, prior, sw, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        solve_sgd(PosteriorPrecision(features, alpha, prior, sw), rhs, x0, batch_size=0)
