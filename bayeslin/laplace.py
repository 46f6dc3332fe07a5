"""Linearised Laplace for trained networks: LinearisedLaplaceClassifier and LinearisedLaplaceRegressor.

The network ``f(w, x)`` is linearised at its fitted weights ``w`` (the MAP):
``f(theta, x) ~ f(w, x) + J(x) (theta - w)``. With a Gaussian prior
``N(0, A^-1)`` on ALL weights and biases and the generalised Gauss-Newton
curvature ``B`` of the likelihood, the posterior over the parameters is
``N(., H^-1)``, ``H = J^T B J + A`` (see the design page of the
documentation). ``H`` is never formed at scale: the Jacobian is a
matrix-free operator (:class:`~bayeslin.operators.MLPJacobian` for a
scikit-learn MLP, :class:`~bayeslin.networks.TorchJacobian` for a PyTorch
network; the estimators reach either through
:func:`bayeslin.networks.adapt_network`), whitened by
the likelihood's square-root factor, and the posterior is handled by the
solvers (sample-then-optimise) inside the evidence loop the linear model uses
(:func:`bayeslin.evidence.fit_evidence`), with one prior precision per
parameter group.

The tangent linear model has features ``Phi`` = the whitened Jacobian (rows
``L_i^T J_i``, so ``Phi^T Phi = J^T B J`` for classification; the plain
Jacobian with noise precision ``alpha`` for regression) and a right-hand side
for its mode: ``alpha Phi^T y~`` with ``y~ = y - f(w) + J w`` for regression
(the exact mode of the tangent model), ``J^T B J w - J^T g`` for
classification with ``g`` the NLL gradient at the logits (one Newton step
from ``w``: the mode of the GGN approximation at ``w``). The prior is
``A = diag(lambda_g(j) c_j)`` with a fixed scale ``c`` (ones, or the
g-prior's normalisation).
"""

from numbers import Integral, Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    RegressorMixin,
    _fit_context,
)
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.utils import check_random_state, check_scalar
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ._backend import asarray_on, create, get_namespace, is_out_of_memory, to_numpy
from ._progress import EvidenceProgress
from ._validation import check_device_array, check_return_std_se, is_host_input, keeps_state_on_failure
from .evidence import fit_evidence, warn_if_unconverged
from .likelihoods import LogisticLikelihood, SoftmaxLikelihood
from .networks import TorchModule, adapt_network, fit_network
from .solvers import solver_options

__all__ = ["LinearisedLaplaceClassifier", "LinearisedLaplaceRegressor"]

# Beyond this many parameters the dense d x d route (d Jacobian-vector
# products and a d^3 inversion) stops paying for itself on a CPU.
_EXACT_MAX_PARAMS = 2000
# Floor of the g-prior's scale relative to its mean: a parameter the data
# do not touch (a dead ReLU unit) would otherwise get no prior at all.
_GPRIOR_FLOOR = 1e-4
# Test observations per block of Jacobian products in predictions.
_PREDICT_CHUNK = 4096
# The tiny Gamma hyperpriors of BayesianRidge keep an empty parameter group
# finite; lambda stays within this band times the mean curvature.
_HYPER = 1e-6
_LAMBDA_BAND = (1e-8, 1e8)


class _LinearisedLaplaceBase(BaseEstimator):
    """What the classifier and the regressor share: the Jacobian, the prior, the evidence loop."""

    _parameter_constraints: dict = {
        "estimator": [None, HasMethods(["fit", "predict"]), TorchModule, callable],
        "parameters": [None, str, list, tuple],
        "jacobian_batch_size": [None, Interval(Integral, 1, None, closed="left")],
        "prior_precision": [StrOptions({"evidence"}), Interval(Real, 0, None, closed="neither"), "array-like"],
        "lambda_init": [None, Interval(Real, 0, None, closed="neither")],
        "prior_structure": [StrOptions({"scalar", "layerwise"})],
        "normalize": [None, StrOptions({"g-prior"})],
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "solver": [StrOptions({"auto", "exact", "cg", "sgd"})],
        "solver_tol": [None, Interval(Real, 0, None, closed="neither")],
        "solver_max_iter": [None, Interval(Integral, 1, None, closed="left")],
        "batch_size": [None, Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def _network_template(self):
        raise NotImplementedError

    def _fit_network(self, X, y, rng):
        """Fit a clone of the network (or take a frozen or plain torch one as is); return its adapter.

        Returns ``(adapter, fitted_here)``.
        """
        task = "classifier" if isinstance(self, ClassifierMixin) else "regressor"
        net, fitted_here = fit_network(
            self.estimator, self._network_template, task, X, y, rng, (self._network_class(),)
        )
        # A network fitted here learnt y's labels (a torch one as output indices).
        classes = np.unique(y) if task == "classifier" and fitted_here else None
        adapter = adapt_network(
            net, task, parameters=self.parameters, batch_size=self.jacobian_batch_size, device=self.device,
            classes=classes,
        )
        return adapter, fitted_here

    def _validate_X(self, X, reset, y="no_validation"):
        """Validate ``X`` (and ``y`` when given); return ``(X, y, placement)``.

        A torch (or other array-API) tensor is checked where it lives and
        predictions go back there; everything else goes through scikit-learn's
        ``validate_data``.
        """
        if is_host_input(X):
            if isinstance(y, str) and y == "no_validation":
                return validate_data(self, X, dtype=[np.float64, np.float32], reset=reset), None, None
            X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], multi_output=True,
                                 y_numeric=not isinstance(self, ClassifierMixin))
            return X, y, None
        validate_data(self, X, reset=reset, skip_check_array=True)
        X = check_device_array(X, keep_float32=True)
        xp = get_namespace(X)
        placement = (xp, X.device)
        if isinstance(y, str) and y == "no_validation":
            y = None
        elif y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None.")
        else:
            y = to_numpy(y)
            if y.shape[0] != X.shape[0]:
                raise ValueError(
                    f"Found input variables with inconsistent numbers of samples: [{X.shape[0]}, {y.shape[0]}]"
                )
            if not isinstance(self, ClassifierMixin):
                y = np.asarray(y, dtype=np.float64)
                if not np.all(np.isfinite(y)):
                    raise ValueError("Input y contains NaN or infinity.")
        return X, y, placement

    def _to_output(self, a, placement):
        """A host result back in the input's namespace and device."""
        if placement is None:
            return a
        xp, dev = placement
        return asarray_on(a, xp, dev)

    def _memory_advice(self, n_obs):
        d = getattr(self, "n_params_", None)
        k = self.n_samples + 1
        where = f" d={d} parameters," if d is not None else ""
        return (
            f"Out of memory in the linearised Laplace fit or prediction ({where} n={n_obs} observations, "
            f"{k} vectors per product): lower jacobian_batch_size (observations per block of Jacobian "
            f"products; torch networks), n_samples (columns of every product and solver iterate), or use "
            f"solver='cg'/'sgd' instead of 'exact' (which forms a d x d matrix)."
        )

    def _guard_memory(self, func, n_obs):
        try:
            return func()
        except Exception as exc:
            if is_out_of_memory(exc):
                raise MemoryError(self._memory_advice(n_obs)) from exc
            raise

    def _keep_network(self, network, jac, w):
        """Keep the network, its adapter and the weights ``w`` it is linearised at (host, float64)."""
        self.estimator_ = network.network
        self._network = network
        self._n_outputs = jac.n_outputs
        self._map_weights = np.asarray(to_numpy(w), dtype=np.float64)

    def _choose_solver(self, d):
        if self.solver != "auto":
            return self.solver
        return "exact" if d <= _EXACT_MAX_PARAMS else "cg"

    def _solver_options(self, solver, dtype=np.float64):
        # A float32 network's products with H carry float32 rounding: the
        # float64 default tolerance only buys more iterations.
        options = solver_options(
            solver,
            tol=self.solver_tol,
            max_iter=self.solver_max_iter,
            batch_size=self.batch_size,
            float32="float32" in str(dtype),
        )
        return options

    def _groups(self, jac):
        if self.prior_structure == "layerwise":
            return list(jac.groups)
        return [(0, jac.n_params)]

    def _lambda_start(self, groups, weights, scale, n_rows):
        """``(lambda values, tuned?)`` from ``prior_precision`` and ``lambda_init``.

        ``lambda_init=None`` starts from the evidence update taken at the
        network's weights ``w`` with each group's effective dimension at its
        upper bound, ``gamma_g = |g| min(1, N / d)`` (``N`` rows of ``Phi``
        bound the rank of the curvature): ``lambda_g = gamma_g / sum_g c_j w_j^2``.
        Where the tangent mode's norm is about the weights', that lies
        above the fixed point, so the first solve, the one without a warm
        start, is the best conditioned of the fit instead of the worst
        (see the design page).
        """
        n_groups = len(groups)
        if isinstance(self.prior_precision, str):
            if self.lambda_init is not None:
                return np.full(n_groups, float(self.lambda_init)), True
            return _lambda_from_weights(groups, weights, scale, n_rows), True
        lam = np.asarray(self.prior_precision, dtype=np.float64).reshape(-1)
        if lam.size == 1:
            lam = np.full(n_groups, float(lam[0]))
        if lam.shape != (n_groups,) or not np.all(np.isfinite(lam)) or np.any(lam <= 0):
            raise ValueError(
                f"prior_precision must be 'evidence', a positive float, or {n_groups} positive values "
                f"(one per parameter group for prior_structure={self.prior_structure!r}); got {self.prior_precision!r}."
            )
        return lam, False

    def _prior_scale(self, features, alpha):
        """``c``: ones (None) or the g-prior's ``diag(M) / mean(diag(M))``, floored."""
        if self.normalize is None:
            return None
        xp = features.xp
        diag = features.col_sq_norms()
        c = diag / xp.mean(diag)
        return xp.maximum(c, _GPRIOR_FLOOR)

    def _run_evidence(
        self, jac, features, *, weights, mean_rhs, targets, tune_alpha, alpha_init, log_likelihood, rng
    ):
        d = jac.n_params
        solver = self._choose_solver(d)
        groups = self._groups(jac)
        scale = self._prior_scale(features, alpha_init)
        lambdas, tune_lambda = self._lambda_start(groups, weights, scale, features.shape[0])
        options = self._solver_options(solver, features.dtype)
        result = fit_evidence(
            features,
            targets,
            mean_rhs=mean_rhs,
            groups=groups,
            prior_scale=scale,
            solver=solver,
            n_samples=self.n_samples,
            alpha_init=alpha_init,
            lambda_init=lambdas,
            tune_alpha=tune_alpha,
            tune_lambda=tune_lambda,
            priors=(_HYPER,) * 4,
            lambda_band=_LAMBDA_BAND,
            stop="hyperparameters",
            noise_estimate=False,
            exact_samples=True,
            max_iter=self.max_iter,
            tol=self.tol,
            rng=rng,
            solver_options=options,
            callback=EvidenceProgress(solver) if self.verbose else None,
        )
        warn_if_unconverged(
            result, solver=solver, solver_tol=options.get("tol", 0.0), max_iter=self.max_iter, tol=self.tol
        )
        self.solver_ = solver
        self.n_params_ = d
        self.lambda_ = float(result.lambdas[0]) if self.prior_structure == "scalar" else np.asarray(result.lambdas)
        self.effective_dim_ = result.effective_dim
        self.effective_dim_se_ = result.effective_dim_se
        self.n_iter_ = result.n_iter
        self.tangent_mode_ = to_numpy(result.coef)
        self.posterior_samples_ = to_numpy(result.samples).T
        self.prior_scale_ = None if scale is None else to_numpy(scale)
        last = result.solver_results[-1] if result.solver_results else None
        self.last_solve_ = None if last is None else {
            "n_iter": last.n_iter,
            "residual": float(np.max(last.residual_norms)),
            "passes": last.info.get("passes", last.n_iter),
        }
        self._posterior = result.posterior
        self._posterior.drop_data()
        # log p(y | w) at the fitted noise precision (regression) or as is.
        self._log_likelihood = float(log_likelihood(result.alpha))
        return result

    def log_marginal_likelihood(self, random_state=None):
        """Log evidence of the fitted model under the Laplace approximation.

        ``log p(y | w) - (w^T A w + log det H - log det A) / 2`` at the
        network's weights ``w`` (the MAP), with the fitted prior ``A`` and
        ``H = J^T B J + A`` (times ``alpha`` on the data term for
        regression): what laplace-torch's ``log_marginal_likelihood()``
        returns. Exact for ``solver_='exact'``; the iterative solvers
        estimate ``log det H`` by stochastic Lanczos quadrature, with a
        Monte Carlo error of about 1% of ``d`` nats.

        Parameters
        ----------
        random_state : int, RandomState instance or None, default=None
            Seeds the Lanczos probes (iterative solvers).

        Returns
        -------
        float
        """
        check_is_fitted(self)
        post = self._posterior
        A = to_numpy(post.prior)
        w = self._map_weights
        logdet_ratio = post.logdet(random_state=check_random_state(random_state)) - float(np.sum(np.log(A)))
        return self._log_likelihood - 0.5 * (float(w @ (A * w)) + logdet_ratio)

    def _check_X(self, X):
        check_is_fitted(self)
        X, _, placement = self._validate_X(X, reset=False)
        return X, placement

    def _test_jacobian(self, X):
        return self._network.jacobian(X, dtype=self._posterior.mean.dtype)

    def _observation_blocks(self, X):
        """Yield the test Jacobian in blocks of observations."""
        jac = self._test_jacobian(X)
        for start in range(0, jac.n_obs, _PREDICT_CHUNK):
            stop = min(jac.n_obs, start + _PREDICT_CHUNK)
            yield jac.take_observations(create(jac.xp, "arange", start, stop, device_=jac.device))

    def _output_moments(self, X, centre=False, full=False):
        """Network outputs ``f`` (n, m) and the (co)variances of ``J(x) theta``, on the host.

        With ``centre`` the variances are those of the logits minus their
        mean over the outputs: softmax ignores that mean, which only the
        prior constrains (``B`` is singular along it), so its variance must
        not flatten the probit approximation. With ``full`` the covariance
        over the outputs (n, m, m) is returned instead of the variances.
        Exact for ``solver_='exact'``, else the Monte Carlo estimate from
        the fit's samples.
        """
        factor, weight = self._posterior.covariance_factor()
        f, var = [], []
        for sub in self._observation_blocks(X):
            xp = sub.xp
            P = sub.jvp_outputs(factor)
            if centre:
                P = P - xp.mean(P, axis=1, keepdims=True)
            if full:
                var.append(weight * to_numpy(P @ xp.permute_dims(P, (0, 2, 1))))
            else:
                var.append(weight * to_numpy(xp.sum(P * P, axis=2)))
            f.append(to_numpy(sub.outputs))
        m = self._n_outputs
        f = np.concatenate(f) if f else np.zeros((0, m))
        var = np.concatenate(var) if var else np.zeros((0, m, m) if full else (0, m))
        return f, var

    def _logit_samples(self, X, n_samples=None, random_state=None):
        """``f(x) + J(x) z_j`` (n, m, k), host: the fit's samples, or ``n_samples`` new draws."""
        if n_samples is None:
            Z = self._posterior.samples
        else:
            check_scalar(n_samples, "n_samples", Integral, min_val=1)
            Z = self._posterior.sample(n_samples, check_random_state(random_state))
        out = [to_numpy(sub.outputs[:, :, None] + sub.jvp_outputs(Z)) for sub in self._observation_blocks(X)]
        return np.concatenate(out)

    def sample_posterior(self, n_samples=1, random_state=None):
        """Draw full weight vectors from the linearised Laplace posterior.

        The posterior is centred at the network's fitted weights (the MAP
        the network is linearised at). For a scikit-learn MLP the parameter
        order is that of :func:`bayeslin.operators.mlp_jacobian.flatten_params`:
        ``coefs_[0].ravel(), intercepts_[0], coefs_[1].ravel(), ...``
        (:func:`bayeslin.operators.mlp_jacobian.unflatten_params` splits a
        draw into layers); for a torch network it is the linearised
        parameter tensors raveled in the order of
        ``module.named_parameters()`` (grouped by the entries of
        ``parameters`` when given).

        Parameters
        ----------
        n_samples : int, default=1
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        weights : ndarray of shape (n_samples, n_params)
            ``w_MAP + z`` with ``z ~ N(0, H^-1)``: exact for
            ``solver_='exact'`` (from the factorisation, also after
            unpickling); the iterative solvers solve fresh
            sample-then-optimise problems on the training Jacobian, 256 at
            a time.
        """
        check_is_fitted(self)
        check_scalar(n_samples, "n_samples", Integral, min_val=1)
        z = self._posterior.sample(n_samples, check_random_state(random_state))
        return self._map_weights[None, :] + to_numpy(z).T


class LinearisedLaplaceClassifier(ClassifierMixin, _LinearisedLaplaceBase):
    """Calibrated class probabilities for an MLPClassifier by linearised Laplace.

    ``fit`` fits a clone of ``estimator`` (its MAP), or uses it as is when it
    is wrapped in :class:`sklearn.frozen.FrozenEstimator`, then infers the
    Gaussian posterior of the network's tangent linear model over ALL its
    weights and biases: precision ``H = J^T B J + A`` with ``J`` the Jacobian
    of the logits and ``B`` the Hessian of the negative log-likelihood at
    the logits (softmax for several classes, logistic for sklearn's
    single-unit binary network). The prior precision is tuned by MacKay's
    evidence updates at the tangent model's mode, which is taken as one
    Newton step from the network's weights,
    ``theta = H^-1 (J^T B J w - J^T g)`` with ``g`` the gradient of the
    summed NLL at the logits (the mode of the GGN approximation).

    Parameters
    ----------
    estimator : MLPClassifier, skorch NeuralNetClassifier, torch.nn.Module, TorchModule or FrozenEstimator, \
default=None
        The network; ``None`` means ``MLPClassifier()``. A scikit-learn MLP
        (any hidden activation of 'identity', 'logistic', 'tanh', 'relu')
        or a skorch net is fitted first unless wrapped in
        :class:`~sklearn.frozen.FrozenEstimator`; a plain torch module
        (logits out, or as :class:`bayeslin.networks.TorchModule` says) is
        used as it is. Multi-label targets are not supported.
    prior_precision : 'evidence', float or array-like, default='evidence'
        ``'evidence'``: tuned by the MacKay updates, from ``lambda_init``. A
        positive float (or, with ``prior_structure='layerwise'``, one value
        per layer) fixes it. Independent of the network's own ``alpha``
        (which acts on the weights only, scaled by ``1 / n``).
    lambda_init : float, default=None
        Starting prior precision of the evidence updates. None: the
        evidence update at the network's weights ``w`` with every parameter
        counted as determined, ``lambda_g = gamma_g / sum_{j in g} c_j w_j^2``
        with ``gamma_g = |g| min(1, N / d)`` (``N`` rows of the whitened
        Jacobian), the upper end of where the updates go when the tangent
        mode is about as large as ``w``: the first, unwarmed solve is then
        the best conditioned of the fit (1.0 when ``w`` is zero).
    prior_structure : {'scalar', 'layerwise'}, default='scalar'
        One prior precision for all parameters, or one per layer (its
        weights and bias together). The iterative solvers take each layer's
        effective dimension exactly on networks small enough for the
        ``d x d`` Gram matrix (see the design page); past that the samples
        estimate it, and a layer the data barely determine (typically the
        input layer) can stay undecided, which the fit reports with a
        ConvergenceWarning.
    normalize : {None, 'g-prior'}, default=None
        ``'g-prior'``: scale the prior of each parameter by the diagonal of
        the curvature ``J^T B J`` (normalised to mean one and floored at
        1e-4), i.e. put the prior on parameters normalised to unit curvature,
        so one ``lambda`` fits layers of very different scale.
    link : {'probit', 'mc'}, default='probit'
        How class probabilities integrate the logit uncertainty: the probit
        approximation ``softmax(f / sqrt(1 + pi var / 8))`` with the
        per-class variance of the logits centred over the classes (softmax
        ignores their common shift, which only the prior constrains), or the Monte Carlo mean of
        ``softmax(f + J z_j)`` over the ``n_samples`` posterior samples.
    n_samples : int, default=16
        Posterior samples drawn in the fit: they estimate the effective
        dimension for the evidence updates (iterative solvers) and serve the
        predictions ('mc' always; 'probit' with an iterative solver).
    max_iter : int, default=50
        Evidence steps at most.
    tol : float, default=1e-3
        Stop when the relative change of every tuned hyperparameter is below.
    solver : {'auto', 'exact', 'cg', 'sgd'}, default='auto'
        ``'exact'`` forms ``J^T B J`` densely (networks of a few thousand
        parameters), ``'cg'`` batched conjugate gradients, ``'sgd'``
        minibatch SGD on the sample-then-optimise objectives. ``'auto'``:
        exact up to 2000 parameters, else cg.
    solver_tol, solver_max_iter, batch_size : default=None
        As in :class:`bayeslin.BayesianLinearRegressor`.
    device : {'cpu', 'cuda', 'cuda:N'}, default='cpu'
        Where the Laplace inference runs for a scikit-learn MLP: 'cuda' (or
        GPU ``N``) moves the data and the network's weights to the GPU with
        CuPy (the network itself is fitted by scikit-learn on the CPU). A
        torch network is linearised where it lives (move the module);
        another ``device`` than 'cpu' must name that device.
    parameters : str or list of str, default=None
        Torch networks: the modules or parameter tensors (names as in
        ``module.named_parameters()``) the posterior is over, e.g.
        ``["fc"]`` for a last-layer Laplace; the others stay at their
        trained values. ``None``: every trainable parameter. With
        ``prior_structure='layerwise'`` each entry (by default each module
        owning parameters) has its own prior precision.
    jacobian_batch_size : int, default=None
        Torch networks: observations per block of Jacobian products (default:
        blocks whose activations stay under 512 MiB). Lower it on an
        out-of-memory error.
    random_state : int, RandomState instance or None, default=None
        Seeds the posterior samples (and the default network).
    verbose : bool, default=False
        Print the evidence steps.

    Attributes
    ----------
    estimator_ : MLPClassifier, skorch net or torch module
        The fitted network.
    classes_ : ndarray of shape (n_classes,)
    lambda_ : float or ndarray of shape (n_layers,)
        Prior precision (per layer when ``prior_structure='layerwise'``).
    effective_dim_ : float
        Effective number of parameters ``Tr(H^-1 J^T B J)``.
    effective_dim_se_ : float
        Monte Carlo standard error of ``effective_dim_`` (0.0 when it is
        exact: the exact solver, or an iterative one on a problem small
        enough for the exact spectrum).
    n_params_ : int
        Number of network parameters (weights and biases).
    n_iter_ : int
        Evidence steps performed (0 with a fixed prior).
    solver_ : str
    tangent_mode_ : ndarray of shape (n_params,)
        Mode of the tangent linear model at ``lambda_``.
    posterior_samples_ : ndarray of shape (n_samples, n_params)
        Zero-mean posterior draws (perturbations of the network's weights).
    prior_scale_ : ndarray of shape (n_params,) or None
        The g-prior's per-parameter scale.
    last_solve_ : dict or None
        The last iterative solve of the fit: ``{'n_iter', 'residual', 'passes'}``
        (its iterations, largest relative residual, and passes over the
        data in products with ``H``: the iterations and residual checks,
        plus forming cg's preconditioner where this solve formed it); None
        for 'exact'.
    n_features_in_ : int
    feature_names_in_ : ndarray

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.neural_network import MLPClassifier
    >>> from bayeslin import LinearisedLaplaceClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> net = MLPClassifier(hidden_layer_sizes=(10,), max_iter=2000, random_state=0)
    >>> clf = LinearisedLaplaceClassifier(net, random_state=0).fit(X, y)
    >>> proba = clf.predict_proba(X[:2])
    """

    _parameter_constraints: dict = {
        **_LinearisedLaplaceBase._parameter_constraints,
        "link": [StrOptions({"probit", "mc"})],
    }

    def __init__(
        self,
        estimator=None,
        *,
        prior_precision="evidence",
        lambda_init=None,
        prior_structure="scalar",
        normalize=None,
        link="probit",
        n_samples=16,
        max_iter=50,
        tol=1e-3,
        solver="auto",
        solver_tol=None,
        solver_max_iter=None,
        batch_size=None,
        device="cpu",
        parameters=None,
        jacobian_batch_size=None,
        random_state=None,
        verbose=False,
    ):
        self.estimator = estimator
        self.prior_precision = prior_precision
        self.lambda_init = lambda_init
        self.prior_structure = prior_structure
        self.normalize = normalize
        self.link = link
        self.n_samples = n_samples
        self.max_iter = max_iter
        self.tol = tol
        self.solver = solver
        self.solver_tol = solver_tol
        self.solver_max_iter = solver_max_iter
        self.batch_size = batch_size
        self.device = device
        self.parameters = parameters
        self.jacobian_batch_size = jacobian_batch_size
        self.random_state = random_state
        self.verbose = verbose

    def _network_template(self):
        return MLPClassifier()

    def _network_class(self):
        return MLPClassifier

    @_fit_context(prefer_skip_nested_validation=False)
    @keeps_state_on_failure
    def fit(self, X, y):
        """Fit the network (unless frozen) and its linearised Laplace posterior.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels (binary or multi-class; not multi-label).

        Returns
        -------
        self : object
        """
        X, y, _ = self._validate_X(X, reset=True, y=y)
        if y.ndim == 2 and y.shape[1] > 1:
            raise ValueError(
                f"Multi-label / multi-output targets (y of shape {y.shape}) are not supported; "
                "pass one label per sample."
            )
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if np.unique(y).shape[0] < 2:
            raise ValueError("The classifier needs samples of at least 2 classes; the data have only 1 class.")
        rng = check_random_state(self.random_state)
        network, _ = self._fit_network(X, y, rng)
        network.check_classifier()
        return self._guard_memory(lambda: self._fit_posterior(network, X, y, rng), X.shape[0])

    def _fit_posterior(self, network, X, y, rng):
        jac = network.jacobian(X)
        xp = jac.xp
        f = jac.outputs
        classes = network.classes_ if network.classes_ is not None else network.set_classes(jac.n_outputs)
        classes = np.asarray(classes)
        n_logits = 2 if jac.n_outputs == 1 else jac.n_outputs
        if len(classes) != n_logits:
            raise ValueError(
                f"The network has {jac.n_outputs} output(s), for {n_logits} classes, but its labels are {classes!r}."
            )
        y_idx = np.searchsorted(classes, y)
        if np.any(y_idx >= len(classes)) or np.any(classes[np.minimum(y_idx, len(classes) - 1)] != y):
            raise ValueError("y contains labels the (frozen) network was not fitted on.")
        lik = LogisticLikelihood(f) if jac.n_outputs == 1 else SoftmaxLikelihood(f)
        features = jac.with_transform(lik.whitening_transform())
        w = network.parameter_vector(jac)
        labels = asarray_on(y_idx.astype(np.float64 if jac.n_outputs == 1 else np.int64), xp, jac.device)
        g = lik.gradient(labels)
        if jac.n_outputs == 1:
            g = xp.astype(g, jac.dtype)
        # One Newton step from the network's weights: (J^T B J) w - J^T g.
        rhs = features.rmatmat(features.matmat(w[:, None])) - jac.vjp_outputs(g[:, :, None])

        self._run_evidence(
            jac,
            features,
            weights=w,
            mean_rhs=lambda alpha: rhs,
            targets=None,
            tune_alpha=False,
            alpha_init=1.0,
            log_likelihood=lambda alpha, ll=_log_likelihood(to_numpy(f), y_idx): ll,
            rng=rng,
        )
        self._keep_network(network, jac, w)
        self.classes_ = classes
        return self

    def predict_logits(self, X, return_cov=False):
        """Mean and covariance of the linearised network's logits under the posterior.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        return_cov : bool, default=False
            Also return the covariance of the logits over the outputs,
            ``J(x) H^-1 J(x)^T`` per observation (not centred over the
            classes): exact for ``solver_='exact'``, the Monte Carlo estimate
            from ``posterior_samples_`` otherwise.

        Returns
        -------
        mean : ndarray of shape (n_samples, n_outputs)
            The network's logits ``f(x)`` (one column for sklearn's binary
            network, one per class otherwise).
        cov : ndarray of shape (n_samples, n_outputs, n_outputs)
            Only if ``return_cov``.
        """
        X, placement = self._check_X(X)
        f, cov = self._guard_memory(lambda: self._output_moments(X, full=True), X.shape[0])
        f = self._to_output(f, placement)
        return (f, self._to_output(cov, placement)) if return_cov else f

    def predict_proba(self, X, link=None, n_samples=None, random_state=None):
        """Class probabilities integrated over the linearised posterior.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        link : {'probit', 'mc'}, default=None
            How the logits' Gaussian is integrated; None uses the
            estimator's ``link``. Switching needs no refit.
        n_samples : int, default=None
            Draws of the ``'mc'`` link: None uses the fit's
            ``posterior_samples_``; a number draws that many afresh (exact
            from the factorisation for ``solver_='exact'``, new solves on the
            training Jacobian otherwise). The Monte Carlo error of a
            probability is at most ``0.5 / sqrt(n_samples)``.
        random_state : int, RandomState instance or None, default=None
            Seeds the fresh draws of ``'mc'``.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        X, placement = self._check_X(X)
        link = self.link if link is None else link
        if link not in ("probit", "mc"):
            raise ValueError(f"link must be 'probit' or 'mc', got {link!r}.")
        proba = self._guard_memory(lambda: self._proba(X, link, n_samples, random_state), X.shape[0])
        return self._to_output(proba, placement)

    def _proba(self, X, link, n_samples=None, random_state=None):
        if link == "mc":
            logits = self._logit_samples(X, n_samples, random_state)
            if logits.shape[1] == 1:
                p1 = np.mean(_sigmoid(logits[:, 0, :]), axis=1)
                return np.stack([1 - p1, p1], axis=1)
            return np.mean(_softmax(logits, axis=1), axis=2)
        f, var = self._output_moments(X, centre=self._n_outputs > 1)
        kappa = 1.0 / np.sqrt(1.0 + np.pi * np.maximum(var, 0.0) / 8.0)
        if f.shape[1] == 1:
            p1 = _sigmoid(kappa[:, 0] * f[:, 0])
            return np.stack([1 - p1, p1], axis=1)
        return _softmax(kappa * f, axis=1)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        proba = self.predict_proba(X)
        if isinstance(proba, np.ndarray):
            with np.errstate(divide="ignore"):
                return np.log(proba)
        return get_namespace(proba).log(proba)

    def predict(self, X):
        """Most probable class under :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        X, placement = self._check_X(X)
        proba = self._guard_memory(lambda: self._proba(X, self.link), X.shape[0])
        labels = self.classes_[np.argmax(proba, axis=1)]
        if placement is None or labels.dtype.kind not in "biuf":
            return labels
        return self._to_output(labels, placement)


class LinearisedLaplaceRegressor(RegressorMixin, _LinearisedLaplaceBase):
    """Predictive uncertainty for an MLPRegressor by linearised Laplace.

    ``fit`` fits a clone of ``estimator`` (or uses a
    :class:`sklearn.frozen.FrozenEstimator`'s network as is), then infers the
    Gaussian posterior of the network's tangent linear model over all its
    weights and biases, ``H = alpha J^T J + A``, with the noise precision
    ``alpha`` and the prior precision tuned by MacKay's evidence updates at
    the tangent model's exact mode (targets ``y - f(w) + J w``).

    Parameters
    ----------
    estimator : MLPRegressor, skorch NeuralNetRegressor, torch.nn.Module, TorchModule or FrozenEstimator, \
default=None
        The network; ``None`` means ``MLPRegressor()``. One or several
        outputs. As in :class:`LinearisedLaplaceClassifier`.
    prior_precision : 'evidence', float or array-like, default='evidence'
        As in :class:`LinearisedLaplaceClassifier`.
    noise_precision : 'evidence' or float, default='evidence'
        ``'evidence'``: tuned, from ``alpha_init``; a positive float fixes it.
    alpha_init : float, default=None
        Starting noise precision (default: the inverse mean squared training
        residual of the network).
    lambda_init, prior_structure, normalize, n_samples, max_iter, tol, solver, \
solver_tol, solver_max_iter, batch_size, device, parameters, jacobian_batch_size, random_state, verbose
        As in :class:`LinearisedLaplaceClassifier`.

    Attributes
    ----------
    estimator_ : MLPRegressor, skorch net or torch module
    alpha_ : float
        Noise precision.
    lambda_ : float or ndarray of shape (n_layers,)
    effective_dim_ : float
    n_params_ : int
    n_iter_ : int
    solver_ : str
    tangent_mode_ : ndarray of shape (n_params,)
    posterior_samples_ : ndarray of shape (n_samples, n_params)
        Zero-mean posterior draws (perturbations of the network's weights).
    prior_scale_ : ndarray of shape (n_params,) or None
    last_solve_ : dict or None
        As in :class:`LinearisedLaplaceClassifier`.
    n_features_in_ : int
    feature_names_in_ : ndarray

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.neural_network import MLPRegressor
    >>> from bayeslin import LinearisedLaplaceRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> net = MLPRegressor(hidden_layer_sizes=(8,), max_iter=3000, random_state=0)
    >>> reg = LinearisedLaplaceRegressor(net, random_state=0).fit(X, y / 100)
    >>> mean, std = reg.predict(X[:2], return_std=True)
    """

    _parameter_constraints: dict = {
        **_LinearisedLaplaceBase._parameter_constraints,
        "noise_precision": [StrOptions({"evidence"}), Interval(Real, 0, None, closed="neither")],
        "alpha_init": [None, Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        estimator=None,
        *,
        prior_precision="evidence",
        noise_precision="evidence",
        alpha_init=None,
        lambda_init=None,
        prior_structure="scalar",
        normalize=None,
        n_samples=16,
        max_iter=50,
        tol=1e-3,
        solver="auto",
        solver_tol=None,
        solver_max_iter=None,
        batch_size=None,
        device="cpu",
        parameters=None,
        jacobian_batch_size=None,
        random_state=None,
        verbose=False,
    ):
        self.estimator = estimator
        self.prior_precision = prior_precision
        self.noise_precision = noise_precision
        self.alpha_init = alpha_init
        self.lambda_init = lambda_init
        self.prior_structure = prior_structure
        self.normalize = normalize
        self.n_samples = n_samples
        self.max_iter = max_iter
        self.tol = tol
        self.solver = solver
        self.solver_tol = solver_tol
        self.solver_max_iter = solver_max_iter
        self.batch_size = batch_size
        self.device = device
        self.parameters = parameters
        self.jacobian_batch_size = jacobian_batch_size
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _network_template(self):
        return MLPRegressor()

    def _network_class(self):
        return MLPRegressor

    @_fit_context(prefer_skip_nested_validation=False)
    @keeps_state_on_failure
    def fit(self, X, y):
        """Fit the network (unless frozen) and its linearised Laplace posterior.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)

        Returns
        -------
        self : object
        """
        X, y, _ = self._validate_X(X, reset=True, y=y)
        rng = check_random_state(self.random_state)
        network, _ = self._fit_network(X, y, rng)
        if getattr(network, "output", "regression") != "regression":
            raise ValueError(f"A network with output={network.output!r} cannot be used by a regressor.")
        return self._guard_memory(lambda: self._fit_posterior(network, X, y, rng), X.shape[0])

    def _fit_posterior(self, network, X, y, rng):
        jac = network.jacobian(X)
        xp = jac.xp
        f = jac.outputs
        n, m = f.shape
        n_targets = 1 if y.ndim == 1 else y.shape[1]
        if n_targets != m:
            raise ValueError(f"y has {n_targets} target(s) but the network has {m} output(s).")
        Y = xp.reshape(asarray_on(np.asarray(y, dtype=np.float64), xp, jac.device, jac.dtype), (n, m))
        w = network.parameter_vector(jac)
        # Tangent-model targets y - f(w) + J w: their least-squares mode is exact.
        targets = xp.reshape(Y - f, (-1,)) + jac.matmat(w[:, None])[:, 0]
        resid = float(to_numpy(xp.mean((Y - f) ** 2)))
        if isinstance(self.noise_precision, str):
            alpha_init = 1.0 / (resid + np.finfo(np.float64).eps) if self.alpha_init is None else self.alpha_init
            tune_alpha = True
        else:
            alpha_init, tune_alpha = float(self.noise_precision), False
        n_values = n * m

        def log_likelihood(alpha):
            return 0.5 * n_values * np.log(alpha / (2 * np.pi)) - 0.5 * alpha * resid * n_values

        result = self._run_evidence(
            jac,
            jac,
            weights=w,
            mean_rhs=None,
            targets=targets,
            tune_alpha=tune_alpha,
            alpha_init=alpha_init,
            log_likelihood=log_likelihood,
            rng=rng,
        )
        self.alpha_ = float(result.alpha)
        self._keep_network(network, jac, w)
        return self

    def predict(self, X, return_std=False, include_noise=True, return_std_se=False):
        """Predict with the network, optionally with the predictive standard deviation.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        return_std : bool, default=False
            Also return the predictive standard deviation: the spread of the
            linearised network under the posterior plus, with
            ``include_noise``, the noise ``1 / alpha_``. Exact for
            ``solver_='exact'`` and where the iterative fit formed the exact
            factorisation (few parameters; ``effective_dim_se_ == 0``), the
            Monte Carlo estimate from ``posterior_samples_`` otherwise.
        include_noise : bool, default=True
            Include the observation noise; False gives the function-space
            standard deviation of ``f(x)`` alone.
        return_std_se : bool, default=False
            Also return the Monte Carlo standard error of ``y_std`` (needs
            ``return_std``): zero where ``y_std`` is exact; otherwise, with
            ``k`` posterior samples and function variance ``v``, the estimate
            of ``v`` has standard deviation ``v sqrt(2 / k)``, which moves
            ``y_std`` by that over ``2 y_std``. It is the error at the
            fitted hyperparameters (conditional on them).

        Returns
        -------
        y_mean : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The network's prediction (the mean of the linearised predictive).
        y_std : ndarray, same shape as ``y_mean``
            Only if ``return_std``.
        y_std_se : ndarray, same shape as ``y_mean``
            Only if ``return_std_se``.
        """
        check_return_std_se(return_std, return_std_se)
        X, placement = self._check_X(X)
        return self._guard_memory(
            lambda: self._predict(X, placement, return_std, include_noise, return_std_se), X.shape[0]
        )

    def _predict(self, X, placement, return_std, include_noise, return_std_se=False):
        if not return_std:
            f = to_numpy(self._test_jacobian(X).outputs)
            return self._to_output(f[:, 0] if f.shape[1] == 1 else f, placement)
        f, var = self._output_moments(X)
        var = np.maximum(var, 0.0)
        std = np.sqrt(var + (1.0 / self.alpha_ if include_noise else 0.0))
        # Without the noise a zero variance gives a zero std, and a zero error.
        se = self._posterior.std_standard_error(np.where(std > 0, std, 1.0), var)
        out = [f, std, se] if return_std_se else [f, std]
        if f.shape[1] == 1:
            out = [a[:, 0] for a in out]
        return tuple(self._to_output(a, placement) for a in out)


def _lambda_from_weights(groups, weights, scale, n_rows):
    """The evidence update at the weights ``w`` with ``gamma_g = |g| min(1, N / d)``: ``gamma_g / sum_g c_j w_j^2``."""
    w2 = np.asarray(to_numpy(weights), dtype=np.float64) ** 2
    if scale is not None:
        w2 = w2 * np.asarray(to_numpy(scale), dtype=np.float64)
    d = w2.shape[0]
    lambdas = []
    for a, b in groups:
        sq = float(np.sum(w2[a:b]))
        lam = (b - a) * min(1.0, n_rows / d) / sq if sq > 0 else np.inf
        lambdas.append(lam if np.isfinite(lam) and lam > 0 else 1.0)
    return np.array(lambdas)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _softmax(z, axis):
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_likelihood(logits, y_idx):
    """``log p(y | f)`` summed, from the logits (one column: logistic; several: softmax)."""
    if logits.shape[1] == 1:
        z = logits[:, 0] * np.where(y_idx == 1, 1.0, -1.0)
        return float(-np.sum(np.logaddexp(0.0, -z)))
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    log_p = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return float(np.sum(log_p[np.arange(len(y_idx)), y_idx]))
