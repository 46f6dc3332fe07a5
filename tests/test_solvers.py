"""The exact and CG solvers against dense numpy.linalg on small problems.

``H = alpha Phi^T W Phi + A`` with ``A = lambda I`` or a diagonal, for a block
of right-hand sides; primal (d <= n) and dual (d > n) shapes, with and without
sample weights, dense, sparse and implicitly centred features.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose

from bayeslin.operators import CenteredFeatures, SparseFeatures, as_features
from bayeslin.solvers import (
    SOLVERS,
    ExactFactorization,
    PosteriorPrecision,
    SolverResult,
    solve_cg,
)


def solve_exact(system, R):
    """``H^-1 R`` through the exact factorisation (what the removed ``solve_exact`` returned as ``solution``)."""
    return ExactFactorization(system.features, system.sqrt_weights).solve(system.alpha, system.prior, R)

SHAPES = {"primal": (40, 12), "dual": (12, 40)}


def _matrix(kind, shape, seed=0):
    rng = np.random.RandomState(seed)
    n, d = shape
    if kind == "dense":
        return rng.randn(n, d) * rng.uniform(0.5, 2.0, size=d) + rng.uniform(-1, 1, size=d)
    X = sp.random(n, d, density=0.4, format="csr", random_state=rng, data_rvs=lambda k: rng.randn(k) + 1.0)
    return X


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def _features(kind, shape, centred, seed=0):
    """(operator, its dense matrix)."""
    X = _matrix(kind, shape, seed)
    Xd = _dense(X)
    F = as_features(X)
    if centred:
        offset = Xd.mean(axis=0) + 0.1
        return CenteredFeatures(F, offset), Xd - offset
    return F, Xd


def _dense_H(Phi, alpha, prior, sqrt_weights):
    w = np.ones(Phi.shape[0]) if sqrt_weights is None else sqrt_weights**2
    A = np.diag(prior) if np.ndim(prior) else prior * np.eye(Phi.shape[1])
    return alpha * Phi.T @ (w[:, None] * Phi) + A


def _weights(n, use, seed=1):
    return np.sqrt(np.random.RandomState(seed).uniform(0.2, 3.0, size=n)) if use else None


CASES = [
    (kind, shape, centred, weighted)
    for kind in ["dense", "sparse"]
    for shape in ["primal", "dual"]
    for centred in [False, True]
    for weighted in [False, True]
]
CASE_IDS = [f"{k}-{s}-{'centred' if c else 'raw'}-{'weighted' if w else 'unweighted'}" for k, s, c, w in CASES]


@pytest.fixture(params=CASES, ids=CASE_IDS)
def case(request):
    kind, shape, centred, weighted = request.param
    F, Phi = _features(kind, SHAPES[shape], centred)
    sw = _weights(Phi.shape[0], weighted)
    return F, Phi, sw


def _rhs(d, k=5, seed=2):
    return np.random.RandomState(seed).randn(d, k)


# ---------------------------------------------------------------------------
# PosteriorPrecision
# ---------------------------------------------------------------------------


def test_posterior_precision_matmat(case):
    F, Phi, sw = case
    d = Phi.shape[1]
    V = _rhs(d)
    for prior in [0.7, np.random.RandomState(3).uniform(0.1, 2.0, size=d)]:
        system = PosteriorPrecision(F, 1.9, prior, sw)
        assert system.shape == (d, d)
        assert system.n_observations == Phi.shape[0]
        assert system.scalar_prior == (np.ndim(prior) == 0)
        assert_allclose(system.matmat(V), _dense_H(Phi, 1.9, prior, sw) @ V, rtol=1e-10, atol=1e-10)
        A = np.diag(prior) if np.ndim(prior) else prior * np.eye(d)
        assert_allclose(system.prior_times(V), A @ V, rtol=1e-12)


def test_posterior_precision_data_times_rows(case):
    F, Phi, sw = case
    n, d = Phi.shape
    V = _rhs(d)
    rows = np.array([3, 0, 7, 7, 1])
    system = PosteriorPrecision(F, 1.3, 0.5, sw)
    w = np.ones(n) if sw is None else sw**2
    sub = Phi[rows]
    ref = 2.5 * 1.3 * sub.T @ (w[rows][:, None] * (sub @ V))
    assert_allclose(system.data_times(V, rows=rows, scale=2.5), ref, rtol=1e-10, atol=1e-10)
    assert_allclose(system.data_times(V), 1.3 * Phi.T @ (w[:, None] * (Phi @ V)), rtol=1e-10, atol=1e-10)


def test_with_hyperparameters_shares_the_statistics(case):
    F, Phi, sw = case
    system = PosteriorPrecision(F, 1.0, 1.0, sw)
    other = system.with_hyperparameters(3.0, 0.2)
    assert other.alpha == 3.0 and other.prior == 0.2
    assert other.statistics is system.statistics
    V = _rhs(Phi.shape[1])
    assert_allclose(other.matmat(V), _dense_H(Phi, 3.0, 0.2, sw) @ V, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------
# solve_exact and ExactFactorization
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("alpha,lam", [(1.0, 1.0), (25.0, 0.05), (0.01, 10.0)])
def test_solve_exact_matches_numpy(case, alpha, lam):
    F, Phi, sw = case
    R = _rhs(Phi.shape[1])
    H = _dense_H(Phi, alpha, lam, sw)
    solution = solve_exact(PosteriorPrecision(F, alpha, lam, sw), R)
    assert solution.shape == R.shape
    # relative error of a backward-stable solve: ~ cond(H) * eps
    tol = 100 * np.linalg.cond(H) * np.finfo(float).eps
    assert np.linalg.norm(solution - np.linalg.solve(H, R)) <= tol * np.linalg.norm(np.linalg.solve(H, R))


def test_exact_factorization_kind(case):
    F, Phi, sw = case
    fact = ExactFactorization(F, sw)
    n, d = Phi.shape
    assert fact.kind == ("primal" if d <= n else "dual")
    w = np.ones(n) if sw is None else sw**2
    s_ref = np.linalg.eigvalsh(Phi.T @ (w[:, None] * Phi))[-min(n, d):]
    assert fact.eigenvalues.shape == (min(n, d),)
    assert_allclose(np.sort(fact.eigenvalues), np.clip(s_ref, 0, None), rtol=1e-9, atol=1e-9 * s_ref.max())


@pytest.mark.parametrize("alpha,lam", [(1.0, 1.0), (25.0, 0.05)])
def test_exact_factorization_spectral_quantities(case, alpha, lam):
    F, Phi, sw = case
    fact = ExactFactorization(F, sw)
    H = _dense_H(Phi, alpha, lam, sw)
    Hinv = np.linalg.inv(H)
    M = H - lam * np.eye(Phi.shape[1])
    assert_allclose(fact.effective_dim(alpha, lam), np.trace(Hinv @ M), rtol=1e-9)
    assert_allclose(fact.logdet(alpha, lam), np.linalg.slogdet(H)[1], rtol=1e-10)
    # inverse quadratic forms of query rows, through every kind of operator
    rng = np.random.RandomState(5)
    Q = rng.randn(7, Phi.shape[1])
    ref = np.einsum("ij,jk,ik->i", Q, Hinv, Q)
    for rows in [as_features(Q), SparseFeatures(sp.csr_matrix(Q)), CenteredFeatures(as_features(Q + 0.3), np.full(Phi.shape[1], 0.3))]:
        assert_allclose(fact.inverse_quadratic_forms(alpha, lam, rows), ref, rtol=1e-8)


def test_exact_inverse_quadratic_forms_chunks(case):
    F, Phi, sw = case
    fact = ExactFactorization(F, sw)
    Q = np.random.RandomState(6).randn(11, Phi.shape[1])
    Hinv = np.linalg.inv(_dense_H(Phi, 2.0, 0.5, sw))
    ref = np.einsum("ij,jk,ik->i", Q, Hinv, Q)
    assert_allclose(fact.inverse_quadratic_forms(2.0, 0.5, as_features(Q), chunk_size=3), ref, rtol=1e-8)


@pytest.mark.parametrize("shape", ["primal", "dual"])
@pytest.mark.parametrize("weighted", [False, True])
def test_exact_factorization_sample(shape, weighted, gaussian_check):
    F, Phi = _features("dense", SHAPES[shape], centred=True)
    sw = _weights(Phi.shape[0], weighted)
    alpha, lam = 1.7, 0.4
    fact = ExactFactorization(F, sw)
    k = 3000
    d = Phi.shape[1]
    assert fact.noise_rows >= d
    noise = np.random.RandomState(0).standard_normal((fact.noise_rows, k))
    z = fact.sample(alpha, lam, noise)
    assert z.shape == (d, k)
    gaussian_check.draws(z.T, np.zeros(d), np.linalg.inv(_dense_H(Phi, alpha, lam, sw)))


def test_exact_diagonal_prior_matches_numpy(case, gaussian_check):
    # The same factorisation serves a per-parameter prior (two groups here).
    F, Phi, sw = case
    d = Phi.shape[1]
    prior = np.where(np.arange(d) < d // 2, 0.5, 3.0)
    alpha = 1.7
    H = _dense_H(Phi, alpha, 0.0, sw) + np.diag(prior)
    Hinv = np.linalg.inv(H)
    fact = ExactFactorization(F, sw)
    R = _rhs(d)
    assert_allclose(fact.solve(alpha, prior, R), np.linalg.solve(H, R), rtol=1e-10)
    groups = [(0, d // 2), (d // 2, d)]
    ref = [b - a - np.sum(prior[a:b] * np.diag(Hinv)[a:b]) for a, b in groups]
    assert_allclose(fact.effective_dims(alpha, prior, groups), ref, rtol=1e-9)
    assert_allclose(fact.logdet(alpha, prior), np.linalg.slogdet(H)[1], rtol=1e-10)
    C = fact.covariance_factor(alpha, prior)
    assert_allclose(C @ C.T, Hinv, rtol=1e-9, atol=1e-12)
    Q = np.random.RandomState(5).randn(7, d)
    assert_allclose(fact.inverse_quadratic_forms(alpha, prior, as_features(Q)), np.einsum("ij,jk,ik->i", Q, Hinv, Q), rtol=1e-9)
    z = fact.sample(alpha, prior, np.random.RandomState(0).standard_normal((d, 3000)))
    gaussian_check.draws(z.T, np.zeros(d), Hinv)


def test_exact_single_feature():
    rng = np.random.RandomState(0)
    Phi = rng.randn(20, 1)
    system = PosteriorPrecision(as_features(Phi), 2.0, 0.5)
    R = rng.randn(1, 3)
    H = _dense_H(Phi, 2.0, 0.5, None)
    assert_allclose(solve_exact(system, R), np.linalg.solve(H, R), rtol=1e-12)
    fact = ExactFactorization(system.features)
    assert_allclose(fact.logdet(2.0, 0.5), np.log(H[0, 0]), rtol=1e-12)
    z = fact.sample(2.0, 0.5, rng.standard_normal((fact.noise_rows, 4)))
    assert z.shape == (1, 4)


def test_exact_dual_solve_is_backward_stable_at_large_alpha():
    # n < d with alpha / lambda ~ 3e6 (an interpolating fit, where
    # BayesianRidge's alpha runs away): the right-hand side of the posterior
    # mean, alpha Phi^T y, lies in the row space of Phi. A backward-stable
    # solve leaves a residual ||H x - r|| of order eps ||H|| ||x||, as
    # numpy.linalg.solve does; computing H^-1 r as (r - F D F^T r) / lambda
    # cancels the two nearly equal terms and loses ~log10(alpha s / lambda) digits.
    rng = np.random.RandomState(42)
    Phi = rng.rand(15, 30)
    Phi -= Phi.mean(axis=0)
    y = rng.randint(0, 3, size=15).astype(float)
    alpha, lam = 9.5e6, 3.17
    R = alpha * Phi.T @ y[:, None]
    H = _dense_H(Phi, alpha, lam, None)
    x = solve_exact(PosteriorPrecision(as_features(Phi), alpha, lam), R)

    def backward_error(v):
        return np.linalg.norm(H @ v - R) / (np.linalg.norm(H, 2) * np.linalg.norm(v) + np.linalg.norm(R))

    assert backward_error(np.linalg.solve(H, R)) < 1e-14
    assert backward_error(x) < 1e-13


# ---------------------------------------------------------------------------
# solve_cg
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("prior_kind", ["scalar", "diagonal"])
@pytest.mark.parametrize(
    "preconditioner, rank",
    [(None, None), ("jacobi", None), ("nystrom", 3), ("nystrom", 64), ("auto", 3), ("auto", 64)],
)
def test_solve_cg_matches_numpy(case, prior_kind, preconditioner, rank):
    F, Phi, sw = case
    d = Phi.shape[1]
    prior = 0.3 if prior_kind == "scalar" else np.random.RandomState(4).uniform(0.05, 3.0, size=d)
    alpha = 2.0
    system = PosteriorPrecision(F, alpha, prior, sw)
    R = _rhs(d, k=6)
    R[:, 2] *= 1e-3  # columns of very different scale converge on their own terms
    tol = 1e-10
    # Rank 3 leaves most of the spectrum to the remainder; 64 >= d captures all of it.
    options = {} if rank is None else {"preconditioner_rank": rank}
    res = solve_cg(system, R, tol=tol, max_iter=10 * d, preconditioner=preconditioner, **options)
    H = _dense_H(Phi, alpha, prior, sw)
    ref = np.linalg.solve(H, R)
    assert res.converged
    assert res.residual_norms.shape == (R.shape[1],)
    assert np.all(res.residual_norms <= tol)
    # The reported residuals are the true ones (to rounding in the recurrence).
    true_rel = np.linalg.norm(R - H @ res.solution, axis=0) / np.linalg.norm(R, axis=0)
    np.testing.assert_array_less(true_rel, 10 * tol)
    # |x - x*| / |x*| <= cond(H) * relative residual, column by column
    err = np.linalg.norm(res.solution - ref, axis=0) / np.linalg.norm(ref, axis=0)
    np.testing.assert_array_less(err, np.linalg.cond(H) * 10 * tol)


def test_solve_cg_warm_start(case):
    F, Phi, sw = case
    d = Phi.shape[1]
    system = PosteriorPrecision(F, 1.5, 0.4, sw)
    R = _rhs(d)
    H = _dense_H(Phi, 1.5, 0.4, sw)
    ref = np.linalg.solve(H, R)
    # Starting at the solution: nothing to do.
    res = solve_cg(system, R, x0=ref, tol=1e-8)
    assert res.n_iter == 0 and res.converged
    assert_allclose(res.solution, ref, rtol=1e-12)
    # Warm and cold starts give the same answer.
    warm = solve_cg(system, R, x0=ref + 1e-3 * np.random.RandomState(0).randn(*R.shape), tol=1e-10)
    assert np.linalg.norm(warm.solution - ref) <= np.linalg.cond(H) * 1e-9 * np.linalg.norm(ref)


def test_solve_cg_warm_start_saves_iterations():
    # d = 200 and cond(H) < 4: CG needs far fewer than d iterations, and the
    # count grows with log(initial residual / tolerance), so a start 1e-6
    # away from the solution must save iterations.
    rng = np.random.RandomState(0)
    Phi = rng.randn(400, 200) / np.sqrt(400)
    system = PosteriorPrecision(as_features(Phi), 1.0, 1.0)
    R = rng.randn(200, 3)
    ref = np.linalg.solve(_dense_H(Phi, 1.0, 1.0, None), R)
    cold = solve_cg(system, R, tol=1e-10)
    warm = solve_cg(system, R, x0=ref + 1e-6 * rng.randn(*R.shape), tol=1e-10)
    assert cold.converged and warm.converged
    assert cold.n_iter < 50
    assert warm.n_iter < cold.n_iter
    assert_allclose(warm.solution, ref, rtol=1e-8, atol=1e-9)


def test_solve_cg_stops_at_max_iter(case):
    F, Phi, sw = case
    system = PosteriorPrecision(F, 5.0, 0.01, sw)
    R = _rhs(Phi.shape[1])
    res = solve_cg(system, R, tol=1e-12, max_iter=1)
    assert res.n_iter == 1
    assert not res.converged
    assert np.max(res.residual_norms) > 1e-12
    H = _dense_H(Phi, 5.0, 0.01, sw)
    true_rel = np.linalg.norm(R - H @ res.solution, axis=0) / np.linalg.norm(R, axis=0)
    assert_allclose(res.residual_norms, true_rel, rtol=1e-6)


def test_solve_cg_zero_rhs_column(case):
    F, Phi, sw = case
    R = _rhs(Phi.shape[1])
    R[:, 1] = 0.0
    res = solve_cg(PosteriorPrecision(F, 1.0, 1.0, sw), R, tol=1e-10)
    assert np.all(np.isfinite(res.solution))
    assert_allclose(res.solution[:, 1], 0.0, atol=0)
    assert res.converged


def test_solve_cg_rejects_unknown_preconditioner(case):
    F, Phi, sw = case
    with pytest.raises(ValueError, match="preconditioner"):
        solve_cg(PosteriorPrecision(F, 1.0, 1.0, sw), _rhs(Phi.shape[1]), preconditioner="nystrom-typo")


def test_solver_registry():
    assert SOLVERS["cg"] is solve_cg
    assert "sgd" in SOLVERS
