"""BayesianLinearRegressor: BayesianRidge's model, solved at scale."""

import time
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils import check_random_state, check_scalar
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _dask
from ._backend import (
    asarray_on,
    create,
    device,
    get_namespace,
    is_numpy_namespace,
    is_out_of_memory,
    is_sparse,
    keeps_float32,
    resolve_device,
    scalar,
    standard_normal,
    to_numpy,
)
from ._progress import EvidenceProgress
from ._validation import (
    Placement,
    as_array,
    check_device_array,
    check_device_vector,
    check_return_std_se,
    check_same_placement,
    is_host_input,
    keeps_state_on_failure,
    matrix_device,
)
from .evidence import fit_evidence, warn_if_unconverged
from .operators import CenteredFeatures, as_features, is_feature_protocol
from .solvers import logdet_slq, solver_options

__all__ = ["BayesianLinearRegressor"]

# Beyond this many rows of the smaller side the exact solver's cubic
# factorisation stops paying for itself on a CPU (see asv_bench/). On a GPU
# (an H200, asv_bench/gpu_check.py, 1,000,000 rows in float32) exact took
# 0.9 s against cg's 1.4 s at d = 4,096 and 3.5 s against 1.8 s at d = 8,192:
# cg's passes are bound by memory bandwidth, which a GPU has more of than flops.
_EXACT_MAX_SIDE = 8192
_EXACT_MAX_SIDE_DEVICE = 6144

# Largest d for which sigma_ (a dense d x d matrix) is formed on access:
# 4096 features make 128 MiB in float64.
_SIGMA_MAX_FEATURES = 4096


class _FitMean(NamedTuple):
    """The fit's posterior mean and centring offset, in the precision they were computed in."""

    coef: object
    X_offset: object


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
        ``tol`` (as BayesianRidge) and the relative change of ``alpha_`` and
        ``lambda_`` is below ``tol`` too: heavily shrunk coefficients (and a
        warm-started iterative solve) can stand still while the
        hyperparameters still move, where BayesianRidge stops short of the
        fixed point.
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
        Fit an intercept (centring is implicit: ``X`` is not copied for it).
    copy_X : bool, default=True
        Centring is implicit, so ``X`` is never overwritten. Where the fitted
        posterior keeps the training features (the iterative solvers, to draw
        new samples, and the exact solver when ``n < d``), it keeps a copy of
        ``X`` when True, so that changing ``X`` after the fit changes no
        later draw; when False it keeps ``X`` itself (no extra memory; do not
        modify it). Feature operators and Dask arrays are never copied (a
        model fitted on Dask input keeps the persisted chunks).
    verbose : bool, default=False
        Print the evidence iterations.
    solver : {'auto', 'exact', 'cg', 'sgd'}, default='auto'
        ``'exact'``: eigendecomposition of the smaller of ``X^T X`` and
        ``X X^T``. ``'cg'``: batched conjugate gradients. ``'sgd'``:
        minibatch SGD with Nesterov momentum and iterate averaging on the
        sample-then-optimise objective. ``'auto'`` takes ``'exact'`` while
        the smaller of ``n`` and ``d`` is at most 8192, else ``'cg'``; never
        ``'sgd'``, whose one winning regime measured on a CPU (many more rows
        than features, ill-conditioned ``X^T X``) is one where ``'exact'``
        is faster still.
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
    device : {None, 'cpu', 'cuda', 'cuda:N'}, default=None
        Where to compute. ``None`` computes where the data are: NumPy and
        scipy.sparse on the CPU in float64; CuPy arrays and
        cupyx.scipy.sparse matrices (or any other array-API array) on their
        device, float32 staying float32. ``'cuda'`` moves NumPy and
        scipy.sparse input to the GPU (CuPy is needed) and keeps float32 as
        float32 there. Fitted attributes and predictions always come back in
        the namespace and on the device of the input, as scikit-learn's
        array API support does; the posterior itself stays on the compute
        device between calls.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
        Posterior mean of the weights.
    intercept_ : float
        Intercept (0 when ``fit_intercept=False``); a NumPy scalar of the
        input's float dtype for NumPy input.
    alpha_ : float
        Estimated noise precision.
    lambda_ : float
        Estimated weight (prior) precision.
    effective_dim_ : float
        Effective number of parameters ``gamma`` at the optimum.
    effective_dim_se_ : float
        Monte Carlo standard error of ``effective_dim_`` (0.0 when it is
        exact: ``solver='exact'``, or ``cg``/``sgd`` where ``min(n, d)`` is
        small enough for the exact spectrum). Otherwise the iterative
        solvers add posterior samples (up to 16 times ``n_samples``) while it
        exceeds 2% of ``effective_dim_`` or of ``n - effective_dim_``, and
        warn if it still does.
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
    sigma_ : ndarray of shape (n_features, n_features)
        Posterior covariance of the weights, as BayesianRidge's. Not stored:
        it is formed on each access from an exact factorisation at the
        fitted ``alpha_`` and ``lambda_`` (every solver), and only for
        ``n_features`` up to 4096, since a dense ``d x d`` matrix is what the
        solvers avoid. Above that, accessing it raises an AttributeError
        naming the alternatives: :meth:`sample_posterior` for draws and
        ``predict(X, return_std=True)`` for predictive variances.
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
        "device": [None, str],
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
        device=None,
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
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.array_api_support = True
        return tags

    def _choose_solver(self, n, d, xp):
        if self.solver != "auto":
            return self.solver
        limit = _EXACT_MAX_SIDE if is_numpy_namespace(xp) else _EXACT_MAX_SIDE_DEVICE
        # Never 'sgd': it beats cg (4-6x at equal accuracy) only with n far
        # above d and an ill-conditioned X^T X, where d is small enough that
        # exact beats both by another 10-100x (asv_bench/bench_sgd_regime.py).
        return "exact" if min(n, d) <= limit else "cg"

    def _solver_options(self, solver, dtype=np.float64):
        return solver_options(
            solver,
            tol=self.solver_tol,
            max_iter=self.solver_max_iter,
            batch_size=self.batch_size,
            float32=str(dtype).endswith("float32"),
        )

    def _validate_X(self, X, reset):
        """Validate ``X``; return ``(X, placement)``: ``X`` where the model computes, and where ``X`` came from."""
        if is_feature_protocol(X):
            validate_data(self, X, reset=reset, skip_check_array=True)
            features = as_features(X)
            placement = Placement(features.xp, features.device)
            if not reset:
                self._check_same_placement(placement)
            return features, placement
        if self.device is not None:
            target_xp, target_device = resolve_device(self.device)
        elif not reset:
            target_xp, target_device = self._placement.xp, self._placement.device
        else:
            target_xp, target_device = None, None
        if is_host_input(X):
            on_host = target_xp is None or is_numpy_namespace(target_xp)
            X = validate_data(
                self, X, reset=reset, accept_sparse=["csr", "csc", "coo"], dtype=[np.float64, np.float32]
            )
            # Outputs keep the input's float dtype (as BayesianRidge's); the
            # host computes in float64, which the evidence loop needs.
            placement = Placement(get_namespace(X), "cpu", X.dtype)
            if X.dtype != np.float64 and (on_host or not keeps_float32(target_xp, target_device)):
                X = X.astype(np.float64)
        else:
            validate_data(self, X, reset=reset, skip_check_array=True)
            xp = get_namespace(X.data if is_sparse(X) else X)
            placement = Placement(xp, matrix_device(X), (X.data if is_sparse(X) else X).dtype)
            X = check_device_array(X, keep_float32=keeps_float32(xp, placement.device))
        if not reset:
            self._check_same_placement(placement)
        if target_xp is not None:
            X = asarray_on(X, target_xp, target_device)
        if not reset and X.dtype != self._fit_mean.coef.dtype:
            X = X.astype(self._fit_mean.coef.dtype) if is_sparse(X) else get_namespace(X).astype(X, self._fit_mean.coef.dtype)
        return X, placement

    def _check_same_placement(self, placement):
        """Predictions take input from where the fit's came from (scikit-learn's array API rule)."""
        check_same_placement(self._input_placement, placement, type(self).__name__)

    def _validate_fit_data(self, X, y, sample_weight):
        X, placement = self._validate_X(X, reset=True)
        n, d = X.shape
        if self.copy_X and not is_feature_protocol(X):
            xp = get_namespace(X.data if is_sparse(X) else X)
            if self._choose_solver(n, d, xp) != "exact" or d > n:
                # The posterior keeps these features after the fit.
                X = X.copy() if is_sparse(X) else xp.asarray(X, copy=True)
        features = as_features(X)
        xp, dev, dtype = features.xp, features.device, features.dtype
        n = features.shape[0]
        y = check_device_vector(asarray_on(as_array(y), xp, dev), xp, dtype, name="y", n=n)
        if sample_weight is not None:
            if isinstance(sample_weight, Real):
                sample_weight = np.full(n, float(sample_weight))
            w = asarray_on(as_array(sample_weight), xp, dev)
            w = check_device_vector(w, xp, dtype, name="sample_weight", n=n)
            if bool(xp.any(w < 0)):
                raise ValueError("Negative values in data passed to `sample_weight`")
            if not bool(xp.any(w > 0)):
                raise ValueError("Sample weights must contain at least one non-zero number.")
            sample_weight = w
        return features, y, sample_weight, placement

    @_fit_context(prefer_skip_nested_validation=True)
    @keeps_state_on_failure
    def fit(self, X, y, sample_weight=None):
        """Fit the model: posterior mean, samples and evidence-optimal hyperparameters.

        Parameters
        ----------
        X : {array-like, sparse matrix, feature operator} of shape (n_samples, n_features)
            Training data: NumPy, CuPy or another array-API array,
            scipy.sparse or cupyx.scipy.sparse (never densified), or a
            feature operator (see :mod:`bayeslin.operators`), e.g. features
            generated on the fly.
        y : array-like of shape (n_samples,)
            Target values (moved to the namespace and device of ``X``).
        sample_weight : array-like of shape (n_samples,), default=None
            Individual weights for each sample (precision multipliers of the
            noise, as in BayesianRidge).

        Returns
        -------
        self : object
            Fitted estimator.
        """
        # --- Dask input (bayeslin/_dask.py): checked and reduced without gathering X ---
        dask_X = _dask.as_dask_array(X)
        if dask_X is not None:
            solver = _dask.check_solver(self.solver, *dask_X.shape)
            features, y, weights = _dask.fit_inputs(solver, dask_X, y, sample_weight)
            validate_data(self, dask_X, reset=True, skip_check_array=True)
            placement = Placement(get_namespace(), "cpu")
        else:
            features, y, weights, placement = self._validate_fit_data(X, y, sample_weight)
        try:
            return self._fit(features, y, weights, placement)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise MemoryError(self._memory_advice(features.shape, features.xp, features.dtype)) from exc
            raise

    def _fit(self, features, y, weights, placement):
        n, d = features.shape
        xp, dev, dtype = features.xp, features.device, features.dtype
        start = time.perf_counter()
        solver = self._choose_solver(n, d, xp)
        n_eff = float(n) if weights is None else scalar(xp.sum(weights))

        # Centre with the weighted means implicitly (Phi = X - 1 m^T), so X is
        # neither copied nor overwritten and sparse or implicit X stays so.
        w = xp.ones_like(y) if weights is None else weights
        y_mean = scalar(xp.sum(w * y)) / n_eff
        if self.fit_intercept:
            X_offset = features.rmatmat(w[:, None])[:, 0] / n_eff
            y_offset = y_mean
            features = CenteredFeatures(features, X_offset)
        else:
            X_offset = create(xp, "zeros", d, dtype=dtype, device_=dev)
            y_offset = 0.0
        yc = y - y_offset
        sqrt_weights = None if weights is None else weights**0.5

        eps = np.finfo(np.float64).eps
        # BayesianRidge's start: the (weighted) variance of y, with or without an intercept.
        y_var = scalar(xp.sum(w * (y - y_mean) ** 2)) / n_eff
        alpha_init = 1.0 / (y_var + eps) if self.alpha_init is None else self.alpha_init
        lambda_init = 1.0 if self.lambda_init is None else self.lambda_init
        warm = None
        rng = check_random_state(self.random_state)
        if self.warm_start and hasattr(self, "coef_") and self.coef_.shape == (d,) and self.solver_ == solver:
            alpha_init, lambda_init = self.alpha_, self.lambda_
            # The computed iterates, not the outputs (which may be rounded to float32).
            samples = self._posterior.samples
            if samples is not None and samples.shape[1] != self.n_samples:
                samples = None
            warm = (
                asarray_on(self._fit_mean.coef, xp, dev, dtype),
                None if samples is None else asarray_on(samples, xp, dev, dtype),
            )

        logdet = None
        if self.compute_score and solver != "exact":

            def logdet(system):
                return logdet_slq(system, random_state=rng)

        options = self._solver_options(solver, dtype)
        callback = EvidenceProgress(solver) if self.verbose else None
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
            solver_options=options,
            warm=warm,
            logdet=logdet,
            callback=callback,
        )

        warn_if_unconverged(
            result, solver=solver, solver_tol=options.get("tol", 0.0), max_iter=self.max_iter, tol=self.tol
        )

        out = placement.to_output
        self.solver_ = solver
        self.coef_ = out(result.coef)
        self.alpha_ = result.alpha
        self.lambda_ = result.lambda_
        self.effective_dim_ = result.effective_dim
        self.effective_dim_se_ = result.effective_dim_se
        self.n_iter_ = result.n_iter
        if self.compute_score:
            self.scores_ = np.asarray(result.scores)
        self.X_offset_ = out(X_offset)
        self._intercept = y_offset - scalar(xp.sum(X_offset * result.coef)) if self.fit_intercept else 0.0
        self.intercept_ = placement.to_output_scalar(self._intercept)
        self.posterior_samples_ = None if result.samples is None else out(result.samples.T)
        # The posterior stays where it was computed; predictions move their input there.
        self._posterior = result.posterior
        self._posterior.drop_data()
        # Kept in float64 (the input's precision on a GPU) inside one private
        # object: not array attributes of the estimator, whose dtype scikit-learn's
        # array-API checks compare with the input's.
        self._fit_mean = _FitMean(result.coef, X_offset)
        self._n_fit_rows = n
        self._placement = Placement(xp, dev)
        self._input_placement = placement
        self.fit_time_ = time.perf_counter() - start
        return self

    def _memory_advice(self, shape, xp, dtype):
        n, d = shape
        k = self.n_samples + 1
        solver = self._choose_solver(n, d, xp)
        itemsize = xp.finfo(dtype).bits // 8
        gib = 2.0**30
        if solver == "exact":
            side = min(n, d)
            need = 3 * side * side * itemsize / gib
            return (
                f"Out of memory in solver='exact': it factorises a {side} x {side} matrix (about "
                f"{need:.3g} GiB with workspace). Use solver='cg' or 'sgd', which never form it."
            )
        need = (6 * d + 2 * n) * k * itemsize / gib
        hint = "lower n_samples"
        if solver == "sgd":
            hint += " or batch_size"
        return (
            f"Out of memory in solver={solver!r}: its iterates are {k} vectors of size d={d} "
            f"(about {need:.3g} GiB with the products over n={n} rows, besides X itself): {hint}; "
            f"implicit features bound their memory with a smaller batch_rows."
        )

    def _test_features(self, X):
        """Validated test data as ``(centred operator, output placement)`` on the model's device."""
        X, placement = self._validate_X(X, reset=False)
        base = as_features(X)
        return base, CenteredFeatures(base, self._fit_mean.X_offset), placement

    def _guard_memory(self, func, n_rows):
        try:
            return func()
        except Exception as exc:
            if is_out_of_memory(exc):
                shape = (n_rows, self._fit_mean.coef.shape[0])
                raise MemoryError(self._memory_advice(shape, self._placement.xp, self._fit_mean.coef.dtype)) from exc
            raise

    def predict(self, X, return_std=False, return_std_se=False):
        """Predict with the posterior mean, optionally with the predictive standard deviation.

        Parameters
        ----------
        X : {array-like, sparse matrix, feature operator} of shape (n_samples, n_features)
            Query points.
        return_std : bool, default=False
            Also return the standard deviation of the predictive distribution,
            which includes the noise ``1 / alpha_`` (as BayesianRidge's).
            Exact for ``solver='exact'``, and for ``'cg'``/``'sgd'`` where
            the fit formed the exact spectrum (``effective_dim_se_ == 0``
            with ``min(n, d)`` small enough); otherwise the
            weight-uncertainty part is the Monte Carlo estimate from the
            fit's posterior samples (``posterior_samples_``).
        return_std_se : bool, default=False
            Also return the Monte Carlo standard error of ``y_std`` (needs
            ``return_std``): zero where ``y_std`` is exact; otherwise, with
            ``k`` posterior samples and weight variance ``v``, the estimate of
            ``v`` has standard deviation ``v sqrt(2 / k)``, which moves
            ``y_std`` by that over ``2 y_std``. It is the error at the
            fitted ``alpha_`` and ``lambda_`` (conditional on them). More
            ``n_samples`` shrink it as ``1 / sqrt(n_samples)``.

        Returns
        -------
        y_mean : array of shape (n_samples,)
            In the namespace and on the device of ``X``.
        y_std : array of shape (n_samples,)
            Only if ``return_std``.
        y_std_se : array of shape (n_samples,)
            Only if ``return_std_se``.
        """
        check_is_fitted(self)
        check_return_std_se(return_std, return_std_se)
        if _dask.as_dask_array(X) is not None:  # Dask input: lazy, chunk by chunk (bayeslin/_dask.py)
            factor = self._covariance_factor() if return_std else None
            out = _dask.predict(self, _dask.as_dask_array(X), return_std, factor)
            if not return_std_se:
                return out
            y_mean, y_std = out
            return y_mean, y_std, self._posterior.std_standard_error(y_std, y_std**2 - 1.0 / self.alpha_)
        base, features, placement = self._test_features(X)
        return self._guard_memory(
            lambda: self._predict(base, features, placement, return_std, return_std_se), base.shape[0]
        )

    def _covariance_factor(self):
        """``C`` (d x r, on the host) with ``C C^T`` the posterior covariance of the weights (as ``predict`` uses it)."""
        factor, weight = self._posterior.covariance_factor()
        return to_numpy(factor) * weight**0.5

    def _predict(self, base, features, placement, return_std, return_std_se=False):
        xp = base.xp
        y_mean = base.matmat(self._fit_mean.coef[:, None])[:, 0] + self._intercept
        if not return_std:
            return placement.to_output(y_mean)
        var = xp.clip(self._posterior.variance(features), 0.0, None)
        std = (var + 1.0 / self.alpha_) ** 0.5
        if not return_std_se:
            return placement.to_output(y_mean), placement.to_output(std)
        se = self._posterior.std_standard_error(std, var)
        return placement.to_output(y_mean), placement.to_output(std), placement.to_output(se)

    @property
    def sigma_(self):
        """Posterior covariance of the weights ``(alpha X^T W X + lambda I)^-1``, shape (d, d).

        BayesianRidge's attribute, formed on each access (keep a reference
        rather than reading it in a loop) from an exact factorisation of the
        smaller of ``X^T W X`` and ``X X^T`` at the fitted ``alpha_`` and
        ``lambda_``, whatever the solver; exact up to rounding. Only for up to
        4096 features: beyond that use :meth:`sample_posterior` or
        ``predict(X, return_std=True)``.
        """
        check_is_fitted(self)
        d = self._fit_mean.coef.shape[0]
        if d > _SIGMA_MAX_FEATURES:
            gib = d * d * self._placement.xp.finfo(self._fit_mean.coef.dtype).bits / 8 / 2.0**30
            raise AttributeError(
                f"sigma_ is not formed for {d} features (a dense {d} x {d} matrix, {gib:.3g} GiB; at most "
                f"{_SIGMA_MAX_FEATURES} features): use sample_posterior(n_samples) for draws from the posterior, "
                f"or predict(X, return_std=True) for predictive standard deviations."
            )
        # The exact fit answers from its factorisation; the iterative fits
        # factorise once here, without keeping it on the model.
        covariance = self._guard_memory(self._posterior.covariance, self._n_fit_rows)
        return self._input_placement.to_output(covariance)

    def sample_posterior(self, n_samples=1, random_state=None):
        """Draw weight vectors from the posterior.

        Parameters
        ----------
        n_samples : int, default=1
            Number of draws.
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        coef_samples : array of shape (n_samples, n_features)
            Draws of the weights (the intercept is not included), in the
            namespace and on the device of the training input. Exact for
            ``solver='exact'`` (from its factorisation, also after
            unpickling); the iterative solvers solve fresh
            sample-then-optimise problems with the training data, 256 at a
            time (so their memory does not grow with ``n_samples``).
        """
        check_is_fitted(self)
        check_scalar(n_samples, "n_samples", Integral, min_val=1)
        rng = check_random_state(random_state)
        draws = self._guard_memory(lambda: self._posterior.sample(n_samples, rng), self._n_fit_rows)
        return self._input_placement.to_output(self._fit_mean.coef[None, :] + draws.T)

    def sample_y(self, X, n_samples=1, random_state=None):
        """Draw from the predictive distribution at ``X`` (noise included).

        Parameters
        ----------
        X : {array-like, sparse matrix, feature operator} of shape (n_queries, n_features)
        n_samples : int, default=1
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        y_samples : array of shape (n_queries, n_samples)
            As :meth:`sklearn.gaussian_process.GaussianProcessRegressor.sample_y`
            for a single target, in the namespace and on the device of ``X``.
        """
        check_is_fitted(self)
        check_scalar(n_samples, "n_samples", Integral, min_val=1)
        rng = check_random_state(random_state)
        if _dask.as_dask_array(X) is not None:  # Dask input: lazy, chunk by chunk (bayeslin/_dask.py)
            draws = lambda: self._guard_memory(lambda: self._posterior.sample(n_samples, rng), self._n_fit_rows)  # noqa: E731
            return _dask.sample_y(self, _dask.as_dask_array(X), draws, rng)
        base, features, placement = self._test_features(X)

        def draw():
            # Each draw keeps the fit's centring, as predict(return_std=True) does.
            mean = base.matmat(self._fit_mean.coef[:, None]) + self._intercept
            f = mean + features.matmat(self._posterior.sample(n_samples, rng))
            noise = standard_normal(rng, tuple(f.shape), base.xp, base.dtype, base.device)
            return placement.to_output(f + noise / self.alpha_**0.5)

        return self._guard_memory(draw, base.shape[0])
