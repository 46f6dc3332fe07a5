"""The randomized Nystrom preconditioner of cg: its formulas against dense numpy, its effect, and its default.

References: dense ``H``, ``P`` and their inverses (numpy.linalg); solve
tolerances from the solver tolerance.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from bayeslin.operators import DenseFeatures
from bayeslin.solvers import PosteriorPrecision, solve_cg, solver_options
from bayeslin.solvers.cg import NYSTROM_MIN_GAIN, auto_preconditioner
from bayeslin.solvers.nystrom import prior_scale, randomized_nystrom


def _collinear(n=300, d=120, seed=1, spread=True, decay=3.0):
    """Features with a decaying spectrum and, with ``spread``, columns of very different scale."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.logspace(0, -decay, d)[None, :] @ np.linalg.qr(rng.standard_normal((d, d)))[0]
    return X * np.logspace(-1, 1, d)[None, :] if spread else X


def _group_prior(d, values=(1e-3, 1e-1, 10.0)):
    """A per-group (layerwise) prior: three blocks of very different precision."""
    return np.concatenate([np.full(len(part), v) for part, v in zip(np.array_split(np.arange(d), len(values)), values)])


def _sketch(X, rank, prior):
    G = X.T @ X
    S = prior_scale(prior, np)
    return G, S, randomized_nystrom(lambda V: G @ V, G.shape[0], rank, np, np.float64, scale=S)


@pytest.mark.parametrize("prior_kind", ["scalar", "groups"])
@pytest.mark.parametrize("rank", [5, 40])
def test_woodbury_preconditioner_is_the_inverse_of_its_dense_matrix(prior_kind, rank):
    X = _collinear(n=80, d=40)
    alpha = 3.0
    prior = 0.2 if prior_kind == "scalar" else _group_prior(40)
    G, S, approx = _sketch(X, rank, prior)
    S = np.ones(40) if S is None else S
    # The sketch approximates S G S ...
    captured = approx.U @ np.diag(approx.s) @ approx.U.T
    if rank == 40:
        SGS = S[:, None] * G * S[None, :]
        assert_allclose(captured, SGS, atol=1e-8 * np.linalg.norm(SGS, 2))
    # ... and P = A + alpha S^-1 U diag(s) U^T S^-1, formed densely, is what
    # the Woodbury form inverts, at the prior it was formed with and at a later one.
    for later in (prior, prior * 7.0):
        P = np.diag(np.broadcast_to(later, (40,))) + alpha * captured / S[:, None] / S[None, :]
        inv = np.linalg.inv(P)
        assert_allclose(approx.preconditioner(alpha, later)(np.eye(40)), inv, rtol=1e-9, atol=1e-9 * np.abs(inv).max())


@pytest.mark.parametrize("prior_kind", ["scalar", "groups"])
def test_full_rank_sketch_preconditions_exactly(prior_kind):
    # rank = d: the sketch is G itself (up to its rounding shift), so P = H.
    X = _collinear(n=80, d=30)
    alpha = 5.0
    prior = 0.1 if prior_kind == "scalar" else _group_prior(30)
    G, _, approx = _sketch(X, 30, prior)
    H = alpha * G + np.diag(np.broadcast_to(prior, (30,)))
    assert_allclose(approx.preconditioner(alpha, prior)(H), np.eye(30), atol=1e-6)


def test_auto_keeps_plain_cg_on_a_flat_spectrum():
    # Gaussian features, n >> d: the captured top is within a factor of about 2 of the rest.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4000, 300))
    system = PosteriorPrecision(DenseFeatures(X), 1.5, 0.1)
    R = rng.standard_normal((300, 3))
    auto = solve_cg(system, R, tol=1e-10, preconditioner="auto", preconditioner_rank=64)
    assert system.statistics.nystrom.gain(1.5, 0.1) < NYSTROM_MIN_GAIN
    plain = solve_cg(system, R, tol=1e-10)
    # The iterates of plain CG: the sketch was formed but not applied.
    assert auto.n_iter == plain.n_iter
    assert_allclose(auto.solution, plain.solution, rtol=1e-12)
    # On a decaying spectrum the gain is large.
    X = _collinear()
    assert randomized_nystrom(lambda V: X.T @ (X @ V), X.shape[1], 40, np, np.float64).gain(50.0, 1e-3) > 100


@pytest.mark.parametrize("prior_kind", ["scalar", "groups"])
def test_nystrom_cuts_iterations_and_keeps_the_answer(prior_kind):
    X = _collinear()
    d = X.shape[1]
    alpha = 50.0
    prior = 1e-3 if prior_kind == "scalar" else _group_prior(d)
    system = PosteriorPrecision(DenseFeatures(X), alpha, prior)
    R = np.random.default_rng(2).standard_normal((d, 4))
    H = alpha * X.T @ X + np.diag(np.broadcast_to(prior, (d,)))
    tol = 1e-8
    jacobi = solve_cg(system, R, tol=tol, max_iter=20000, preconditioner="jacobi")
    nys = solve_cg(system, R, tol=tol, max_iter=20000, preconditioner="nystrom", preconditioner_rank=40)
    assert jacobi.converged and nys.converged
    ref = np.linalg.solve(H, R)
    err = np.linalg.norm(nys.solution - ref, axis=0) / np.linalg.norm(ref, axis=0)
    # Forward error of a relative residual tol: at most cond(H) tol.
    assert np.all(err <= 10 * tol * np.linalg.cond(H))
    assert nys.n_iter < jacobi.n_iter / 2
    # The sketch (and diag(G)) are formed once, for every later (alpha, A).
    approx = system.statistics.nystrom
    later = system.with_hyperparameters(20.0, prior * 3.0)
    again = solve_cg(later, R, tol=tol, max_iter=20000, preconditioner="nystrom", preconditioner_rank=40)
    assert again.converged and later.statistics.nystrom is approx
    assert again.info["passes"] == again.n_iter + 1  # the iterations and the residual check, no sketch
    # diag(G) is one pass (Jacobi's); the sketch is 40 columns, at k = 4 ten passes.
    assert jacobi.info["passes"] == jacobi.n_iter + 1 + 1
    assert nys.info["passes"] == pytest.approx(nys.n_iter + 1 + 40 / 4)


def test_auto_is_the_cg_default_and_skips_small_problems():
    assert solver_options("cg")["preconditioner"] == "auto"
    assert "preconditioner" not in solver_options("sgd")
    assert auto_preconditioner(60, 128) == (None, 15)
    assert auto_preconditioner(285, 128) == ("nystrom", 71)
    assert auto_preconditioner(10_000, 128) == ("nystrom", 128)


@pytest.mark.parametrize("prior_kind", ["scalar", "groups"])
@pytest.mark.parametrize("preconditioner", ["nystrom", "auto"])
def test_preconditioned_cg_on_a_strict_device_matches_numpy(prior_kind, preconditioner):
    # array-api-strict's device1 refuses host conversions: none may happen
    # while forming or applying the preconditioner.
    xps = pytest.importorskip("array_api_strict")
    from bayeslin._backend import to_numpy
    from bayeslin.operators import as_features

    dev = xps.Device("device1")
    X = _collinear(n=120, d=48)
    d = X.shape[1]
    prior = 1e-3 if prior_kind == "scalar" else _group_prior(d)
    R = np.random.default_rng(3).standard_normal((d, 3))
    kw = dict(tol=1e-10, max_iter=5000, preconditioner=preconditioner, preconditioner_rank=8)
    ref = solve_cg(PosteriorPrecision(DenseFeatures(X), 7.0, prior), R, **kw)
    on = PosteriorPrecision(
        as_features(xps.asarray(X, device=dev)), 7.0, prior if np.ndim(prior) == 0 else xps.asarray(prior, device=dev)
    )
    res = solve_cg(on, xps.asarray(R, device=dev), **kw)
    assert res.solution.device == dev
    assert res.n_iter == ref.n_iter
    assert_allclose(to_numpy(res.solution), ref.solution, rtol=1e-8, atol=1e-12 * np.abs(ref.solution).max())


# ---------------------------------------------------------------------------
# The estimators with the default (auto) preconditioner against exact
# ---------------------------------------------------------------------------


def _network(hidden=(40,), n=150, seed=0):
    import warnings

    from sklearn.datasets import make_classification
    from sklearn.neural_network import MLPClassifier

    X, y = make_classification(n_samples=n, n_features=8, n_informative=6, n_classes=3, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = MLPClassifier(hidden_layer_sizes=hidden, max_iter=200, random_state=seed).fit(X, y)
    return X, y, net


@pytest.mark.parametrize("prior_structure, prior", [("scalar", 0.5), ("layerwise", [0.3, 2.0])])
def test_laplace_default_preconditioned_cg_matches_exact(prior_structure, prior):
    # 8*40 + 40 + 40*3 + 3 = 483 parameters: the default sketches rank 120.
    from sklearn.frozen import FrozenEstimator

    from bayeslin import LinearisedLaplaceClassifier

    X, y, net = _network()
    kw = dict(prior_precision=prior, prior_structure=prior_structure, n_samples=4, random_state=0)
    ref = LinearisedLaplaceClassifier(FrozenEstimator(net), solver="exact", **kw).fit(X, y)
    tol = 1e-10
    est = LinearisedLaplaceClassifier(FrozenEstimator(net), solver="cg", solver_tol=tol, **kw).fit(X, y)
    assert est.n_params_ // 4 >= 16
    assert est.last_solve_["residual"] <= tol
    from test_laplace import DenseGGN

    # The mode's forward error from a relative residual tol: at most cond(H) tol.
    H_cond = np.linalg.cond(DenseGGN(net, X, y).precision(prior if prior_structure == "scalar" else np.array(prior)))
    err = np.linalg.norm(est.tangent_mode_ - ref.tangent_mode_) / np.linalg.norm(ref.tangent_mode_)
    assert err <= 10 * H_cond * tol


def test_linear_regressor_default_preconditioned_cg_matches_exact():
    from bayeslin import BayesianLinearRegressor

    # Collinear columns of very different scale, d = 260 (a rank-65 sketch), where it pays.
    X = _collinear(n=300, d=260, seed=4, decay=1.5)
    y = X @ np.random.default_rng(5).standard_normal(260) + 0.3 * np.random.default_rng(6).standard_normal(300)
    ref = BayesianLinearRegressor(solver="exact").fit(X, y)
    est = BayesianLinearRegressor(solver="cg", solver_tol=1e-10, random_state=0).fit(X, y)
    # gamma is exact at this size (exact traces), so only the solves' error remains.
    for attr in ["alpha_", "lambda_", "effective_dim_"]:
        assert_allclose(getattr(est, attr), getattr(ref, attr), rtol=10 * est.tol)
    assert_allclose(est.coef_, ref.coef_, rtol=0, atol=10 * est.tol * np.linalg.norm(ref.coef_))
