"""BayesianLinearRegressor against dense references.

- solver='exact' against sklearn.linear_model.BayesianRidge (dense, sparse,
  weighted, without intercept, n > d and n < d);
- solver='cg' and 'sgd' against the exact posterior and the exact evidence
  fixed point, with tolerances derived from the number of posterior samples;
- posterior sampling (sample_posterior, sample_y) and the Monte Carlo
  predictive standard deviation, against the dense posterior;
- Pipelines, GridSearchCV, input validation, convergence warnings,
  warm starts, pickling.
"""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.linear_model import BayesianRidge
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import SplineTransformer, StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from bayeslin import BayesianLinearRegressor

from conftest import N_SE, DenseReference, get_problem, get_sparse_problem, make_tall

SOLVERS = ["exact", "cg", "sgd"]
ITERATIVE = ["cg", "sgd"]
RTOL = 1e-6  # exact solver vs BayesianRidge: both are exact up to rounding


def _query_points(X, seed=3, m=25):
    """Training rows and rows off the training set (perturbed)."""
    rng = np.random.RandomState(seed)
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    rows = X[rng.choice(X.shape[0], size=m, replace=False)]
    return np.vstack([rows, rows + rng.randn(*rows.shape) * X.std(axis=0)])


def _rel_norm(a, b):
    return np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b)


def _assert_matches_bayesian_ridge(est, ref, X_query, dense_ref=None):
    assert est.n_iter_ == ref.n_iter_
    assert_allclose(est.alpha_, ref.alpha_, rtol=RTOL)
    assert_allclose(est.lambda_, ref.lambda_, rtol=RTOL)
    assert_allclose(est.coef_, ref.coef_, rtol=RTOL, atol=RTOL * np.max(np.abs(ref.coef_)))
    assert_allclose(est.intercept_, ref.intercept_, rtol=RTOL, atol=RTOL * np.max(np.abs(ref.coef_)))
    mean, std = est.predict(X_query, return_std=True)
    ref_mean, ref_std = ref.predict(X_query, return_std=True)
    assert_allclose(mean, ref_mean, rtol=RTOL, atol=RTOL * np.max(np.abs(ref_mean)))
    assert_allclose(std, ref_std, rtol=RTOL)
    if ref.compute_score:
        assert est.scores_.shape == ref.scores_.shape == (ref.n_iter_ + 1,)
        assert_allclose(est.scores_[:-1], ref.scores_[:-1], rtol=RTOL)
        # BayesianRidge computes its LAST score with the coefficients of the
        # previous iteration (a stale local variable in its fit); the last
        # score is checked against the dense log evidence instead.
        assert_allclose(est.scores_[-1], dense_ref.log_evidence(est.alpha_, est.lambda_), rtol=RTOL)


# ---------------------------------------------------------------------------
# solver='exact' against BayesianRidge
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_exact_matches_bayesian_ridge(problem, fit_intercept, dense):
    params = dict(compute_score=True, fit_intercept=fit_intercept)
    ref = BayesianRidge(**params).fit(problem.X, problem.y, sample_weight=problem.sample_weight)
    est = BayesianLinearRegressor(solver="exact", **params).fit(problem.X, problem.y, sample_weight=problem.sample_weight)
    assert est.solver_ == "exact"
    D = dense(problem.X, problem.y, problem.sample_weight, fit_intercept)
    _assert_matches_bayesian_ridge(est, ref, _query_points(problem.X), D)
    # The effective number of parameters is the exact one at the fitted hyperparameters.
    assert_allclose(est.effective_dim_, D.gamma(est.alpha_, est.lambda_), rtol=1e-9)
    assert_allclose(est.X_offset_, D.X_offset, rtol=1e-12, atol=1e-14)
    if problem.name == "wide":
        # The problem must have an interior evidence maximum (true noise
        # precision 1), not the runaway alpha -> inf of an interpolating fit.
        assert 0.3 < ref.alpha_ < 3.0
        assert 0.3 < est.alpha_ < 3.0


def test_auto_picks_exact_on_small_problems(diabetes):
    est = BayesianLinearRegressor().fit(diabetes.X, diabetes.y)
    assert est.solver_ == "exact"
    _assert_matches_bayesian_ridge(est, BayesianRidge().fit(diabetes.X, diabetes.y), _query_points(diabetes.X))


@pytest.mark.parametrize("params", [dict(alpha_1=0.5, alpha_2=2.0, lambda_1=3.0, lambda_2=0.1), dict(alpha_init=2.0, lambda_init=0.1)])
def test_exact_matches_bayesian_ridge_hyperparameter_options(tall, params):
    ref = BayesianRidge(compute_score=True, **params).fit(tall.X, tall.y)
    est = BayesianLinearRegressor(solver="exact", compute_score=True, **params).fit(tall.X, tall.y)
    priors = tuple(params.get(p, 1e-6) for p in ["alpha_1", "alpha_2", "lambda_1", "lambda_2"])
    _assert_matches_bayesian_ridge(est, ref, _query_points(tall.X), DenseReference(tall.X, tall.y, priors=priors))


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("use_weights", [False, True])
@pytest.mark.parametrize("kind", ["tall", "wide"])
def test_exact_sparse_matches_bayesian_ridge_on_dense(kind, use_weights, fit_intercept, dense):
    p = get_sparse_problem(kind, use_weights)
    X, y, sw = p.X, p.y, p.sample_weight
    assert sp.isspmatrix_csr(X)
    params = dict(compute_score=True, fit_intercept=fit_intercept)
    ref = BayesianRidge(**params).fit(X.toarray(), y, sample_weight=sw)
    assert 0.3 < ref.alpha_ < 3.0  # an interior evidence maximum (true alpha 1)
    est = BayesianLinearRegressor(solver="exact", **params).fit(X, y, sample_weight=sw)
    _assert_matches_bayesian_ridge(est, ref, _query_points(X), dense(X, y, sw, fit_intercept))
    # Sparse queries give the same predictions as dense ones.
    Xq = sp.csr_matrix(_query_points(X))
    mean, std = est.predict(Xq, return_std=True)
    ref_mean, ref_std = ref.predict(Xq.toarray(), return_std=True)
    assert_allclose(mean, ref_mean, rtol=RTOL, atol=RTOL * np.max(np.abs(ref_mean)))
    assert_allclose(std, ref_std, rtol=RTOL)


@pytest.mark.parametrize("fmt", ["csc", "coo"])
def test_other_sparse_formats(fmt):
    X, y = get_sparse_problem().X, get_sparse_problem().y
    ref = BayesianLinearRegressor(solver="exact").fit(X, y)
    est = BayesianLinearRegressor(solver="exact").fit(X.asformat(fmt), y)
    assert_allclose(est.coef_, ref.coef_, rtol=1e-10)
    assert_allclose(est.predict(X.asformat(fmt)), ref.predict(X), rtol=1e-10)


def test_exact_single_feature_matches_bayesian_ridge():
    rng = np.random.RandomState(0)
    X = rng.randn(30, 1)
    y = 2.0 * X[:, 0] + 1.0 + rng.randn(30)
    ref = BayesianRidge(compute_score=True).fit(X, y)
    est = BayesianLinearRegressor(solver="exact", compute_score=True).fit(X, y)
    _assert_matches_bayesian_ridge(est, ref, _query_points(X, m=10), DenseReference(X, y))


def test_zero_weights_equal_removed_samples(tall):
    sw = np.ones(tall.n)
    sw[::3] = 0.0
    keep = sw > 0
    est_w = BayesianLinearRegressor(solver="exact", compute_score=True).fit(tall.X, tall.y, sample_weight=sw)
    est_r = BayesianLinearRegressor(solver="exact", compute_score=True).fit(tall.X[keep], tall.y[keep])
    for attr in ["coef_", "intercept_", "alpha_", "lambda_", "effective_dim_", "scores_"]:
        assert_allclose(getattr(est_w, attr), getattr(est_r, attr), rtol=1e-8, err_msg=attr)
    assert est_w.n_iter_ == est_r.n_iter_


def test_integer_weights_equal_repeated_samples(tall):
    # Well-conditioned counterpart of sklearn's check_sample_weight_equivalence.
    sw = np.random.RandomState(0).randint(0, 4, size=tall.n)
    est_w = BayesianLinearRegressor(solver="exact").fit(tall.X, tall.y, sample_weight=sw)
    est_r = BayesianLinearRegressor(solver="exact").fit(np.repeat(tall.X, sw, axis=0), np.repeat(tall.y, sw))
    Xq = _query_points(tall.X)
    for attr in ["coef_", "intercept_", "alpha_", "lambda_", "effective_dim_"]:
        assert_allclose(getattr(est_w, attr), getattr(est_r, attr), rtol=1e-8, err_msg=attr)
    assert_allclose(est_w.predict(Xq, return_std=True), est_r.predict(Xq, return_std=True), rtol=1e-8)


def test_unit_weights_equal_no_weights(wide):
    est_1 = BayesianLinearRegressor(solver="exact").fit(wide.X, wide.y, sample_weight=np.ones(wide.n))
    est_0 = BayesianLinearRegressor(solver="exact").fit(wide.X, wide.y)
    assert_allclose(est_1.coef_, est_0.coef_, rtol=1e-10, atol=1e-12)
    assert_allclose([est_1.alpha_, est_1.lambda_], [est_0.alpha_, est_0.lambda_], rtol=1e-10)


def test_exact_dual_mean_is_accurate_at_large_alpha():
    # With few distinct rows, alpha runs away (the data are interpolated) and
    # H = alpha X^T X + lambda I is ill-conditioned (cond ~ 1e9). The data
    # still determine the posterior mean as well as any backward-stable
    # solve would: BayesianRidge, fitted on weighted and on repeated rows,
    # agrees with itself to ~1e-15 (absolute); this is the problem of sklearn's
    # check_sample_weight_equivalence (n=15, d=30, rtol 1e-7).
    rng = np.random.RandomState(42)
    X = rng.rand(15, 30)
    y = rng.randint(0, 3, size=15).astype(float)
    sw = rng.randint(0, 5, size=15)
    X_rep, y_rep = np.repeat(X, sw, axis=0), np.repeat(y, sw)
    ref_rep = BayesianRidge().fit(X_rep, y_rep)
    ref_w = BayesianRidge().fit(X, y, sample_weight=sw)
    assert_allclose(ref_rep.predict(X), ref_w.predict(X), rtol=1e-12, atol=1e-13)
    est_rep = BayesianLinearRegressor(solver="exact").fit(X_rep, y_rep)
    est_w = BayesianLinearRegressor(solver="exact").fit(X, y, sample_weight=sw)
    assert_allclose(est_rep.predict(X), ref_rep.predict(X), rtol=1e-7, atol=1e-9)
    assert_allclose(est_w.predict(X), ref_w.predict(X), rtol=1e-7, atol=1e-9)
    assert_allclose(est_rep.predict(X), est_w.predict(X), rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------------------
# solver='cg' against the exact posterior and fixed point
# ---------------------------------------------------------------------------


def _fit_recording(est, X, y, sample_weight=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        est.fit(X, y, sample_weight=sample_weight)
    return [w for w in caught if issubclass(w.category, ConvergenceWarning)]


def test_cg_mean_is_the_posterior_mean_at_its_hyperparameters(problem, dense):
    # alpha_ and lambda_ of an iterative fit differ from the exact ones by the
    # Monte Carlo error of the effective dimension, so coef_ is compared with
    # the exact posterior mean at the estimator's OWN alpha_, lambda_: that
    # isolates the solver. CG stops at a relative residual solver_tol, which
    # bounds the relative error of the solution by cond(H) * solver_tol.
    solver_tol = 1e-6
    est = BayesianLinearRegressor(solver="cg", random_state=0, solver_tol=solver_tol)
    caught = _fit_recording(est, problem.X, problem.y, problem.sample_weight)
    assert not [w for w in caught if "solver=" in str(w.message)]
    D = dense(problem.X, problem.y, problem.sample_weight)
    H = D.precision(est.alpha_, est.lambda_)
    bound = np.linalg.cond(H) * solver_tol
    assert bound <= 1e-3  # test design: the bound must mean something
    mean = D.mean(est.alpha_, est.lambda_)
    assert _rel_norm(est.coef_, mean) <= max(bound, 1e-4)
    # intercept_ = y_offset - X_offset . coef_: its error is X_offset . (coef_ - mean).
    err = max(bound, 1e-4) * np.linalg.norm(D.X_offset) * np.linalg.norm(mean)
    assert abs(est.intercept_ - D.intercept(mean)) <= err + 1e-12 * abs(D.y_offset)
    assert est.posterior_samples_.shape == (16, problem.d)


def test_cg_one_step_from_the_same_start(problem, dense):
    # max_iter=1 from a fixed (alpha_init, lambda_init): one mean solve, one
    # MacKay update with the estimated gamma, one more solve. The updated
    # lambda is (gamma_hat + 2 lambda_1) / (|m|^2 + 2 lambda_2) with m the
    # mean at the start, which CG computes to solver accuracy: check the
    # update from the estimated gamma against the exact mean at the start.
    alpha0, lam0 = 0.5 / np.var(problem.y), 1.0
    D = dense(problem.X, problem.y, problem.sample_weight)
    m0 = D.mean(alpha0, lam0)
    sse0 = float(np.sum(D.w * (D.yc - D.Xc @ m0) ** 2))
    est = BayesianLinearRegressor(solver="cg", max_iter=1, alpha_init=alpha0, lambda_init=lam0, random_state=0, solver_tol=1e-10)
    _fit_recording(est, problem.X, problem.y, problem.sample_weight)
    # Solve the MacKay updates backwards for the gamma each one implies.
    gamma_from_lambda = est.lambda_ * (m0 @ m0 + 2e-6) - 2e-6
    gamma_from_alpha = D.n_eff + 2e-6 - est.alpha_ * (sse0 + 2e-6)
    assert_allclose(gamma_from_lambda, gamma_from_alpha, rtol=1e-6)
    se = D.gamma_se(alpha0, lam0, est.n_samples)
    assert abs(gamma_from_lambda - D.gamma(alpha0, lam0)) <= N_SE * se + 1e-6 * problem.d
    # and the final mean is the exact posterior mean at the updated hyperparameters
    assert _rel_norm(est.coef_, D.mean(est.alpha_, est.lambda_)) <= 1e-6


# k <= d throughout (the sampling regime). For the wide problem, 4 or 16
# samples put a runaway alpha -> inf inside the 5-SE band (the band is
# honest but could not fail upwards), 128 does not.
_CG_SAMPLING_CASES = [
    (name, weighted_, k)
    for name, ks in [("diabetes", (4,)), ("tall", (4, 16)), ("wide", (128,))]
    for weighted_ in (False, True)
    for k in ks
]


@pytest.mark.parametrize("name,weighted_,n_samples", _CG_SAMPLING_CASES)
def test_cg_hyperparameters_within_sampling_error(name, weighted_, n_samples, dense):
    problem = get_problem(name, weighted_)
    # The only difference between 'cg' and 'exact' in the evidence loop is the
    # k-sample estimate of gamma. The dense fixed point is recomputed with
    # gamma shifted by t standard errors, t in [-5, 5] (DenseReference.
    # sampling_interval): alpha_ and lambda_ must lie in that range.
    # tol and solver_tol are tight so neither the loop's stopping rule nor
    # the solver adds an error of its own.
    est = BayesianLinearRegressor(solver="cg", n_samples=n_samples, random_state=0, tol=1e-9, max_iter=3000, solver_tol=1e-10)
    caught = _fit_recording(est, problem.X, problem.y, problem.sample_weight)
    assert not caught, [str(w.message) for w in caught]
    D = dense(problem.X, problem.y, problem.sample_weight)
    (a_lo, a_hi), (l_lo, l_hi) = D.sampling_interval(n_samples)
    slack = 1e-5
    assert a_lo * (1 - slack) <= est.alpha_ <= a_hi * (1 + slack), (a_lo, est.alpha_, a_hi)
    assert l_lo * (1 - slack) <= est.lambda_ <= l_hi * (1 + slack), (l_lo, est.lambda_, l_hi)
    # effective_dim_ is the k-sample estimate at the fitted hyperparameters.
    gamma = D.gamma(est.alpha_, est.lambda_)
    se = D.gamma_se(est.alpha_, est.lambda_, n_samples)
    assert abs(est.effective_dim_ - gamma) <= N_SE * se + 1e-6 * problem.d


def test_cg_effective_dim_exact_when_samples_span_parameters(tall, dense):
    # With more samples than parameters the right-hand sides span R^d and
    # H^-1 = Z Y^+ is known exactly (evidence.estimate_effective_dim), so the
    # fit is the exact fixed point up to solver accuracy.
    est = BayesianLinearRegressor(solver="cg", n_samples=2 * tall.d, random_state=0, tol=1e-9, solver_tol=1e-12).fit(tall.X, tall.y)
    D = dense(tall.X, tall.y)
    assert_allclose(est.effective_dim_, D.gamma(est.alpha_, est.lambda_), rtol=1e-6)
    alpha, lam = D.fixed_point()
    assert_allclose([est.alpha_, est.lambda_], [alpha, lam], rtol=1e-6)


def test_cg_sparse_input(dense):
    p = get_sparse_problem("wide", weighted=True)
    X, y, sw = p.X, p.y, p.sample_weight
    est = BayesianLinearRegressor(solver="cg", random_state=0).fit(X, y, sample_weight=sw)
    D = dense(X, y, sw)
    assert _rel_norm(est.coef_, D.mean(est.alpha_, est.lambda_)) <= np.linalg.cond(D.precision(est.alpha_, est.lambda_)) * 1e-6
    # the same draws on the dense copy give the same fit
    est_dense = BayesianLinearRegressor(solver="cg", random_state=0).fit(X.toarray(), y, sample_weight=sw)
    assert_allclose([est.alpha_, est.lambda_], [est_dense.alpha_, est_dense.lambda_], rtol=1e-6)
    assert_allclose(est.predict(X), est_dense.predict(X.toarray()), rtol=1e-6)


def test_cg_compute_score_is_the_log_evidence(diabetes, dense):
    # scores_ of an iterative solver use a stochastic Lanczos estimate of
    # log det H: Hutchinson's estimator with Rademacher probes v has
    # Var(v^T log(H) v) = 2 sum_{i != j} log(H)_ij^2 per probe (Lanczos
    # quadrature is exact here: it runs d steps). The score carries
    # -1/2 log det H; the bound below is for a single probe, so it holds
    # for any number of probes.
    est = BayesianLinearRegressor(solver="cg", compute_score=True, random_state=0).fit(diabetes.X, diabetes.y)
    assert est.scores_.shape == (est.n_iter_ + 1,)
    assert np.all(np.isfinite(est.scores_))
    D = dense(diabetes.X, diabetes.y)
    H = D.precision(est.alpha_, est.lambda_)
    s, U = np.linalg.eigh(H)
    logH = (U * np.log(s)) @ U.T
    off = logH - np.diag(np.diag(logH))
    se = 0.5 * np.sqrt(2.0 * np.sum(off**2))
    assert abs(est.scores_[-1] - D.log_evidence(est.alpha_, est.lambda_)) <= N_SE * se + 1e-6 * abs(est.scores_[-1])


# ---------------------------------------------------------------------------
# solver='sgd' against 'exact'
# ---------------------------------------------------------------------------


def _sgd_problems():
    return {
        "tall": get_problem("tall"),
        "tall-weighted": get_problem("tall", weighted=True),
        "diabetes": get_problem("diabetes"),
        # n = 3000 rows: the default batch size is a true minibatch.
        "tall-minibatch": _namespace(*make_tall(n=3000, d=20, seed=5)),
    }


def _namespace(X, y, sw=None):
    from types import SimpleNamespace

    return SimpleNamespace(X=X, y=y, sample_weight=sw, n=X.shape[0], d=X.shape[1])


@pytest.mark.parametrize("name", ["tall", "tall-weighted", "diabetes", "tall-minibatch"])
def test_sgd_matches_exact(name, dense):
    p = _sgd_problems()[name]
    exact = BayesianLinearRegressor(solver="exact").fit(p.X, p.y, sample_weight=p.sample_weight)
    D = dense(p.X, p.y, p.sample_weight)
    # n_samples is chosen so that the sampling error of the effective
    # dimension alone moves alpha_, lambda_ and gamma by at most 2.5%
    # (5 standard errors, DenseReference.sampling_interval): the other half
    # of the 5% budget is for the solver. (16 for the tall problems, 1024
    # for diabetes, whose lambda is weakly determined.)
    for k in [16, 64, 256, 1024]:
        (a_lo, a_hi), (l_lo, l_hi) = D.sampling_interval(k, n_points=3)
        spread = max(a_hi / exact.alpha_ - 1, 1 - a_lo / exact.alpha_, l_hi / exact.lambda_ - 1, 1 - l_lo / exact.lambda_)
        gamma_spread = N_SE * D.gamma_se(exact.alpha_, exact.lambda_, k) / exact.effective_dim_
        if max(spread, gamma_spread) <= 0.025:
            break
    else:  # pragma: no cover - test design
        pytest.fail("no affordable n_samples makes the sampling error small enough")
    est = BayesianLinearRegressor(solver="sgd", n_samples=k, random_state=0)
    caught = _fit_recording(est, p.X, p.y, p.sample_weight)
    assert not caught, [str(w.message) for w in caught]
    assert _rel_norm(est.coef_, exact.coef_) <= 0.01
    assert_allclose(est.alpha_, exact.alpha_, rtol=0.05)
    assert_allclose(est.lambda_, exact.lambda_, rtol=0.05)
    assert_allclose(est.effective_dim_, exact.effective_dim_, rtol=0.05)
    assert_allclose(est.intercept_, exact.intercept_, rtol=0.01, atol=0.01 * np.std(p.y))


# ---------------------------------------------------------------------------
# Posterior samples and the predictive distribution
# ---------------------------------------------------------------------------


def _fit_for_sampling(solver, p, **params):
    est = BayesianLinearRegressor(solver=solver, random_state=0, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(p.X, p.y, sample_weight=p.sample_weight)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name,weighted_", [("tall", False), ("tall", True), ("wide", False)])
def test_sample_posterior_is_the_exact_posterior(solver, name, weighted_, dense, gaussian_check):
    p = get_problem(name, weighted_)
    est = _fit_for_sampling(solver, p)
    k = 2000
    draws = est.sample_posterior(n_samples=k, random_state=0)
    assert draws.shape == (k, p.d)
    D = dense(p.X, p.y, p.sample_weight)
    gaussian_check.draws(draws, est.coef_, D.covariance(est.alpha_, est.lambda_))


@pytest.mark.parametrize("solver", SOLVERS)
def test_sample_posterior_sparse(solver, dense, gaussian_check, sparse_problem):
    p = sparse_problem
    est = _fit_for_sampling(solver, p)
    draws = est.sample_posterior(n_samples=1500, random_state=1)
    D = dense(p.X, p.y, p.sample_weight)
    gaussian_check.draws(draws, est.coef_, D.covariance(est.alpha_, est.lambda_))


@pytest.mark.parametrize("solver", SOLVERS)
def test_sample_posterior_random_state(solver, tall):
    est = _fit_for_sampling(solver, tall)
    a = est.sample_posterior(n_samples=3, random_state=7)
    b = est.sample_posterior(n_samples=3, random_state=7)
    c = est.sample_posterior(n_samples=3, random_state=8)
    assert_allclose(a, b)
    assert not np.allclose(a, c)
    assert est.sample_posterior().shape == (1, tall.d)
    # The draws do not disturb the fitted model.
    coef = est.coef_.copy()
    est.sample_posterior(n_samples=5, random_state=0)
    assert_allclose(est.coef_, coef)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", ["tall", "wide"])
def test_sample_y_is_the_predictive_distribution(solver, name, dense, gaussian_check):
    p = get_problem(name)
    est = _fit_for_sampling(solver, p)
    Xq = _query_points(p.X, m=5)
    k = 4000
    ys = est.sample_y(Xq, n_samples=k, random_state=0)
    assert ys.shape == (Xq.shape[0], k)
    D = dense(p.X, p.y)
    mean, var, _ = D.predictive(Xq, est.alpha_, est.lambda_, est.coef_, est.intercept_)
    gaussian_check.mean_var(ys, mean, var)
    if solver == "exact":
        pred_mean, pred_std = est.predict(Xq, return_std=True)
        gaussian_check.mean_var(ys, pred_mean, pred_std**2)


def test_sample_y_shape_like_gaussian_process(tall):
    est = BayesianLinearRegressor(solver="exact").fit(tall.X, tall.y)
    gpr = GaussianProcessRegressor().fit(tall.X[:20], tall.y[:20])
    Xq = tall.X[:7]
    for n in [1, 3]:
        assert est.sample_y(Xq, n_samples=n, random_state=0).shape == gpr.sample_y(Xq, n_samples=n, random_state=0).shape
    assert est.sample_y(Xq).shape == gpr.sample_y(Xq).shape == (7, 1)
    assert_allclose(est.sample_y(Xq, 4, random_state=2), est.sample_y(Xq, 4, random_state=2))


@pytest.mark.parametrize("solver", ITERATIVE)
@pytest.mark.parametrize("name", ["tall", "wide"])
def test_iterative_predict_std_is_monte_carlo_over_fit_samples(solver, name, dense):
    # Predictive variance = 1/alpha_ + (1/k) sum_j (x^T z_j)^2 over the k
    # posterior samples of the fit; (x^T z_j) ~ N(0, v) with v = x^T H^-1 x,
    # so the mean of the k squares has standard error v sqrt(2 / k).
    p = get_problem(name)
    k = 400
    est = _fit_for_sampling(solver, p, n_samples=k)
    assert est.posterior_samples_.shape == (k, p.d)
    Xq = _query_points(p.X)
    mean, std = est.predict(Xq, return_std=True)
    D = dense(p.X, p.y)
    ref_mean, _, v = D.predictive(Xq, est.alpha_, est.lambda_, est.coef_, est.intercept_)
    assert_allclose(mean, ref_mean, rtol=1e-10, atol=1e-10 * np.max(np.abs(ref_mean)))
    weight_var = std**2 - 1.0 / est.alpha_
    np.testing.assert_array_less(np.abs(weight_var - v), N_SE * v * np.sqrt(2.0 / k))


# ---------------------------------------------------------------------------
# Pipelines and model selection
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_pipeline_with_standard_scaler(solver, diabetes):
    X, y = diabetes.X, diabetes.y
    pipe = make_pipeline(StandardScaler(), BayesianLinearRegressor(solver=solver, random_state=0)).fit(X, y)
    Xt = StandardScaler().fit_transform(X)
    direct = BayesianLinearRegressor(solver=solver, random_state=0).fit(Xt, y)
    Xq = _query_points(X)
    mean, std = pipe.predict(Xq, return_std=True)
    ref_mean, ref_std = direct.predict(StandardScaler().fit(X).transform(Xq), return_std=True)
    assert_allclose(mean, ref_mean, rtol=1e-10)
    assert_allclose(std, ref_std, rtol=1e-10)
    if solver == "exact":
        br = make_pipeline(StandardScaler(), BayesianRidge()).fit(X, y)
        br_mean, br_std = br.predict(Xq, return_std=True)
        assert_allclose(mean, br_mean, rtol=RTOL)
        assert_allclose(std, br_std, rtol=RTOL)


@pytest.mark.parametrize("solver", SOLVERS)
def test_pipeline_with_spline_transformer(solver):
    rng = np.random.RandomState(0)
    x = np.sort(rng.uniform(0, 2 * np.pi, size=300))[:, None]
    y = np.sin(x[:, 0]) + 0.1 * rng.randn(300)
    make = lambda reg: make_pipeline(SplineTransformer(n_knots=8, degree=3), reg)  # noqa: E731
    pipe = make(BayesianLinearRegressor(solver=solver, random_state=0)).fit(x, y)
    xq = np.linspace(0.1, 2 * np.pi - 0.1, 50)[:, None]
    mean, std = pipe.predict(xq, return_std=True)
    ref = make(BayesianRidge()).fit(x, y)
    ref_mean, ref_std = ref.predict(xq, return_std=True)
    # The fit recovers the sine: within 5 posterior sd (weight part of the
    # predictive sd) plus the cubic spline's approximation error,
    # 5/384 h^4 max|d^4 sin| < 0.01 for knot spacing h = 2 pi / 7.
    sd_w = np.sqrt(ref_std**2 - 1.0 / ref[-1].alpha_)
    np.testing.assert_array_less(np.abs(mean - np.sin(xq[:, 0])), N_SE * sd_w + 0.01)
    # and the noise sd 0.1 through alpha_: the relative standard error of a
    # noise sd estimated from n - p residual degrees of freedom is 1 / sqrt(2 (n - p)).
    reg = pipe[-1]
    assert abs(1.0 / np.sqrt(reg.alpha_) / 0.1 - 1) <= N_SE / np.sqrt(2 * (300 - reg.effective_dim_))
    if solver == "exact":
        assert_allclose(mean, ref_mean, rtol=RTOL)
        assert_allclose(std, ref_std, rtol=RTOL)
    # Pipeline == fitting on the transformed data.
    spline = SplineTransformer(n_knots=8, degree=3).fit(x)
    direct = BayesianLinearRegressor(solver=solver, random_state=0).fit(spline.transform(x), y)
    assert_allclose(mean, direct.predict(spline.transform(xq)), rtol=1e-10)


def test_grid_search_over_alpha_1_matches_bayesian_ridge(tall):
    cv = KFold(3, shuffle=True, random_state=0)
    grid = [1e-6, 10.0, 1e3]
    search = GridSearchCV(BayesianLinearRegressor(solver="exact"), {"alpha_1": grid}, cv=cv).fit(tall.X, tall.y)
    for i, a1 in enumerate(grid):
        ref = cross_val_score(BayesianRidge(alpha_1=a1), tall.X, tall.y, cv=cv)
        assert_allclose(search.cv_results_["mean_test_score"][i], ref.mean(), rtol=RTOL)
    best = grid[int(np.argmax(search.cv_results_["mean_test_score"]))]
    assert search.best_params_ == {"alpha_1": best}
    ref = BayesianRidge(alpha_1=best).fit(tall.X, tall.y)
    assert_allclose(search.predict(tall.X[:5]), ref.predict(tall.X[:5]), rtol=RTOL)


def test_grid_search_over_solver(tall):
    cv = KFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(BayesianLinearRegressor(random_state=0), {"solver": SOLVERS}, cv=cv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(tall.X, tall.y)
    scores = search.cv_results_["mean_test_score"]
    ref = cross_val_score(BayesianRidge(), tall.X, tall.y, cv=cv).mean()
    # The three solvers fit the same model: their held-out R^2 agree with
    # BayesianRidge's (exact to rounding; the others to their accuracy).
    assert_allclose(scores[0], ref, rtol=RTOL)
    assert_allclose(scores, ref, rtol=1e-3)
    assert search.best_estimator_.solver_ == search.best_params_["solver"]


def test_clone_and_get_params_roundtrip():
    est = BayesianLinearRegressor(solver="cg", n_samples=5, solver_tol=1e-4, batch_size=7, warm_start=True)
    params = clone(est).get_params()
    assert params["solver"] == "cg" and params["n_samples"] == 5 and params["solver_tol"] == 1e-4
    assert params["batch_size"] == 7 and params["warm_start"] is True


@pytest.mark.parametrize("solver", SOLVERS)
def test_pickle_roundtrip(solver, tall):
    est = _fit_for_sampling(solver, tall)
    loaded = pickle.loads(pickle.dumps(est))
    Xq = _query_points(tall.X)
    assert_allclose(loaded.predict(Xq, return_std=True), est.predict(Xq, return_std=True), rtol=1e-12)
    assert_allclose(loaded.sample_posterior(3, random_state=0), est.sample_posterior(3, random_state=0), rtol=1e-10)


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------


@pytest.fixture
def small():
    rng = np.random.RandomState(0)
    X = rng.randn(20, 5)
    return X, X @ rng.randn(5) + rng.randn(20)


@pytest.mark.parametrize("solver", SOLVERS)
def test_rejects_nan_and_inf(solver, small):
    X, y = small
    est = BayesianLinearRegressor(solver=solver)
    for bad, msg in [(np.nan, "NaN"), (np.inf, "infinity")]:
        Xb = X.copy()
        Xb[3, 1] = bad
        with pytest.raises(ValueError, match=f"Input X contains {msg}"):
            est.fit(Xb, y)
        yb = y.copy()
        yb[2] = bad
        with pytest.raises(ValueError, match=f"Input y contains {msg}"):
            est.fit(X, yb)
    est.fit(X, y)
    Xb = X.copy()
    Xb[0, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.predict(Xb)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.sample_y(Xb)


def test_rejects_wrong_shapes(small):
    X, y = small
    est = BayesianLinearRegressor()
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        est.fit(X[:, 0], y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.fit(X, y[:-1])
    with pytest.raises(ValueError, match="y should be a 1d array"):
        est.fit(X, np.c_[y, y])
    with pytest.raises(ValueError, match="0 sample"):
        est.fit(np.empty((0, 5)), np.empty(0))
    with pytest.raises(ValueError, match="0 feature"):
        est.fit(np.empty((5, 0)), np.zeros(5))
    est.fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but BayesianLinearRegressor is expecting 5"):
        est.predict(X[:, :3])
    with pytest.raises(ValueError, match="X has 3 features, but BayesianLinearRegressor is expecting 5"):
        est.sample_y(X[:, :3])
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        est.predict(X[0])


def test_not_fitted(small):
    X, _ = small
    est = BayesianLinearRegressor()
    for method in [lambda: est.predict(X), lambda: est.predict(X, return_std=True), lambda: est.sample_posterior(2), lambda: est.sample_y(X)]:
        with pytest.raises(NotFittedError, match="not fitted yet"):
            method()


def test_rejects_bad_sample_weight(small):
    X, y = small
    est = BayesianLinearRegressor()
    sw = np.ones(len(y))
    sw[4] = -1.0
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        est.fit(X, y, sample_weight=sw)
    with pytest.raises(ValueError, match="sample_weight.shape"):
        est.fit(X, y, sample_weight=np.ones(len(y) - 1))
    with pytest.raises(ValueError, match="(?i)sample.weight.*(positive|non-zero)"):
        est.fit(X, y, sample_weight=np.zeros(len(y)))


@pytest.mark.parametrize(
    "params,match",
    [
        (dict(solver="foo"), "'solver' parameter"),
        (dict(n_samples=0), "'n_samples' parameter"),
        (dict(n_samples=2.5), "'n_samples' parameter"),
        (dict(max_iter=0), "'max_iter' parameter"),
        (dict(tol=-1.0), "'tol' parameter"),
        (dict(alpha_1=-1.0), "'alpha_1' parameter"),
        (dict(lambda_init=0.0), "'lambda_init' parameter"),
        (dict(solver_tol=0.0), "'solver_tol' parameter"),
        (dict(solver_max_iter=0), "'solver_max_iter' parameter"),
        (dict(batch_size=0), "'batch_size' parameter"),
    ],
)
def test_rejects_bad_parameters(params, match, small):
    X, y = small
    with pytest.raises(InvalidParameterError, match=match):
        BayesianLinearRegressor(**params).fit(X, y)


@pytest.mark.parametrize("bad", [-1, 1.5])
def test_sample_methods_reject_bad_n_samples(bad, small):
    X, y = small
    est = BayesianLinearRegressor().fit(X, y)
    with pytest.raises((TypeError, ValueError), match="n_samples"):
        est.sample_posterior(n_samples=bad)
    with pytest.raises((TypeError, ValueError), match="n_samples"):
        est.sample_y(X, n_samples=bad)


# ---------------------------------------------------------------------------
# Convergence warnings
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ITERATIVE)
def test_warns_when_solver_stops_short(solver, diabetes):
    est = BayesianLinearRegressor(solver=solver, solver_max_iter=1, max_iter=1, random_state=0)
    with pytest.warns(ConvergenceWarning, match=f"solver='{solver}' stopped"):
        est.fit(diabetes.X, diabetes.y)
    with pytest.warns(ConvergenceWarning, match=f"solver='{solver}' stopped"):
        est.sample_posterior(4, random_state=0)


def test_warns_when_evidence_loop_hits_max_iter(diabetes):
    ref = BayesianRidge().fit(diabetes.X, diabetes.y)
    assert ref.n_iter_ > 3
    with pytest.warns(ConvergenceWarning, match="did not converge within max_iter=3"):
        est = BayesianLinearRegressor(solver="exact", max_iter=3).fit(diabetes.X, diabetes.y)
    assert est.n_iter_ == 3
    # and still agrees with BayesianRidge stopped at the same point
    ref3 = BayesianRidge(max_iter=3).fit(diabetes.X, diabetes.y)
    assert_allclose(est.coef_, ref3.coef_, rtol=RTOL)


@pytest.mark.parametrize("solver", SOLVERS)
def test_no_warning_when_converged(solver, tall):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        BayesianLinearRegressor(solver=solver, random_state=0).fit(tall.X, tall.y)


# ---------------------------------------------------------------------------
# Warm start
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_warm_start_continues_from_previous_fit(solver, diabetes):
    X, y = diabetes.X, diabetes.y
    est = BayesianLinearRegressor(solver=solver, warm_start=True, tol=1e-8, random_state=0, n_samples=8)
    est.fit(X, y)
    first = (est.coef_.copy(), est.alpha_, est.lambda_, est.n_iter_)
    assert first[3] > 2
    est.fit(X, y)
    # The second fit starts at the previous optimum: one step to compute the
    # coefficients there, one to see they no longer change.
    assert est.n_iter_ <= 2
    assert _rel_norm(est.coef_, first[0]) <= 1e-6
    assert_allclose([est.alpha_, est.lambda_], first[1:3], rtol=1e-6)
    # Without warm_start the refit starts over.
    cold = clone(est).set_params(warm_start=False).fit(X, y)
    assert cold.n_iter_ == first[3]


def test_warm_start_with_new_data_shape(tall, wide):
    est = BayesianLinearRegressor(solver="exact", warm_start=True)
    est.fit(tall.X, tall.y)
    est.fit(wide.X, wide.y)  # different n_features: a cold start
    ref = BayesianRidge().fit(wide.X, wide.y)
    assert_allclose(est.coef_, ref.coef_, rtol=RTOL, atol=RTOL * np.max(np.abs(ref.coef_)))


# ---------------------------------------------------------------------------
# Misc
# ---------------------------------------------------------------------------


def test_verbose_prints_iterations(tall, capsys):
    BayesianLinearRegressor(solver="exact", verbose=True).fit(tall.X, tall.y)
    out = capsys.readouterr().out
    assert "alpha=" in out and "lambda=" in out


@pytest.mark.parametrize("solver", SOLVERS)
def test_fitted_attributes(solver, tall):
    est = _fit_for_sampling(solver, tall)
    assert est.coef_.shape == (tall.d,)
    assert est.n_features_in_ == tall.d
    assert est.X_offset_.shape == (tall.d,)
    assert isinstance(est.intercept_, float)
    assert est.solver_ == solver
    if solver == "exact":
        assert est.posterior_samples_ is None
    else:
        assert est.posterior_samples_.shape == (est.n_samples, tall.d)


@pytest.mark.parametrize("copy_X", [True, False])
def test_copy_X(copy_X, tall):
    X = tall.X.copy()
    est = BayesianLinearRegressor(solver="exact", copy_X=copy_X).fit(X, tall.y)
    ref = BayesianRidge().fit(tall.X, tall.y)
    assert_allclose(est.coef_, ref.coef_, rtol=RTOL)
    if copy_X:
        assert_allclose(X, tall.X, rtol=0, atol=0)
    # predictions use the stored offset, whatever happened to X
    assert_allclose(est.predict(tall.X), ref.predict(tall.X), rtol=RTOL)
