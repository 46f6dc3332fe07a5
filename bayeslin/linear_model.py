"""BayesianLinearRegressor: BayesianRidge's model, solved at scale."""

import time
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state, check_scalar
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ._backend import get_namespace, standard_normal
from .evidence import SampleDraws, fit_evidence
from .operators import CenteredFeatures, as_features
from .solvers import SOLVERS, exact_factorization

__all__ = ["BayesianLinearRegressor"]

# Beyond this many rows of the smaller side the exact solver's cubic
# factorisation stops paying for itself on a CPU (see asv_bench/).
_EXACT_MAX_SIDE = 8192

_DEFAULT_SOLVER_TOL = {"exact": 0.0, "cg": 1e-6, "sgd": 1e-4}
_DEFAULT_SOLVER_MAX_ITER = {"exact": 0, "cg": 1000, "sgd": 10000}


class BayesianLinearRegressor(RegressorMixin, BaseEstimator):
    """Bayesian ridge regression that scales: exact, conjugate-gradient or SGD solvers.

    The model is scikit-learn's :class:`~sklearn.linear_model.BayesianRidge`:
    ``y = X w + b + eps`` with ``w ~ N(0, 1/lambda I)`` and
    ``eps ~ N(0, 1/(alpha * sample_weight))``, with Gamma hyperpriors on
    ``alpha`` and ``lambda``, which are set by maximising the evidence with
    MacKay's fixed-point updates. The parameters share BayesianRidge's names,
    defaults and meaning; with ``solver='exact'`` the fitted model agrees
    with BayesianRidge's to rounding.

    The posterior mean and ``n_samples`` posterior samples are computed
    together as the solutions of one block of linear systems with the
    posterior precision (sample-then-optimise), so the iterative solvers never
    form a ``d x d`` matrix; the effective number of parameters the evidence
    updates need is estimated from the samples.

    Parameters
    ----------
    max_iter : int, default=300
        Maximum number of evidence (EM) iterations.
    tol : float, default=1e-3
        Stop when the L1 change of ``coef_`` between iterations is below
        ``tol`` (as BayesianRidge); the iterative solvers also need the
        relative change of ``alpha_`` and ``lambda_`` below ``tol``, since a
        warm-started solve may leave ``coef_`` unchanged while they move.
    alpha_1, alpha_2 : float, default=1e-6
        Shape and inverse scale of the Gamma prior on ``alpha``.
    lambda_1, lambda_2 : float, default=1e-6
        Shape and inverse scale of the Gamma prior on ``lambda``.
    alpha_init : float, default=None
        Initial noise precision (default ``1 / Var(y)``).
    lambda_init : float, default=None
        Initial prior precision (default 1).
    compute_score : bool, default=False
        Record the log evidence at every iteration in ``scores_`` (exact for
        ``solver='exact'``, a stochastic Lanczos estimate otherwise).
    fit_intercept : bool, default=True
        Fit an intercept (centring is implicit for sparse ``X``).
    copy_X : bool, default=True
        Kept for compatibility with BayesianRidge: centring is implicit, so
        ``X`` is never copied for it nor overwritten, whatever the value.
    verbose : bool, default=False
        Print the evidence iterations.
    solver : {'auto', 'exact', 'cg', 'sgd'}, default='auto'
        ``'exact'``: eigendecomposition of the smaller of ``X^T X`` and
        ``X X^T``. ``'cg'``: batched conjugate gradients. ``'sgd'``:
        minibatch SGD with Nesterov momentum and iterate averaging on the
        sample-then-optimise objective. ``'auto'`` takes ``'exact'`` while
        the smaller of ``n`` and ``d`` is at most 8192, else ``'cg'``.
    n_samples : int, default=16
        Posterior samples solved for during the fit by the iterative solvers;
        they estimate the effective number of parameters and give the
        predictive standard deviation. Unused by ``'exact'``. The estimate
        is exact once ``n_samples`` exceeds the number of features; otherwise
        ``alpha_`` and ``lambda_`` carry its Monte Carlo error, which a flat
        evidence (typically ``n < d``, where noise and prior variance are
        hard to tell apart) magnifies: raise ``n_samples`` there, or use
        ``'exact'``.
    random_state : int, RandomState instance or None, default=None
        Seeds the posterior samples and the SGD minibatches.
    warm_start : bool, default=False
        Start from the previous fit's hyperparameters and solutions.
    solver_tol : float, default=None
        Relative residual at which an iterative solve stops (``'cg'``: 1e-6,
        ``'sgd'``: 1e-4).
    solver_max_iter : int, default=None
        Iteration cap of one iterative solve (``'cg'``: 1000 iterations,
        ``'sgd'``: 10000 minibatch steps).
    batch_size : int, default=None
        Minibatch size of ``'sgd'`` (chosen from the data when None).

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
        Posterior mean of the weights.
    intercept_ : float
        Intercept (0 when ``fit_intercept=False``).
    alpha_ : float
        Estimated noise precision.
    lambda_ : float
        Estimated weight (prior) precision.
    effective_dim_ : float
        Effective number of parameters ``gamma`` at the optimum.
    n_iter_ : int
        Evidence iterations performed.
    scores_ : ndarray of shape (`n_iter_` + 1,)
        Log evidence per iteration, if ``compute_score``.
    solver_ : str
        The solver used (what ``'auto'`` chose).
    X_offset_ : ndarray of shape (n_features,)
        Weighted mean of the training features subtracted before fitting.
    posterior_samples_ : ndarray of shape (n_samples, n_features) or None
        Zero-mean posterior draws from the fit (iterative solvers).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)

    See Also
    --------
    sklearn.linear_model.BayesianRidge : The dense reference implementation.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from bayeslin import BayesianLinearRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> reg = BayesianLinearRegressor().fit(X, y)
    >>> mean, std = reg.predict(X[:2], return_std=True)
    """

    _parameter_constraints: dict = {
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "alpha_1": [Interval(Real, 0, None, closed="left")],
        "alpha_2": [Interval(Real, 0, None, closed="left")],
        "lambda_1": [Interval(Real, 0, None, closed="left")],
        "lambda_2": [Interval(Real, 0, None, closed="left")],
        "alpha_init": [None, Interval(Real, 0, None, closed="neither")],
        "lambda_init": [None, Interval(Real, 0, None, closed="neither")],
        "compute_score": ["boolean"],
        "fit_intercept": ["boolean"],
        "copy_X": ["boolean"],
        "verbose": ["verbose"],
        "solver": [StrOptions({"auto", "exact", "cg", "sgd"})],
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "solver_tol": [None, Interval(Real, 0, None, closed="neither")],
        "solver_max_iter": [None, Interval(Integral, 1, None, closed="left")],
        "batch_size": [None, Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        *,
        max_iter=300,
        tol=1.0e-3,
        alpha_1=1.0e-6,
        alpha_2=1.0e-6,
        lambda_1=1.0e-6,
        lambda_2=1.0e-6,
        alpha_init=None,
        lambda_init=None,
        compute_score=False,
        fit_intercept=True,
        copy_X=True,
        verbose=False,
        solver="auto",
        n_samples=16,
        random_state=None,
        warm_start=False,
        solver_tol=None,
        solver_max_iter=None,
        batch_size=None,
    ):
        self.max_iter = max_iter
        self.tol = tol
        self.alpha_1 = alpha_1
        self.alpha_2 = alpha_2
        self.lambda_1 = lambda_1
        self.lambda_2 = lambda_2
        self.alpha_init = alpha_init
        self.lambda_init = lambda_init
        self.compute_score = compute_score
        self.fit_intercept = fit_intercept
        self.copy_X = copy_X
        self.verbose = verbose
        self.solver = solver
        self.n_samples = n_samples
        self.random_state = random_state
        self.warm_start = warm_start
        self.solver_tol = solver_tol
        self.solver_max_iter = solver_max_iter
        self.batch_size = batch_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _choose_solver(self, n, d):
        if self.solver != "auto":
            return self.solver
        return "exact" if min(n, d) <= _EXACT_MAX_SIDE else "cg"

    def _solver_options(self, solver):
        if solver == "exact":
            return {}
        options = {
            "tol": _DEFAULT_SOLVER_TOL[solver] if self.solver_tol is None else self.solver_tol,
            "max_iter": _DEFAULT_SOLVER_MAX_ITER[solver] if self.solver_max_iter is None else self.solver_max_iter,
        }
        if solver == "sgd":
            options["batch_size"] = self.batch_size
        return options

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model: posterior mean, samples and evidence-optimal hyperparameters.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data. Sparse input is never densified.
        y : array-like of shape (n_samples,)
            Target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Individual weights for each sample (precision multipliers of the
            noise, as in BayesianRidge).

        Returns
        -------
        self : object
            Fitted estimator.
        """
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc", "coo"],
            dtype=np.float64,
            y_numeric=True,
        )
        n, d = X.shape
        xp = get_namespace(X, y)
        start = time.perf_counter()
        solver = self._choose_solver(n, d)

        weights = None
        if sample_weight is not None:
            weights = _check_sample_weight(sample_weight, X, dtype=X.dtype, ensure_non_negative=True)
            if not np.any(weights > 0):
                raise ValueError("sample_weight must have at least one positive entry.")
        n_eff = float(n if weights is None else np.sum(weights))

        # Centre with the weighted means implicitly (Phi = X - 1 m^T), so X is
        # neither copied nor overwritten and sparse X stays sparse.
        if self.fit_intercept:
            X_offset = _column_means(X, weights)
            y_offset = float(np.average(y, weights=weights))
        else:
            X_offset = np.zeros(d, dtype=X.dtype)
            y_offset = 0.0
        features = as_features(X)
        if self.fit_intercept:
            features = CenteredFeatures(features, X_offset)
        yc = y - y_offset
        sqrt_weights = None if weights is None else np.sqrt(weights)

        eps = np.finfo(np.float64).eps
        # BayesianRidge's start: the (weighted) variance of y, with or without an intercept.
        y_var = float(np.average((y - np.average(y, weights=weights)) ** 2, weights=weights))
        alpha_init = 1.0 / (y_var + eps) if self.alpha_init is None else self.alpha_init
        lambda_init = 1.0 if self.lambda_init is None else self.lambda_init
        warm = None
        rng = check_random_state(self.random_state)
        if self.warm_start and hasattr(self, "coef_") and self.coef_.shape == (d,) and self.solver_ == solver:
            alpha_init, lambda_init = self.alpha_, self.lambda_
            samples = self.posterior_samples_
            if samples is not None and samples.shape[0] != self.n_samples:
                samples = None
            warm = (xp.asarray(self.coef_, copy=True), None if samples is None else samples.T.copy())

        logdet = None
        if self.compute_score and solver != "exact":
            from ._logdet import logdet_slq

            def logdet(system):
                return logdet_slq(system, random_state=rng)

        callback = _VerboseCallback(solver) if self.verbose else None
        result = fit_evidence(
            features,
            yc,
            sqrt_weights=sqrt_weights,
            n_eff=n_eff,
            solver=solver,
            n_samples=self.n_samples,
            alpha_init=alpha_init,
            lambda_init=lambda_init,
            priors=(self.alpha_1, self.alpha_2, self.lambda_1, self.lambda_2),
            max_iter=self.max_iter,
            tol=self.tol,
            compute_score=self.compute_score,
            rng=rng,
            solver_options=self._solver_options(solver),
            warm=warm,
            logdet=logdet,
            callback=callback,
        )

        last = result.solver_results[-1]
        if not last.converged:
            warnings.warn(
                f"solver={solver!r} stopped after {last.n_iter} iterations with relative residual "
                f"{float(np.max(last.residual_norms)):.2e} above solver_tol="
                f"{self._solver_options(solver)['tol']:g}; increase solver_max_iter, loosen "
                f"solver_tol, or use solver='exact' if the problem is small enough.",
                ConvergenceWarning,
            )
        if not result.converged and self.max_iter > 1:
            warnings.warn(
                f"The evidence updates of alpha_ and lambda_ did not converge within "
                f"max_iter={self.max_iter} iterations (tol={self.tol:g}); increase max_iter.",
                ConvergenceWarning,
            )

        self.solver_ = solver
        self.coef_ = result.coef
        self.alpha_ = result.alpha
        self.lambda_ = result.lambda_
        self.effective_dim_ = result.effective_dim
        self.n_iter_ = result.n_iter
        if self.compute_score:
            self.scores_ = np.asarray(result.scores)
        self.X_offset_ = X_offset
        self.intercept_ = y_offset - float(X_offset @ result.coef) if self.fit_intercept else 0.0
        self.posterior_samples_ = None if result.samples is None else result.samples.T
        self._posterior_system = result.system
        self.fit_time_ = time.perf_counter() - start
        return self

    def _test_features(self, X):
        """Validated test data as a centred feature operator."""
        X = validate_data(self, X, accept_sparse=["csr", "csc", "coo"], dtype=np.float64, reset=False)
        return X, CenteredFeatures(as_features(X), self.X_offset_)

    def predict(self, X, return_std=False):
        """Predict with the posterior mean, optionally with the predictive standard deviation.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Query points.
        return_std : bool, default=False
            Also return the standard deviation of the predictive distribution,
            which includes the noise ``1 / alpha_`` (as BayesianRidge's).
            Exact for ``solver='exact'``; for the iterative solvers the
            weight-uncertainty part is the Monte Carlo estimate from the
            ``n_samples`` posterior samples of the fit.

        Returns
        -------
        y_mean : ndarray of shape (n_samples,)
        y_std : ndarray of shape (n_samples,)
            Only if ``return_std``.
        """
        check_is_fitted(self)
        X, features = self._test_features(X)
        y_mean = np.asarray(X @ self.coef_).ravel() + self.intercept_
        if not return_std:
            return y_mean
        if self.solver_ == "exact":
            fact = exact_factorization(self._posterior_system)
            var = fact.inverse_quadratic_forms(self.alpha_, self.lambda_, features)
        else:
            P = features.matmat(self.posterior_samples_.T)
            var = np.mean(P * P, axis=1)
        return y_mean, np.sqrt(np.maximum(var, 0.0) + 1.0 / self.alpha_)

    def sample_posterior(self, n_samples=1, random_state=None):
        """Draw weight vectors from the posterior.

        Parameters
        ----------
        n_samples : int, default=1
            Number of draws.
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        coef_samples : ndarray of shape (n_samples, n_features)
            Draws of the weights (the intercept is not included). Exact for
            ``solver='exact'``; the iterative solvers solve a fresh block of
            sample-then-optimise problems with the training data.
        """
        check_is_fitted(self)
        check_scalar(n_samples, "n_samples", Integral, min_val=1)
        return self.coef_[None, :] + self._zero_mean_draws(n_samples, check_random_state(random_state)).T

    def _zero_mean_draws(self, n_samples, rng):
        """Draws ``z ~ N(0, H^-1)``, shape (n_features, n_samples)."""
        system = self._posterior_system
        xp = system.xp
        if self.solver_ == "exact":
            fact = exact_factorization(system)
            noise = standard_normal(rng, (fact.noise_rows, n_samples), xp, system.dtype)
            z = fact.sample(system.alpha, system.prior, noise)
        else:
            draws = SampleDraws(system, n_samples, rng)
            rhs = draws.rhs(system.alpha, system.prior)
            options = self._solver_options(self.solver_)
            if self.solver_ == "sgd":
                options["random_state"] = rng
            res = SOLVERS[self.solver_](system, rhs, system.prior_solve(rhs), **options)
            if not res.converged:
                warnings.warn(
                    f"solver={self.solver_!r} stopped short while drawing posterior samples "
                    f"(relative residual {float(np.max(res.residual_norms)):.2e}); increase solver_max_iter.",
                    ConvergenceWarning,
                )
            z = res.solution
        return z

    def sample_y(self, X, n_samples=1, random_state=None):
        """Draw from the predictive distribution at ``X`` (noise included).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_queries, n_features)
        n_samples : int, default=1
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        y_samples : ndarray of shape (n_queries, n_samples)
            As :meth:`sklearn.gaussian_process.GaussianProcessRegressor.sample_y`
            for a single target.
        """
        check_is_fitted(self)
        check_scalar(n_samples, "n_samples", Integral, min_val=1)
        rng = check_random_state(random_state)
        X, features = self._test_features(X)
        # Each draw keeps the fit's centring, as predict(return_std=True) does.
        f = (np.asarray(X @ self.coef_).ravel() + self.intercept_)[:, None] + features.matmat(
            self._zero_mean_draws(n_samples, rng)
        )
        noise = rng.standard_normal(size=f.shape) / np.sqrt(self.alpha_)
        return f + noise


def _column_means(X, weights):
    if sp.issparse(X):
        w = np.ones(X.shape[0]) if weights is None else weights
        return np.asarray(X.T @ w).ravel() / np.sum(w)
    return np.average(X, axis=0, weights=weights)


class _VerboseCallback:
    """Progress of a ``verbose=True`` fit: a tqdm bar if tqdm is installed, else plain lines.

    See :class:`bayeslin._progress.EvidenceProgress`; imported here, not at
    module level, so that this module does not depend on the optional one.
    """

    def __init__(self, solver):
        from ._progress import EvidenceProgress

        self.progress = EvidenceProgress(solver)

    def __call__(self, it, alpha, lam, gamma, res):
        self.progress(it, alpha, lam, gamma, res)
