"""Probes of numerics, input and fitted state, each against a dense reference.

- features with a large offset (implicit centring must not cancel), against
  BayesianRidge, which centres explicitly;
- complex input refused, a failed refit leaving the fitted state intact,
  float32 input giving float32 outputs (as BayesianRidge), ``sigma_`` and
  ``scores_`` against numpy.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose
from sklearn.linear_model import BayesianRidge

from bayeslin import BayesianLinearRegressor

from conftest import make_tall, make_wide

OFFSETS = [1e2, 1e4, 1e6, 1e7, 1e8]


def _offset_problem(n, d, seed=0, noisy=None):
    # The probe: noise-free targets when n < d (alpha_ is then where
    # BayesianRidge's stopping rule leaves it, about 5e5, and very sensitive).
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d)
    if n > d if noisy is None else noisy:
        y = y + 0.1 * rng.standard_normal(n)
    return X, y


def _fit_quietly(est, X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.fit(X, y, **kw)


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("shape", [(8, 40), (200, 40)], ids=["n<d", "n>d"])
@pytest.mark.parametrize("weighted", [False, True])
def test_large_feature_offset_matches_bayesian_ridge(offset, shape, weighted):
    # The probe: the expanded centring gave alpha_ 4627 against
    # 500001 at +1e6 (n < d) and a LinAlgError at +1e8 (n > d).
    X, y = _offset_problem(*shape)
    w = np.random.default_rng(1).uniform(0.5, 2.0, shape[0]) if weighted else None
    ref = _fit_quietly(BayesianRidge(), X + offset, y, sample_weight=w)
    est = _fit_quietly(BayesianLinearRegressor(solver="exact"), X + offset, y, sample_weight=w)
    # The data themselves are known to about offset * eps against a spread of 1.
    rtol = max(1e-6, 100 * offset * np.finfo(float).eps)
    assert_allclose(est.alpha_, ref.alpha_, rtol=rtol)
    assert_allclose(est.lambda_, ref.lambda_, rtol=rtol)
    assert_allclose(est.coef_, ref.coef_, rtol=rtol, atol=rtol * np.abs(ref.coef_).max())
    # Test points with the same offset: the mean cancels the offset in both
    # (X @ coef + intercept), so it is compared at the scale of y.
    Xq = X[:5] + 0.3 + offset
    mean, std = est.predict(Xq, return_std=True)
    mean_ref, std_ref = ref.predict(Xq, return_std=True)
    assert_allclose(std, std_ref, rtol=rtol)
    assert_allclose(mean, mean_ref, atol=rtol * np.abs(y).max())


@pytest.mark.parametrize("offset", [1e2, 1e8])
@pytest.mark.parametrize("shape", [(30, 7), (7, 30)])
def test_centred_operator_matches_explicit_centring(offset, shape, monkeypatch):
    # Every statistic of the implicitly centred operator against numpy on the
    # explicitly centred matrix, with several row batches.
    from bayeslin.operators import CenteredFeatures, DenseFeatures
    from bayeslin.operators import features as operators

    monkeypatch.setattr(operators, "_BATCH_BYTES", 3 * 8 * shape[1])
    rng = np.random.default_rng(0)
    X = rng.standard_normal(shape) + offset
    m = X.mean(axis=0)
    C = X - m  # what BayesianRidge forms
    sw = rng.uniform(0.5, 2.0, shape[0]) ** 0.5
    F = CenteredFeatures(DenseFeatures(X), m)
    V, U = rng.standard_normal((shape[1], 3)), rng.standard_normal((shape[0], 3))
    scale = np.linalg.norm(C) ** 2
    assert_allclose(F.gram(sw), (C * sw[:, None]).T @ (C * sw[:, None]), atol=1e-12 * scale)
    assert_allclose(F.kernel(sw), (C * sw[:, None]) @ (C * sw[:, None]).T, atol=1e-12 * scale)
    assert_allclose(F.row_sq_norms(), np.sum(C**2, axis=1), atol=1e-12 * scale)
    assert_allclose(F.col_sq_norms(sw**2), sw**2 @ C**2, atol=1e-12 * scale)
    assert_allclose(F.matmat(V), C @ V, atol=1e-12 * np.linalg.norm(C) * np.linalg.norm(V))
    assert_allclose(F.rmatmat(U), C.T @ U, atol=1e-12 * np.linalg.norm(C) * np.linalg.norm(U))
    assert_allclose(F.take_rows(np.arange(3)).matmat(V), C[:3] @ V, atol=1e-12 * np.linalg.norm(C) * np.linalg.norm(V))


@pytest.mark.parametrize("solver", ["cg", "sgd"])
@pytest.mark.parametrize("offset", [1e4, 1e8])
@pytest.mark.parametrize("shape", [(8, 40), (200, 40)], ids=["n<d", "n>d"])
def test_large_feature_offset_iterative_solvers_unaffected(solver, offset, shape):
    # The iterative solvers centre each product; their Monte Carlo error is the
    # same with and without the offset (same seed), so compare the two fits.
    # Noisy targets: without noise, n < d interpolates and alpha_ is where
    # the stopping rule leaves it, sensitive to the last digit of anything.
    X, y = _offset_problem(*shape, noisy=True)
    kw = dict(solver=solver, random_state=0, n_samples=8)
    plain = _fit_quietly(BayesianLinearRegressor(**kw), X, y)
    shifted = _fit_quietly(BayesianLinearRegressor(**kw), X + offset, y)
    rtol = 1e-3 if solver == "sgd" else 1e-5
    assert_allclose(shifted.alpha_, plain.alpha_, rtol=rtol)
    assert_allclose(shifted.lambda_, plain.lambda_, rtol=rtol)
    assert_allclose(shifted.coef_, plain.coef_, rtol=rtol, atol=rtol * np.abs(plain.coef_).max())
    assert_allclose(shifted.predict(X[:5] + offset), plain.predict(X[:5]), atol=rtol * np.abs(y).max())


@pytest.mark.parametrize("make", [make_wide, make_tall], ids=["n<d", "n>d"])
def test_large_offset_sparse_exact_matches_or_refuses(make):
    # Centring a sparse matrix would densify it, so its Gram matrix is still
    # expanded around the uncentred one: a small offset matches BayesianRidge,
    # a large one is refused with the remedy rather than silently wrong.
    X, y = make()
    small = sp.csr_matrix(X + 10.0)
    ref = _fit_quietly(BayesianRidge(), X + 10.0, y)
    est = _fit_quietly(BayesianLinearRegressor(solver="exact"), small, y)
    assert_allclose(est.alpha_, ref.alpha_, rtol=1e-6)
    assert_allclose(est.coef_, ref.coef_, rtol=1e-6, atol=1e-6 * np.abs(ref.coef_).max())
    with pytest.raises(ValueError, match="too large against their spread.*solver='cg'"):
        BayesianLinearRegressor(solver="exact").fit(sp.csr_matrix(X + 1e6), y)
    # The remedy named in the message works.
    plain = _fit_quietly(BayesianLinearRegressor(solver="cg", random_state=0), sp.csr_matrix(X), y)
    shifted = _fit_quietly(BayesianLinearRegressor(solver="cg", random_state=0), sp.csr_matrix(X + 1e6), y)
    assert_allclose(shifted.alpha_, plain.alpha_, rtol=1e-4)


# --------------------------------------------------------------------------
# Complex input
# --------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["y", "X", "sample_weight"])
def test_complex_input_refused_like_bayesian_ridge(where):
    rng = np.random.default_rng(0)
    X, y, w = rng.standard_normal((20, 3)), rng.standard_normal(20), np.ones(20)
    args = {"X": X, "y": y, "sample_weight": w}
    args[where] = args[where] + 1j
    with pytest.raises(ValueError, match="Complex data not supported"):
        BayesianRidge().fit(args["X"], args["y"], sample_weight=args["sample_weight"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not a ComplexWarning and a fit without the imaginary part
        with pytest.raises(ValueError, match="Complex data not supported"):
            BayesianLinearRegressor().fit(args["X"], args["y"], sample_weight=args["sample_weight"])


def test_complex_device_array_refused():
    xp = pytest.importorskip("array_api_strict")
    X = xp.asarray(np.random.default_rng(0).standard_normal((20, 3)))
    y = xp.asarray(np.ones(20) + 1j)
    with pytest.raises(ValueError, match="Complex data not supported"):
        BayesianLinearRegressor().fit(X, y)
    with pytest.raises(ValueError, match="Complex data not supported"):
        BayesianLinearRegressor().fit(xp.asarray(np.ones((20, 3)) + 1j), xp.ones(20))


# --------------------------------------------------------------------------
# A failed refit leaves the previous fit intact
# --------------------------------------------------------------------------


def _frames(seed=0):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(seed)
    A = pd.DataFrame(rng.standard_normal((40, 6)), columns=list("abcdef"))
    B = pd.DataFrame(rng.standard_normal((40, 9)), columns=list("ghijklmno"))
    y = A.to_numpy() @ rng.standard_normal(6) + 0.1 * rng.standard_normal(40)
    return A, B, y


def _assert_state_unchanged(est, before, A, predictions):
    after = vars(est)
    assert sorted(after) == sorted(before)
    for name, value in before.items():
        assert after[name] is value, name
    assert est.n_features_in_ == 6
    assert list(est.feature_names_in_) == list("abcdef")
    assert_allclose(est.predict(A), predictions, rtol=0, atol=0)
    # The column names still guard predict: reordered columns are refused, not misread.
    with pytest.raises(ValueError, match="feature names"):
        est.predict(A[list("fedcba")])


def _linear():
    return BayesianLinearRegressor(solver="exact")


def _laplace_regressor():
    from sklearn.neural_network import MLPRegressor

    from bayeslin import LinearisedLaplaceRegressor

    net = MLPRegressor(hidden_layer_sizes=(4,), max_iter=200, random_state=0)
    return LinearisedLaplaceRegressor(net, solver="exact", random_state=0, max_iter=20)


def _laplace_classifier():
    from sklearn.neural_network import MLPClassifier

    from bayeslin import LinearisedLaplaceClassifier

    net = MLPClassifier(hidden_layer_sizes=(4,), max_iter=200, random_state=0)
    return LinearisedLaplaceClassifier(net, solver="exact", random_state=0, max_iter=20)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("make", [_linear, _laplace_regressor, _laplace_classifier])
@pytest.mark.parametrize("failure", ["nan_y", "solver"])
def test_failed_refit_leaves_fitted_state(make, failure, monkeypatch):
    A, B, y = _frames()
    est = make()
    target = y if "regressor" in make.__name__ or make is _linear else (y > np.median(y)).astype(int)
    est.fit(A, target)
    before = dict(vars(est))
    predictions = est.predict(A)
    if failure == "nan_y":
        bad = np.asarray(target, dtype=float).copy()
        bad[3] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            est.fit(B, bad)
    else:
        # Fail inside the solve, after validation reset n_features_in_ and the names.
        def fail(*args, **kwargs):
            raise MemoryError("injected")

        if make is _linear:
            monkeypatch.setattr("bayeslin.linear_model.fit_evidence", fail)
        else:
            monkeypatch.setattr("bayeslin.laplace.fit_evidence", fail)
        with pytest.raises(MemoryError):
            est.fit(B, target)
        monkeypatch.undo()
    _assert_state_unchanged(est, before, A, predictions)


# --------------------------------------------------------------------------
# scores_: the log evidence against a dense reference
# --------------------------------------------------------------------------


def _dense_log_evidence(X, y, alpha, lam, a1=1e-6, a2=1e-6, l1=1e-6, l2=1e-6):
    """``log N(y_c | 0, I / alpha + X_c X_c^T / lambda)`` plus BayesianRidge's Gamma hyperprior terms."""
    from scipy.stats import multivariate_normal

    Xc, yc = X - X.mean(axis=0), y - y.mean()
    cov = np.eye(X.shape[0]) / alpha + Xc @ Xc.T / lam
    log_lik = multivariate_normal(np.zeros(X.shape[0]), cov).logpdf(yc)
    return log_lik + l1 * np.log(lam) - l2 * lam + a1 * np.log(alpha) - a2 * alpha


def test_last_score_is_the_log_evidence_of_the_fitted_model():
    # The probe (n < d): our last score differed from BayesianRidge's
    # by a relative 7.5e-6 while every other attribute agreed to 1e-12.
    # BayesianRidge's final score takes sum(coef**2) from the coefficients of
    # the iteration before its last update (its local coef_, not the final
    # self.coef_), with the final alpha_, lambda_ and residual: ours is the
    # log evidence at the fitted hyperparameters, as the dense reference says.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 600))
    y = X @ (0.1 * rng.standard_normal(600)) + 1.5 * rng.standard_normal(300)
    est = BayesianLinearRegressor(solver="exact", compute_score=True).fit(X, y)
    ref = BayesianRidge(compute_score=True).fit(X, y)
    assert_allclose([est.alpha_, est.lambda_], [ref.alpha_, ref.lambda_], rtol=1e-10)
    assert_allclose(est.scores_[-1], _dense_log_evidence(X, y, est.alpha_, est.lambda_), rtol=1e-10)
    # Every score before the last is BayesianRidge's (same hyperparameters, same coef).
    assert est.scores_.shape == ref.scores_.shape
    assert_allclose(est.scores_[:-1], ref.scores_[:-1], rtol=1e-10)


@pytest.mark.parametrize("shape", [(60, 20), (20, 60)], ids=["n>d", "n<d"])
def test_every_score_is_the_dense_log_evidence(shape):
    # Each score is the log evidence at that iteration's hyperparameters:
    # replay the updates densely and compare all of them.
    rng = np.random.default_rng(1)
    n, d = shape
    X = rng.standard_normal((n, d)) + 3.0
    y = X @ rng.standard_normal(d) + rng.standard_normal(n)
    est = BayesianLinearRegressor(solver="exact", compute_score=True, tol=1e-8).fit(X, y)
    Xc, yc = X - X.mean(axis=0), y - y.mean()
    alpha, lam = 1.0 / (np.var(y) + np.finfo(float).eps), 1.0
    expected = []
    for _ in range(est.n_iter_):
        expected.append(_dense_log_evidence(X, y, alpha, lam))
        H = alpha * Xc.T @ Xc + lam * np.eye(d)
        coef = np.linalg.solve(H, alpha * Xc.T @ yc)
        gamma = d - lam * np.trace(np.linalg.inv(H))
        lam, alpha = (gamma + 2e-6) / (coef @ coef + 2e-6), (n - gamma + 2e-6) / (np.sum((yc - Xc @ coef) ** 2) + 2e-6)
    expected.append(_dense_log_evidence(X, y, alpha, lam))
    assert_allclose(est.scores_, expected, rtol=1e-9)


# --------------------------------------------------------------------------
# float dtype: outputs keep the input's, as BayesianRidge's
# --------------------------------------------------------------------------

# scikit-learn's own BayesianRidge dtype tests (sklearn/linear_model/tests/test_bayes.py).
_SK_X = np.array([[1, 1], [3, 4], [5, 7], [4, 1], [2, 6], [3, 10], [3, 2]])
_SK_Y = np.array([1, 2, 3, 2, 0, 4, 5]).T


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver", ["exact", "cg", "sgd"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sparse", [False, True])
def test_dtype_match(solver, dtype, sparse):
    # test_dtype_match, on every output (BayesianRidge checks coef_, sigma_ and predict).
    X = _SK_X.astype(dtype)
    Xin = sp.csr_matrix(X) if sparse else X
    assert BayesianRidge().fit(X, _SK_Y).coef_.dtype == dtype
    est = BayesianLinearRegressor(solver=solver, random_state=0).fit(Xin, _SK_Y)
    assert est.coef_.dtype == dtype
    assert est.X_offset_.dtype == dtype
    assert np.asarray(est.intercept_).dtype == dtype
    if est.posterior_samples_ is not None:
        assert est.posterior_samples_.dtype == dtype
    mean, std = est.predict(Xin, return_std=True)
    assert mean.dtype == dtype and std.dtype == dtype
    assert est.sample_posterior(3, random_state=0).dtype == dtype
    assert est.sample_y(Xin, 3, random_state=0).dtype == dtype


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver", ["exact", "cg", "sgd"])
def test_dtype_correctness(solver):
    # test_dtype_correctness asks rtol 1e-4 between the float32 and float64
    # fits; computing in float64 gives the float64 fit rounded to float32.
    est = BayesianLinearRegressor(solver=solver, random_state=0)
    coef_32 = est.fit(_SK_X.astype(np.float32), _SK_Y).coef_
    mean_32, std_32 = est.predict(_SK_X.astype(np.float32), return_std=True)
    coef_64 = est.fit(_SK_X.astype(np.float64), _SK_Y).coef_
    mean_64, std_64 = est.predict(_SK_X.astype(np.float64), return_std=True)
    assert_allclose(coef_32, coef_64, rtol=1e-4)
    eps32 = np.finfo(np.float32).eps
    assert_allclose(coef_32, coef_64, rtol=eps32)
    assert_allclose(mean_32, mean_64, rtol=4 * eps32, atol=4 * eps32 * np.abs(mean_64).max())
    assert_allclose(std_32, std_64, rtol=4 * eps32)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_float32_warm_start_continues_from_the_computed_fit():
    # A warm start resumes from the float64 iterates, not from the rounded outputs.
    X, y = _SK_X.astype(np.float32), _SK_Y
    once = BayesianLinearRegressor(solver="cg", random_state=0, tol=1e-10, max_iter=50).fit(X, y)
    ref = BayesianLinearRegressor(solver="cg", random_state=0, tol=1e-10, max_iter=50).fit(X.astype(np.float64), y)
    once.set_params(warm_start=True).fit(X, y)
    ref.set_params(warm_start=True).fit(X.astype(np.float64), y)
    assert_allclose(once.coef_, ref.coef_.astype(np.float32), rtol=0, atol=0)


# --------------------------------------------------------------------------
# sigma_: BayesianRidge's posterior covariance
# --------------------------------------------------------------------------


def _sigma_problems():
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    rng = np.random.default_rng(0)
    Xw = rng.standard_normal((50, 120)) * np.linspace(2.0, 0.1, 120)
    yw = Xw @ rng.standard_normal(120) + rng.standard_normal(50)
    return {"diabetes": (X, y), "n<d": (Xw, yw)}


@pytest.mark.parametrize("name", ["diabetes", "n<d"])
@pytest.mark.parametrize("weighted", [False, True])
def test_sigma_matches_bayesian_ridge(name, weighted):
    X, y = _sigma_problems()[name]
    w = np.random.default_rng(2).uniform(0.5, 2.0, X.shape[0]) if weighted else None
    ref = BayesianRidge().fit(X, y, sample_weight=w)
    est = BayesianLinearRegressor(solver="exact").fit(X, y, sample_weight=w)
    sigma = est.sigma_
    assert sigma.shape == ref.sigma_.shape and sigma.dtype == np.float64
    assert_allclose(sigma, ref.sigma_, rtol=1e-8, atol=1e-12 * np.abs(ref.sigma_).max())
    assert "sigma_" not in vars(est)  # formed on access, not stored (nor pickled)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver", ["cg", "sgd"])
@pytest.mark.parametrize("name", ["diabetes", "n<d"])
def test_sigma_of_iterative_fits_is_exact_at_their_hyperparameters(solver, name):
    X, y = _sigma_problems()[name]
    est = BayesianLinearRegressor(solver=solver, random_state=0).fit(X, y)
    # BayesianRidge's formula (full SVD of the centred X) at the fit's own alpha_
    # and lambda_; np.linalg.inv of H loses digits to its condition number.
    _, s, Vt = np.linalg.svd(X - X.mean(axis=0), full_matrices=True)
    eig = np.zeros(X.shape[1])
    eig[: s.shape[0]] = s**2
    dense = Vt.T @ (Vt / (est.alpha_ * eig + est.lambda_)[:, None])
    assert_allclose(est.sigma_, dense, rtol=1e-8, atol=1e-12 * np.abs(dense).max())


def test_sigma_follows_input_dtype_and_refuses_large_d(monkeypatch):
    import bayeslin.linear_model as linear_model
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        BayesianLinearRegressor().sigma_
    est = BayesianLinearRegressor().fit(_SK_X.astype(np.float32), _SK_Y)
    assert est.sigma_.dtype == np.float32  # test_dtype_match's sigma_ check
    monkeypatch.setattr(linear_model, "_SIGMA_MAX_FEATURES", 1)
    with pytest.raises(AttributeError, match=r"sample_posterior.*predict\(X, return_std=True\)"):
        est.sigma_


def test_sparse_constant_column_matches_bayesian_ridge():
    # A constant column is zero once centred: the expanded sparse Gram must
    # not keep its rounding residue, nor refuse the fit because of it.
    X, y = make_tall()
    X = np.column_stack([X, np.full(X.shape[0], 1e6)])
    ref = BayesianRidge().fit(X, y)
    est = BayesianLinearRegressor(solver="exact").fit(sp.csr_matrix(X), y)
    assert_allclose([est.alpha_, est.lambda_], [ref.alpha_, ref.lambda_], rtol=1e-8)
    # The right-hand side X_c^T y is still expanded: 1e6 * sum(y - mean) leaves ~1e-9.
    assert_allclose(est.coef_, ref.coef_, rtol=1e-8, atol=1e-8 * np.abs(ref.coef_).max())


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_dense_constant_column_fits_without_runtime_warning(solver):
    # A constant column (zero spread) must not overflow the offset-to-spread
    # test that decides whether products centre each row batch.
    X, y = make_tall()
    X = np.column_stack([X, np.full(X.shape[0], 5.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        est = BayesianLinearRegressor(solver=solver, random_state=0).fit(X, y)
        mean, std = est.predict(X, return_std=True)
    ref = BayesianRidge().fit(X, y)
    if solver == "exact":
        assert_allclose([est.alpha_, est.lambda_], [ref.alpha_, ref.lambda_], rtol=1e-8)
        assert_allclose(std, ref.predict(X, return_std=True)[1], rtol=1e-8)
    assert_allclose(mean, ref.predict(X), atol=1e-3 * np.abs(y).max())
