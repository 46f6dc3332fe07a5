"""The randomized Nystrom preconditioner of cg: its formulas against dense numpy, its effect, and its default.

References: dense ``H``, ``P`` and their inverses (numpy.linalg); solve
tolerances from the solver tolerance.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from bayeslin.operators import DenseFeatures
from bayeslin.solvers import PosteriorPrecision, solve_cg, solver_options
from bayeslin.solvers.cg import auto_preconditioner
from bayeslin.solvers.nystrom import jacobi_scale, randomized_nystrom


def _collinear(n=300, d=120, seed=1, spread=True):
    """Features with a decaying spectrum and, with ``spread``, columns of very different scale."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.logspace(0, -3, d)[None, :] @ np.linalg.qr(rng.standard_normal((d, d)))[0]
    return X * np.logspace(-1, 1, d)[None, :] if spread else X


def _group_prior(d, values=(1e-3, 1e-1, 10.0)):
    """A per-group (layerwise) prior: three blocks of very different precision."""
    return np.concatenate([np.full(len(part), v) for part, v in zip(np.array_split(np.arange(d), len(values)), values)])


def _scaled_sketch(X, rank):
    G = X.T @ X
    diag = np.diag(G).copy()
    S = jacobi_scale(diag, np)
    return G, S, randomized_nystrom(lambda V: G @ V, G.shape[0], rank, np, np.float64, scale=S, gram_diagonal=diag)


@pytest.mark.parametrize("prior_kind", ["scalar", "groups"])
@pytest.mark.parametrize("rank", [5, 40])
def test_woodbury_preconditioner_is_the_inverse_of_its_dense_matrix(prior_kind, rank):
    X = _collinear(n=80, d=40)
    alpha = 3.0
    prior = 0.2 if prior_kind == "scalar" else _group_prior(40)
    G, S, approx = _scaled_sketch(X, rank)
    # P = S^-1 (S A S + alpha max(diag(S G S) - diag(U s U^T), 0) + alpha U s U^T) S^-1, formed densely.
    U, s = approx.U, approx.s
    captured = U @ np.diag(s) @ U.T
    D = np.broadcast_to(prior, (40,)) * S**2 + alpha * np.clip(np.diag(G) * S**2 - np.diag(captured), 0, None)
    P = np.diag(1 / S) @ (np.diag(D) + alpha * captured) @ np.diag(1 / S)
    apply = approx.preconditioner(alpha, prior)
    assert_allclose(apply(np.eye(40)), np.linalg.inv(P), rtol=1e-9, atol=1e-9 * np.abs(np.linalg.inv(P)).max())


@pytest.mark.parametrize("prior_kind", ["scalar", "groups"])
def test_full_rank_sketch_preconditions_exactly(prior_kind):
    # rank = d: the sketch is G itself (up to its rounding shift), so P = H.
    X = _collinear(n=80, d=30, spread=True)
    alpha = 5.0
    prior = 0.1 if prior_kind == "scalar" else _group_prior(30)
    G, _, approx = _scaled_sketch(X, 30)
    H = alpha * G + np.diag(np.broadcast_to(prior, (30,)))
    PH = approx.preconditioner(alpha, prior)(H)
    assert_allclose(PH, np.eye(30), atol=1e-6)


def test_unscaled_scalar_preconditioner_keeps_its_formula():
    # Frangella, Tropp and Udell's P^-1 = U diag((alpha s_l + lam)/(alpha s + lam)) U^T + (I - U U^T).
    X = _collinear(n=80, d=40, spread=False)
    G = X.T @ X
    approx = randomized_nystrom(lambda V: G @ V, 40, 8, np, np.float64)
    U, s = approx.U, approx.s
    alpha, lam = 2.0, 0.3
    ref = U @ np.diag((alpha * s[-1] + lam) / (alpha * s + lam)) @ U.T + np.eye(40) - U @ U.T
    assert_allclose(approx.preconditioner(alpha, lam)(np.eye(40)), ref, atol=1e-12)


def test_flat_spectrum_falls_back_to_jacobi():
    # Gaussian features, n >> d: the captured top is within a factor of about 2 of the rest.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 50)) * rng.uniform(0.5, 2.0, 50)
    G, S, approx = _scaled_sketch(X, 10)
    alpha, prior = 1.5, _group_prior(50)
    apply = approx.preconditioner(alpha, prior, min_gain=4.0)
    assert_allclose(apply(np.eye(50)), np.diag(1 / (alpha * np.diag(G) + prior)), rtol=1e-12)
    # Without the rule the captured directions are kept.
    assert not np.allclose(approx.preconditioner(alpha, prior)(np.eye(50)), apply(np.eye(50)))


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
    # diag(G) is one pass, formed by the first (Jacobi) solve and shared; the sketch is 40 columns.
    assert jacobi.info["passes"] == jacobi.n_iter + 1 + 1
    assert nys.info["passes"] == pytest.approx(nys.n_iter + 1 + 40 / 4)


def test_auto_is_the_cg_default_and_skips_small_problems():
    assert solver_options("cg")["preconditioner"] == "auto"
    assert "preconditioner" not in solver_options("sgd")
    assert auto_preconditioner(100, True, 64) is None
    assert auto_preconditioner(100, False, 64) == "jacobi"
    assert auto_preconditioner(4 * 64, True, 64) == "nystrom"


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
