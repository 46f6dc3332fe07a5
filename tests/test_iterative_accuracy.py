"""The iterative path's effective dimension: exact where cheap, a standard error where estimated, more samples when undecided.

References: BayesianLinearRegressor(solver='exact') and the dense posterior
(numpy.linalg); sampling tolerances come from the number of draws, solve
tolerances from the solver tolerance.
"""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from bayeslin import BayesianLinearRegressor
from bayeslin.evidence import estimate_effective_dims, exact_traces_affordable, fit_evidence
from bayeslin.operators import DenseFeatures
from bayeslin.solvers import PosteriorPrecision, SampleDraws


def _wide(n=60, d=150, seed=0):
    # The runaway family (n < d, weights of std 0.04, noise std 2), small.
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ (0.04 * rng.standard_normal(d)) + 2.0 * rng.standard_normal(n)
    return X, y


@pytest.mark.parametrize(
    "n, d, k, per_group, expected",
    [
        # min(n, d) (d for a per-group prior) against 32 products of k + 1 columns.
        (5000, 1088, 16, False, True),
        (5000, 1089, 16, False, False),
        (1000, 50_000, 16, False, True),
        (18_000, 1088, 16, True, True),
        (18_000, 2410, 16, True, False),
        # The grown sample count (16 x 16) when the samples cannot decide a step.
        (18_000, 2410, 256, True, True),
        (10**6, 16_448, 256, True, True),
        (10**6, 16_449, 256, True, False),
        # A per-group prior's per-step Cholesky (d^3 / 3) against 8 products.
        (1000, 2410, 256, True, True),
        (100, 2410, 256, True, False),
    ],
)
def test_exact_trace_limit(n, d, k, per_group, expected):
    class Shape:
        shape = (n, d)
        gram = kernel = staticmethod(lambda *args: None)

    assert exact_traces_affordable(Shape(), k, scalar_prior=not per_group) is expected


@pytest.mark.parametrize("solver", ["cg", "sgd"])
def test_iterative_matches_exact_where_the_spectrum_is_cheap(solver):
    X, y = _wide()
    ref = BayesianLinearRegressor(solver="exact", compute_score=True).fit(X, y)
    est = BayesianLinearRegressor(solver=solver, compute_score=True, random_state=0).fit(X, y)
    assert exact_traces_affordable(DenseFeatures(X), est.n_samples)
    # gamma and log det are exact; only the mean carries the solve's error,
    # a relative residual of solver_tol (cg 1e-6, sgd 1e-4) times cond(H).
    tol = {"cg": 1e-6, "sgd": 1e-4}[solver]
    H = ref.alpha_ * np.cov(X.T, bias=True) * X.shape[0] + ref.lambda_ * np.eye(X.shape[1])
    rtol = tol * np.linalg.cond(H)
    assert est.effective_dim_se_ == 0.0
    for attr in ["alpha_", "lambda_", "effective_dim_"]:
        assert_allclose(getattr(est, attr), getattr(ref, attr), rtol=rtol)
    assert_allclose(est.coef_, ref.coef_, rtol=rtol, atol=rtol * np.max(np.abs(ref.coef_)))
    # The scores use the exact log-determinant, not 16-probe SLQ.
    assert_allclose(est.scores_[-1], ref.scores_[-1], rtol=rtol)


def test_sample_draws_extend_keeps_the_first_draws():
    X, _ = _wide(20, 30)
    system = PosteriorPrecision(DenseFeatures(X), 2.0, 3.0)
    rng = check_random_state(0)
    draws = SampleDraws(system, 4, rng)
    before = draws.rhs(2.0, 3.0)
    draws.extend(system, 3, rng)
    after = draws.rhs(2.0, 3.0)
    assert draws.n_samples == 7 and after.shape == (30, 7)
    assert_allclose(after[:, :4], before)
    # The new columns are draws like the others: r = sqrt(lambda) g + sqrt(alpha) X^T xi.
    assert_allclose(draws.data_noise[:, 4:], X.T @ draws.xi[:, 4:])


def test_effective_dim_standard_error_matches_the_spread_over_seeds():
    X, _ = _wide(40, 60)
    F = DenseFeatures(X)
    alpha, lam, k, reps = 1.5, 20.0, 16, 60
    system = PosteriorPrecision(F, alpha, lam)
    H = alpha * X.T @ X + lam * np.eye(60)
    exact = np.trace(np.linalg.solve(H, alpha * X.T @ X))
    est, ses = [], []
    for seed in range(reps):
        draws = SampleDraws(system, k, check_random_state(seed))
        rhs = draws.rhs(alpha, lam)
        Z = np.linalg.solve(H, rhs)
        g, se = estimate_effective_dims(system, Z, X @ Z, draws, rhs, return_se=True)
        est.append(g[0])
        ses.append(se[0])
    est, mean_se = np.array(est), float(np.mean(ses))
    # Unbiased: the mean of `reps` estimates is within 5 standard errors.
    assert abs(est.mean() - exact) < 5 * mean_se / np.sqrt(reps)
    # The reported standard error is the spread of the estimate: the sample
    # std of `reps` values has relative sd 1/sqrt(2 (reps - 1)) (~9%); the se
    # uses k - m degrees of freedom for the fitted weights: 4 sd band.
    band = 4 / np.sqrt(2 * (reps - 1))
    assert 1 - band < np.std(est, ddof=1) / mean_se < 1 + band


def test_estimated_path_adds_samples_and_warns_when_undecided():
    # gamma ~ 1: 16x the samples still leave it too uncertain to decide (2%).
    rng = np.random.default_rng(3)
    X = rng.standard_normal((30, 50)) * 0.05
    y = rng.standard_normal(30)
    F = DenseFeatures(X - X.mean(0))
    with pytest.warns(ConvergenceWarning, match="increase n_samples"):
        res = fit_evidence(
            F, y - y.mean(), solver="cg", n_samples=2, alpha_init=1.0, lambda_init=1.0, exact_traces=False,
            rng=check_random_state(0), solver_options={"tol": 1e-8, "max_iter": 500}, max_iter=30,
        )
    assert res.samples.shape[1] == 32
    assert res.effective_dim_se > 0.02 * min(res.effective_dim, 30 - res.effective_dim)


def test_estimated_path_keeps_its_samples_when_decided():
    # Many parameters well determined (n >> d): gamma ~ d with small spread.
    rng = np.random.default_rng(4)
    X = rng.standard_normal((3000, 40))
    y = X @ rng.standard_normal(40) + 0.1 * rng.standard_normal(3000)
    F = DenseFeatures(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        res = fit_evidence(
            F, y, solver="cg", n_samples=16, alpha_init=1.0, lambda_init=1.0, exact_traces=False,
            rng=check_random_state(0), solver_options={"tol": 1e-8, "max_iter": 500},
        )
    assert res.samples.shape[1] == 16


def test_cg_reports_and_meets_the_true_residual_on_an_ill_conditioned_system():
    from bayeslin.solvers import solve_cg

    rng = np.random.default_rng(0)
    n, d = 200, 50
    U, _ = np.linalg.qr(rng.standard_normal((n, d)))
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    X = U @ np.diag(np.logspace(0, -14, d)) @ V.T * 10  # cond(X) = 1e14
    alpha, lam = 1e2, 1e-2  # cond(H) = 1e6
    system = PosteriorPrecision(DenseFeatures(X), alpha, lam)
    R = rng.standard_normal((d, 3))
    tol = 1e-10
    res = solve_cg(system, R, tol=tol, max_iter=5000)
    H = alpha * X.T @ X + lam * np.eye(d)
    true = np.linalg.norm(R - H @ res.solution, axis=0) / np.linalg.norm(R, axis=0)
    # What is reported is the true residual, up to the rounding of one
    # product with H: d eps ||H|| ||x|| / ||r|| per column.
    rounding = d * np.finfo(float).eps * np.linalg.norm(H, 2) * np.linalg.norm(res.solution, axis=0) / np.linalg.norm(R, axis=0)
    assert np.all(np.abs(res.residual_norms - true) <= rounding)
    assert res.converged and np.all(true <= tol + rounding)


def test_every_solve_of_the_fit_is_checked():
    from bayeslin.evidence import warn_if_unconverged
    from bayeslin.solvers import SolverResult

    X, y = _wide(30, 20)
    res = fit_evidence(DenseFeatures(X), y, solver="cg", alpha_init=1.0, lambda_init=1.0, rng=check_random_state(0),
                       solver_options={"tol": 1e-8, "max_iter": 500})
    short = SolverResult(None, 7, np.array([3e-3]), False)
    res.solver_results.insert(0, short)  # an early solve that stopped short, the last one fine
    with pytest.warns(ConvergenceWarning, match="relative residual 3.00e-03"):
        warn_if_unconverged(res, solver="cg", solver_tol=1e-8, max_iter=300, tol=1e-3)


@pytest.mark.parametrize("solver", ["cg", "sgd"])
@pytest.mark.parametrize("shape", [(60, 150), (200, 20)])
def test_predictive_std_is_exact_where_the_spectrum_is_cheap(solver, shape):
    X, y = _wide(*shape, seed=1)
    Xq = np.random.default_rng(5).standard_normal((40, shape[1]))
    ref = BayesianLinearRegressor(solver="exact").fit(X, y)
    est = BayesianLinearRegressor(solver=solver, random_state=0).fit(X, y)
    # Dense reference of the weight-uncertainty part at the estimator's own
    # hyperparameters: diag(Xc H^-1 Xc^T), Xc centred by the training mean.
    Xc, Xqc = X - X.mean(0), Xq - X.mean(0)
    H = est.alpha_ * Xc.T @ Xc + est.lambda_ * np.eye(shape[1])
    weight_var = np.einsum("ij,ji->i", Xqc, np.linalg.solve(H, Xqc.T))
    _, std = est.predict(Xq, return_std=True)
    assert_allclose(std**2 - 1 / est.alpha_, weight_var, rtol=1e-10)
    # And against the exact solver: the iterative loop also stops on the
    # hyperparameters' relative change (tol), so it may stop a step apart.
    _, ref_std = ref.predict(Xq, return_std=True)
    assert_allclose(std, ref_std, rtol=est.tol)


def test_randomized_nystrom_is_exact_on_a_low_rank_gram():
    from bayeslin.solvers.nystrom import randomized_nystrom

    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 40))  # G = X^T X has rank 12
    G = X.T @ X
    approx = randomized_nystrom(lambda V: G @ V, 40, 20, np, np.float64)
    G_hat = approx.U @ np.diag(approx.s) @ approx.U.T
    # Exact up to the stabilising shift nu ~ sqrt(d) eps ||G Omega||.
    assert_allclose(G_hat, G, atol=1e-10 * np.linalg.norm(G, 2))
    assert_allclose(np.sort(approx.s)[::-1][:12], np.linalg.eigvalsh(G)[::-1][:12], rtol=1e-10)


def test_nystrom_preconditioned_cg_solves_with_fewer_iterations():
    from bayeslin.solvers import solve_cg

    rng = np.random.default_rng(1)
    n, d = 300, 120
    # A decaying spectrum (collinear features): what the preconditioner is for.
    X = rng.standard_normal((n, d)) * np.logspace(0, -3, d)[None, :] @ np.linalg.qr(rng.standard_normal((d, d)))[0]
    system = PosteriorPrecision(DenseFeatures(X), 50.0, 1e-3)
    R = rng.standard_normal((d, 4))
    H = 50.0 * X.T @ X + 1e-3 * np.eye(d)
    tol = 1e-8
    plain = solve_cg(system, R, tol=tol, max_iter=5000)
    nys = solve_cg(system, R, tol=tol, max_iter=5000, preconditioner="nystrom", preconditioner_rank=60)
    assert nys.converged and plain.converged
    # Same answer: the forward error of a relative residual tol is at most cond(H) tol.
    ref = np.linalg.solve(H, R)
    err = np.linalg.norm(nys.solution - ref, axis=0) / np.linalg.norm(ref, axis=0)
    assert np.all(err <= tol * np.linalg.cond(H))
    assert nys.n_iter < plain.n_iter / 2
    # Formed once, kept in the shared statistics for the next (alpha, lambda).
    approx = system.statistics.nystrom
    again = solve_cg(system.with_hyperparameters(20.0, 1e-2), R, tol=tol, preconditioner="nystrom", preconditioner_rank=60)
    assert again.converged and system.statistics.nystrom is approx


# ---------------------------------------------------------------------------
# Standard error of the predictive std (predict(..., return_std_se=True))
# ---------------------------------------------------------------------------

N_SE = 5.0  # as conftest.N_SE: standard errors a Monte Carlo quantity may deviate


def test_predictive_std_se_is_zero_where_the_variance_is_exact():
    X, y = _wide(60, 150)
    Xq = np.random.default_rng(5).standard_normal((20, 150))
    for solver in ["exact", "cg", "sgd"]:
        est = BayesianLinearRegressor(solver=solver, random_state=0).fit(X, y)
        mean, std, se = est.predict(Xq, return_std=True, return_std_se=True)
        assert_allclose((mean, std), est.predict(Xq, return_std=True), rtol=1e-15)
        assert np.all(se == 0.0)
    with pytest.raises(ValueError, match="needs return_std=True"):
        est.predict(Xq, return_std_se=True)


def test_predictive_std_se_of_the_sampled_path_matches_the_known_spread():
    # min(n, d) = 300 > 64 (n_samples + 1): the variances are sampled.
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 300))
    y = X @ (0.05 * rng.standard_normal(300)) + rng.standard_normal(300)
    Xq = rng.standard_normal((30, 300))
    # A few evidence steps suffice: the error is checked at the fitted hyperparameters.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = BayesianLinearRegressor(solver="cg", n_samples=3, max_iter=3, random_state=0).fit(X, y)
    k = est.posterior_samples_.shape[0]
    assert est.effective_dim_se_ > 0
    _, std, se = est.predict(Xq, return_std=True, return_std_se=True)
    # Dense reference at the estimator's own hyperparameters.
    Xc, Xqc = X - X.mean(0), Xq - X.mean(0)
    H = est.alpha_ * Xc.T @ Xc + est.lambda_ * np.eye(300)
    v = np.einsum("ij,ji->i", Xqc, np.linalg.solve(H, Xqc.T))
    s = np.sqrt(v + 1 / est.alpha_)
    # k Gaussian draws: the variance estimate is v chi2_k / k, sd v sqrt(2 / k);
    # the std moves by that over 2 s (delta method).
    known = np.sqrt(2 / k) * v / (2 * s)
    assert np.all(np.abs(std - s) <= N_SE * known)
    # The reported error is that sd taken at the estimate: v_hat / v has sd
    # sqrt(2 / k) per point, and the mean over the points no more.
    assert abs(np.mean(se / known) - 1) <= N_SE * np.sqrt(2 / k)


def test_laplace_predictive_std_se_matches_the_spread_of_repeated_fits():
    from sklearn.frozen import FrozenEstimator
    from sklearn.neural_network import MLPRegressor

    from bayeslin import LinearisedLaplaceRegressor

    rng = np.random.RandomState(0)
    X = rng.uniform(-2, 2, size=(50, 2))
    y = np.sin(X[:, 0]) + 0.2 * rng.randn(50)
    Xq = np.vstack([X[:10], X[:10] + 2 * rng.randn(10, 2)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net = MLPRegressor(hidden_layer_sizes=(200,), max_iter=200, random_state=0).fit(X, y)
    # 801 parameters > 64 (n_samples + 1): sampled variances; fixed
    # hyperparameters, so every fit has the same posterior and k = n_samples.
    params = dict(prior_precision=1.0, noise_precision=25.0)
    exact = LinearisedLaplaceRegressor(FrozenEstimator(net), solver="exact", **params).fit(X, y)
    _, s = exact.predict(Xq, return_std=True, include_noise=False)
    _, _, se0 = exact.predict(Xq, return_std=True, include_noise=False, return_std_se=True)
    assert np.all(se0 == 0.0)
    reps, k = 40, 8
    stds, ses = [], []
    for seed in range(reps):
        reg = LinearisedLaplaceRegressor(FrozenEstimator(net), solver="cg", n_samples=k, random_state=seed, **params)
        _, std, se = reg.fit(X, y).predict(Xq, return_std=True, include_noise=False, return_std_se=True)
        stds.append(std)
        ses.append(se)
    stds, ses = np.array(stds), np.array(ses)
    assert reg.effective_dim_se_ > 0 and reg.posterior_samples_.shape[0] == k
    # Against the known spread: sqrt(v chi2_k / k) has sd about s / sqrt(2 k);
    # the mean of `reps` plug-in errors has relative sd sqrt(2 / k / reps).
    known = s / np.sqrt(2 * k)
    assert np.all(np.abs(ses.mean(0) / known - 1) <= N_SE * np.sqrt(2 / k / reps) + 1 / (4 * k))
    # Against the spread of the fits: the sample sd of `reps` values has
    # relative sd 1 / sqrt(2 (reps - 1)); the mean over the points no more.
    ratio = np.std(stds, axis=0, ddof=1) / ses.mean(0)
    assert abs(np.mean(ratio) - 1) <= N_SE / np.sqrt(2 * (reps - 1))
