"""The Nystrom control variate of the effective dimension: its formulas against dense numpy, its bias and its spread.

References: dense ``P``, ``H`` and their inverses (numpy.linalg); sampling
tolerances come from the number of draws and repetitions.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.utils import check_random_state

from bayeslin.evidence import estimate_effective_dims, fit_evidence
from bayeslin.operators import DenseFeatures
from bayeslin.solvers import PosteriorPrecision, SampleDraws
from bayeslin.solvers.nystrom import prior_scale, randomized_nystrom


def _decaying(n=150, d=80, seed=0, decay=2.0):
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return rng.standard_normal((n, d)) * np.logspace(0, -decay, d)[None, :] @ Q


def _groups_prior(d, values=(0.5, 5.0, 50.0)):
    parts = np.array_split(np.arange(d), len(values))
    groups = [(int(p[0]), int(p[-1]) + 1) for p in parts]
    return groups, np.concatenate([np.full(len(p), v) for p, v in zip(parts, values)])


def _exact_gammas(H, prior, groups):
    """``gamma_g = |g| - Tr_g(A H^-1)`` from the dense ``H``."""
    inv_diag = np.broadcast_to(prior, (H.shape[0],)) * np.diag(np.linalg.inv(H))
    return np.array([b - a - inv_diag[a:b].sum() for a, b in groups])


def _assert_unbiased_with_honest_se(estimates, se, exact):
    """``estimates`` (reps, groups) of mean standard error ``se`` against ``exact``."""
    reps = estimates.shape[0]
    # Unbiased: the mean of `reps` estimates lies within 5 of their standard errors.
    assert np.all(np.abs(estimates.mean(axis=0) - exact) < 5 * se / np.sqrt(reps))
    # The reported standard error is the spread over repetitions (4 sd band of a sample std).
    band = 4 / np.sqrt(2 * (reps - 1))
    ratio = np.std(estimates, axis=0, ddof=1) / se
    assert np.all((1 - band < ratio) & (ratio < 1 + band))


@pytest.mark.parametrize("prior_kind", ["scalar", "groups"])
def test_control_variate_has_the_covariance_it_claims(prior_kind):
    X = _decaying(n=60, d=30)
    G = X.T @ X
    alpha = 2.0
    prior = 0.3 if prior_kind == "scalar" else _groups_prior(30)[1]
    S = prior_scale(prior, np)
    approx = randomized_nystrom(lambda V: G @ V, 30, 8, np, np.float64, scale=S)
    approx.compress(lambda V: G @ V)
    later = prior * 3.0  # a later evidence step's prior
    solve, prior_diagonal, captured_times = approx.control_variate(alpha, later)
    A = np.diag(np.broadcast_to(later, (30,)))
    Sd = np.ones(30) if S is None else S
    # r~ = A^1/2 g + sqrt(alpha) S^-1 U U^T S xi: a linear map of (g, xi), xi = X^T e.
    U = approx.U
    L_data = np.sqrt(alpha) * (U @ U.T * Sd[None, :]) / Sd[:, None] @ X.T
    L = np.hstack([np.sqrt(A), L_data])
    P = L @ L.T
    # ... whose covariance is P = A + alpha S^-1 U (U^T S G S U) U^T S^-1,
    C = U.T @ (Sd[:, None] * G * Sd[None, :]) @ U
    assert_allclose(P, A + alpha * (U @ C @ U.T) / Sd[:, None] / Sd[None, :], rtol=1e-10, atol=1e-10 * np.abs(P).max())
    # ... so v = P^-1 r~ ~ N(0, P^-1), and diag(A P^-1) is what the loop subtracts.
    rng = np.random.default_rng(1)
    g, e = rng.standard_normal((30, 5)), rng.standard_normal((60, 5))
    v = solve(g, approx.project_noise(X.T @ e))
    assert_allclose(v, np.linalg.solve(P, L @ np.vstack([g, e])), rtol=1e-9, atol=1e-12)
    assert_allclose(prior_diagonal, np.diag(A @ np.linalg.inv(P)), rtol=1e-9)
    assert_allclose(captured_times(v), (P - A) @ v, rtol=1e-9, atol=1e-12 * np.abs(P).max())


@pytest.mark.parametrize("prior_kind", ["scalar", "groups"])
def test_control_variate_estimate_is_unbiased_and_shrinks_the_error(prior_kind):
    # About 20 directions where the data outweigh the prior, all inside the 40 captured.
    X = _decaying(decay=4.0)
    d = X.shape[1]
    alpha, k, reps = 1.0, 16, 40
    groups, gprior = _groups_prior(d)
    prior = 2.0 if prior_kind == "scalar" else gprior
    grp = None if prior_kind == "scalar" else groups
    system = PosteriorPrecision(DenseFeatures(X), alpha, prior)
    H = alpha * X.T @ X + np.diag(np.broadcast_to(prior, (d,)))
    exact = _exact_gammas(H, prior, grp or [(0, d)])
    approx = randomized_nystrom(lambda V: X.T @ (X @ V), d, 40, np, np.float64, scale=prior_scale(prior, np))
    approx.compress(lambda V: X.T @ (X @ V))
    solve, prior_diagonal, captured_times = approx.control_variate(alpha, prior)
    plain, with_cv, se_plain, se_cv = [], [], [], []
    for seed in range(reps):
        draws = SampleDraws(system, k, check_random_state(seed))
        rhs = draws.rhs(alpha, prior)
        Z = np.linalg.solve(H, rhs)
        v = solve(draws.prior_noise, approx.project_noise(draws.data_noise))
        args = (system, Z, X @ Z, draws, rhs, grp, False, True)
        g0, s0 = estimate_effective_dims(*args)
        g1, s1 = estimate_effective_dims(*args, control=(v, prior_diagonal, captured_times(v)))
        plain.append(g0), with_cv.append(g1), se_plain.append(s0), se_cv.append(s1)
    with_cv, se_cv, se_plain = np.array(with_cv), np.mean(se_cv, axis=0), np.mean(se_plain, axis=0)
    _assert_unbiased_with_honest_se(with_cv, se_cv, exact)
    # The captured curvature leaves much less Monte Carlo error than the samples alone.
    assert np.all(se_cv < 0.5 * se_plain)


def test_per_group_sampled_fit_is_decided_by_the_control_variate(monkeypatch):
    # Per-group priors on features with a decaying spectrum, exact traces off:
    # the loop adds samples until every group's gamma is decided (5%). The
    # control variate takes the captured part of every gamma_g exactly, so it
    # decides them with fewer samples, and the groups' lambdas land on the
    # exact fixed point within their reported errors.
    import bayeslin.evidence as evidence

    X = _decaying(n=400, d=120, seed=2, decay=3.0)
    y = X @ np.random.default_rng(3).standard_normal(120) + 0.3 * np.random.default_rng(4).standard_normal(400)
    X, y = X - X.mean(0), y - y.mean()
    groups = _groups_prior(120)[0]
    F = DenseFeatures(X)
    common = dict(groups=groups, alpha_init=1.0 / np.var(y), lambda_init=1.0, tol=1e-6, max_iter=200)
    ref = fit_evidence(F, y, solver="exact", rng=check_random_state(0), **common)
    options = {"tol": 1e-10, "max_iter": 2000, "preconditioner": "auto"}

    def sampled():
        return fit_evidence(
            F, y, solver="cg", n_samples=16, exact_traces=False, rng=check_random_state(0),
            solver_options=options, **common
        )

    res = sampled()
    rel_se = res.gamma_se / ref.gammas
    assert np.all(rel_se < evidence.GROUP_WARN_RTOL)
    # lambda_g is proportional to gamma_g at a fixed mean: 4 of its standard errors.
    assert_allclose(res.lambdas, ref.lambdas, rtol=4 * float(np.max(rel_se)) + 1e-3)
    monkeypatch.setattr(evidence, "CONTROL_RANK", 0)
    plain = sampled()
    assert res.samples.shape[1] < plain.samples.shape[1]


def test_diagonal_control_variate_decides_a_prior_dominated_group(monkeypatch):
    # Per-group prior where the last group's prior outweighs its curvature
    # (gamma_g well below 1 of 27 parameters, as a network's input layer):
    # its gamma is the small difference of two large traces. The diagonal
    # of H as a control variate keeps every group's estimate unbiased and
    # cuts that group's Monte Carlo error at least in half.
    import bayeslin.evidence as evidence

    X = _decaying(n=200, d=80, decay=1.0)
    d = X.shape[1]
    alpha, k, reps = 1.0, 16, 40
    groups, prior = _groups_prior(d, values=(0.5, 5.0, 2000.0))
    system = PosteriorPrecision(DenseFeatures(X), alpha, prior)
    H = alpha * X.T @ X + np.diag(prior)
    exact = _exact_gammas(H, prior, groups)
    assert exact[2] < 0.5

    def estimates():
        out, se = [], []
        for seed in range(reps):
            draws = SampleDraws(system, k, check_random_state(seed))
            rhs = draws.rhs(alpha, prior)
            Z = np.linalg.solve(H, rhs)
            g, s = estimate_effective_dims(system, Z, X @ Z, draws, rhs, groups, False, True)
            out.append(g), se.append(s)
        return np.array(out), np.mean(se, axis=0)

    with_cv, se_cv = estimates()
    _assert_unbiased_with_honest_se(with_cv, se_cv, exact)
    monkeypatch.setattr(evidence, "_diagonal_control", lambda *args: [])
    _, se_plain = estimates()
    assert se_cv[2] < 0.5 * se_plain[2]
