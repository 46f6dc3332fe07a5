"""The evidence (type-II maximum likelihood) loop of every estimator.

E-step: the posterior mean and, for the iterative solvers, ``k`` posterior
samples, solved as one block of right-hand sides of
``H = alpha Phi^T W Phi + A`` warm-started from the previous step (the exact
solver answers from its factorisation instead). M-step: MacKay's fixed-point
updates of the noise precision ``alpha`` and of one prior precision
``lambda_g`` per parameter group (see the design page of the documentation),
with Gamma hyperpriors.

What differs between the estimators is a parameter of :func:`fit_evidence`:
the parameter groups and a fixed per-parameter prior scale (the linear
model: one group, a scalar prior), which hyperparameters are tuned, the
hyperpriors, a band that keeps ``lambda`` within reach of the curvature (the
Laplace estimators, whose networks may saturate), the stop rule
(BayesianRidge's coefficient change, or the hyperparameters' relative change)
and which unbiased estimates of the effective dimension are combined.

The random draws behind the samples are made once and rescaled when the
hyperparameters change, so successive right-hand sides move smoothly and the
warm starts stay close.
"""

import warnings
from dataclasses import dataclass, field, replace

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ._backend import create, scalar, to_numpy
from .posterior import Posterior, warn_if_stopped_short
from .solvers import SOLVERS, ExactFactorization, PosteriorPrecision, SampleDraws
from .solvers.exact import PosteriorMean, group_sums

__all__ = [
    "EvidenceResult",
    "fit_evidence",
    "estimate_effective_dims",
    "expand_prior",
    "min_variance_mean",
    "spanned_inverse_diagonal",
    "warn_if_unconverged",
]


@dataclass
class EvidenceResult:
    """Outcome of :func:`fit_evidence`.

    Attributes
    ----------
    coef : array of shape (d,)
        Posterior mean at the final hyperparameters.
    samples : array of shape (d, k) or None
        Zero-mean posterior draws ``z_j ~ N(0, H^-1)`` (iterative solvers,
        or the exact solver with ``exact_samples``).
    alpha : float
        Final noise precision.
    lambdas : ndarray of shape (n_groups,)
        Final prior precision per group.
    gammas : ndarray of shape (n_groups,)
        Effective number of parameters per group at the final
        hyperparameters (exact for the exact solver, a sample estimate
        otherwise).
    n_iter : int
        Evidence iterations performed.
    converged : bool
        Whether the stop rule was met.
    scores : list of float
        Log evidence at each iteration and at the end (if requested).
    posterior : Posterior
        The posterior at the final hyperparameters.
    solver_results : list of SolverResult
        One per iterative solve, without the solutions (empty for exact).
    """

    coef: object
    samples: object
    alpha: float
    lambdas: np.ndarray
    gammas: np.ndarray
    n_iter: int
    converged: bool
    scores: list
    posterior: Posterior
    solver_results: list = field(default_factory=list)

    @property
    def lambda_(self):
        """The prior precision of the first group (the only one of a scalar prior)."""
        return float(self.lambdas[0])

    @property
    def effective_dim(self):
        """Total effective number of parameters."""
        return float(np.sum(self.gammas))


def warn_if_unconverged(result, *, solver, solver_tol, max_iter, tol):
    """Warn (ConvergenceWarning) if the fit's last solve stopped short or the evidence updates did not settle."""
    warn_if_stopped_short(result.solver_results[-1:], solver, solver_tol)
    if not result.converged and max_iter > 1:
        warnings.warn(
            f"The evidence updates did not converge within max_iter={max_iter} iterations (tol={tol:g}); "
            f"increase max_iter.",
            ConvergenceWarning,
        )


def expand_prior(lambdas, groups, scale, xp, dtype, device_=None):
    """``A_jj = lambda_{g(j)} c_j`` as a (d,) array."""
    parts = [create(xp, "full", (b - a,), float(lam), dtype=dtype, device_=device_) for lam, (a, b) in zip(lambdas, groups)]
    A = xp.concat(parts)
    return A if scale is None else A * scale


def estimate_effective_dims(system, samples, data_images, draws, rhs=None, groups=None, noise_estimate=True):
    """Estimate ``gamma_g = Tr_g(H^-1 M)``, ``M = alpha Phi^T W Phi``, per group from posterior samples.

    Each draw ``z_j = H^-1 r_j`` gives unbiased estimates. With ``r_i`` the
    eigenvalues of ``H^-1 M`` (each in [0, 1)):

    - ``a_j = z_j^T M z_j`` (per group ``z_g^T (M z)_g``, which costs one
      more pass), variance ``2 sum r_i^2``: small when few directions are
      determined by the data;
    - ``b_j = |g| - z_g^T A_g z_g``, variance about ``2 sum (1 - r_i)^2``
      over the parameters: small when nearly all are;
    - with one group and ``noise_estimate``,
      ``c_j = n - xi_j^T (xi_j - sqrt(alpha) W^1/2 Phi z_j)``, with ``xi_j``
      the data noise behind ``r_j``: the same sum over the n observations,
      small when nearly every observation is fitted (``gamma`` close to
      ``n``, where the noise update ``n - gamma`` needs it most).

    The affine combination with the smallest empirical variance is used.
    When the right-hand sides ``Y`` span the whole parameter space (more
    samples than parameters), ``H^-1 = Z Y^+`` is known and gamma is exact.

    Parameters
    ----------
    system : PosteriorPrecision
    samples : array of shape (d, k)
        Zero-mean posterior draws ``Z = H^-1 Y``.
    data_images : array of shape (n, k)
        ``W^1/2 Phi Z``.
    draws : SampleDraws
        The draws behind ``Y``.
    rhs : array of shape (d, k), optional
        The right-hand sides ``Y``.
    groups : list of (int, int), optional
        Parameter groups (one when None).
    noise_estimate : bool, default=True
        Combine the third estimate ``c`` too (one group only).

    Returns
    -------
    gammas : ndarray of shape (n_groups,)
    """
    xp = system.xp
    d, k = samples.shape
    n = data_images.shape[0]
    prior, alpha = system.prior, system.alpha
    scalar_prior = np.ndim(prior) == 0
    groups = [(0, d)] if groups is None else groups
    sizes = np.array([b - a for a, b in groups], dtype=np.float64)
    diag = None if rhs is None else spanned_inverse_diagonal(samples, rhs)
    if diag is not None:
        # H^-1 known exactly: gamma_g = |g| - sum_{j in g} A_jj (H^-1)_jj.
        if scalar_prior:
            return np.array([float(d - prior * np.sum(diag))])
        Ad = to_numpy(prior) * diag
        return sizes - np.array([np.sum(Ad[a:b]) for a, b in groups])
    if len(groups) == 1:
        a = to_numpy(alpha * xp.sum(data_images * data_images, axis=0))[None, :]
    else:
        w_images = data_images if system.sqrt_weights is None else data_images * system.sqrt_weights[:, None]
        a = to_numpy(group_sums(samples * (alpha * system.features.rmatmat(w_images)), groups, xp))
    if scalar_prior:
        b = (d - prior * to_numpy(xp.sum(samples * samples, axis=0)))[None, :]
    else:
        b = sizes[:, None] - to_numpy(group_sums(prior[:, None] * samples * samples, groups, xp))
    if noise_estimate and len(groups) == 1:
        xi = draws.xi
        c = n - to_numpy(xp.sum(xi * xi, axis=0) - alpha**0.5 * xp.sum(xi * data_images, axis=0))
        if k < 2:
            return a[:, 0]
        # gamma lies in [0, min(n, d)]; a noisy estimate must not leave it.
        return np.array([np.clip(min_variance_mean(np.stack([a[0], b[0], c], axis=1)), 0.0, min(n, d))])
    if k < 2:
        gammas = a[:, 0]
    else:
        gammas = np.array([min_variance_mean(np.stack([a[g], b[g]], axis=1)) for g in range(len(groups))])
    return np.clip(gammas, 0.0, sizes)


def min_variance_mean(estimates):
    """Mean of the affine combination of unbiased estimates with the smallest empirical variance.

    Parameters
    ----------
    estimates : array of shape (k, m)
        ``k`` draws of ``m`` unbiased estimates of one quantity (k >= 2).

    Returns
    -------
    float
        ``mean(estimates @ w)`` with ``sum(w) = 1`` minimising the
        empirical variance of ``estimates @ w``.
    """
    m = estimates.shape[1]
    cov = np.cov(estimates, rowvar=False, bias=True).reshape(m, m)
    # A ridge of relative size 1e-10 keeps a zero-variance (exact) estimate usable.
    cov = cov + 1e-10 * max(np.trace(cov), np.finfo(float).tiny) * np.eye(m)
    weights = np.linalg.solve(cov, np.ones(m))
    weights /= weights.sum()
    return float(np.mean(estimates @ weights))


def spanned_inverse_diagonal(samples, rhs):
    """``diag(H^-1)`` from ``Z = H^-1 Y`` when the right-hand sides ``Y`` span the space.

    With more right-hand sides than parameters (and ``Y Y^T`` well
    conditioned), ``H^-1 = Z Y^+ = Z Y^T (Y Y^T)^-1`` is known exactly from
    the solves.

    Parameters
    ----------
    samples : array of shape (d, k)
        ``Z``.
    rhs : array of shape (d, k)
        ``Y``.

    Returns
    -------
    ndarray of shape (d,) or None
        On the host; None when ``k <= d`` or ``Y Y^T`` is ill-conditioned.
    """
    d, k = samples.shape
    if k <= d:
        return None
    Y = to_numpy(rhs)
    gram = Y @ Y.T
    if np.linalg.cond(gram) >= 1e8:
        return None
    # (Z Y^T G^-1)_ii with G = Y Y^T symmetric.
    return np.sum(to_numpy(samples) * np.linalg.solve(gram, Y), axis=1)


def log_evidence(n_eff, d, alpha, lam, sse, coef_sq, logdet, priors):
    """Log marginal likelihood with BayesianRidge's Gamma hyperpriors."""
    alpha_1, alpha_2, lambda_1, lambda_2 = priors
    score = lambda_1 * np.log(lam) - lambda_2 * lam
    score += alpha_1 * np.log(alpha) - alpha_2 * alpha
    score += 0.5 * (
        d * np.log(lam) + n_eff * np.log(alpha) - alpha * sse - lam * coef_sq - logdet - n_eff * np.log(2 * np.pi)
    )
    return float(score)


def fit_evidence(
    features,
    targets=None,
    *,
    mean_rhs=None,
    sqrt_weights=None,
    n_eff=None,
    groups=None,
    prior_scale=None,
    solver="exact",
    n_samples=16,
    alpha_init,
    lambda_init,
    tune_alpha=True,
    tune_lambda=True,
    priors=(1e-6, 1e-6, 1e-6, 1e-6),
    lambda_band=None,
    stop="coef",
    noise_estimate=True,
    exact_samples=False,
    max_iter=300,
    tol=1e-3,
    compute_score=False,
    rng,
    solver_options=None,
    warm=None,
    logdet=None,
    callback=None,
):
    """Run the evidence loop and return an :class:`EvidenceResult`.

    Parameters
    ----------
    features : FeatureOperator
        ``Phi`` (n x d), centred by the caller if it fits an intercept.
    targets : array of shape (n,), optional
        Targets of the noise update and, when ``mean_rhs`` is None, of the
        mean's right-hand side ``alpha Phi^T W y``.
    mean_rhs : callable, optional
        ``mean_rhs(alpha) -> array (d, 1)``: the right-hand side of the mean
        when it is not ``alpha Phi^T W targets`` (the classifier's Newton step).
    sqrt_weights : array of shape (n,), optional
    n_eff : float, optional
        Number of observations in the noise update (the sum of the weights;
        ``n`` when None).
    groups : list of (int, int), optional
        Parameter groups sharing one ``lambda`` (tiling ``0..d``). None: one
        scalar ``lambda`` (``A = lambda I``); otherwise ``A`` is a diagonal.
    prior_scale : array of shape (d,), optional
        Fixed scale ``c`` of ``A_jj = lambda_g(j) c_j`` (with ``groups``).
    solver : {'exact', 'cg', 'sgd'}
    n_samples : int
        Posterior samples solved alongside the mean (iterative solvers).
    alpha_init : float
    lambda_init : float or array-like of shape (n_groups,)
    tune_alpha, tune_lambda : bool, default=True
        Which hyperparameters the M-step updates (neither: one E-step).
    priors : tuple
        ``(alpha_1, alpha_2, lambda_1, lambda_2)`` of the Gamma hyperpriors.
    lambda_band : tuple (low, high), optional
        Keep ``lambda`` within ``[low, high]`` times the mean curvature
        ``alpha mean_j diag(Phi^T W Phi)_j``, so that ``H`` stays numerically
        positive definite on degenerate fits (a network saturated on its
        training data, whose curvature vanishes).
    stop : {'coef', 'hyperparameters'}, default='coef'
        ``'coef'``: BayesianRidge's rule, the L1 change of the mean below
        ``tol`` after the first step (the iterative solvers also need the
        hyperparameters' relative change below ``tol``, as a warm-started
        solve may leave the mean unchanged while they move).
        ``'hyperparameters'``: every hyperparameter's relative change below ``tol``.
    noise_estimate : bool, default=True
        Use the data-noise estimate of gamma too (see :func:`estimate_effective_dims`).
    exact_samples : bool, default=False
        Also draw ``n_samples`` exact posterior samples at the end (exact solver).
    max_iter, tol : int, float
    compute_score : bool
        Record the log evidence (scalar prior).
    rng : numpy.random.RandomState
    solver_options : dict, optional
        Passed to the iterative solver.
    warm : tuple (coef, samples), optional
        Initial iterates.
    logdet : callable, optional
        ``logdet(system) -> float`` for the scores of iterative solvers.
    callback : callable, optional
        Called as ``callback(iteration, alpha, lambda, gamma, solver_result)``
        (``lambda`` one number for one group, else one per group).

    Returns
    -------
    EvidenceResult
    """
    xp = features.xp
    n, d = features.shape
    w = None if sqrt_weights is None else sqrt_weights**2
    n_eff = float(n) if n_eff is None else n_eff
    scalar_prior = groups is None
    group_list = [(0, d)] if scalar_prior else list(groups)
    lambdas = np.asarray(lambda_init, dtype=np.float64).reshape(-1)
    if lambdas.size == 1:
        lambdas = np.full(len(group_list), float(lambdas[0]))
    alpha = float(alpha_init)
    if mean_rhs is None:
        b = features.rmatmat((targets if w is None else w * targets)[:, None])

        def mean_rhs(alpha):
            return alpha * b

    def prior_of(lambdas):
        if scalar_prior:
            return float(lambdas[0])
        return expand_prior(lambdas, group_list, prior_scale, xp, features.dtype, features.device)

    system = PosteriorPrecision(features, alpha, prior_of(lambdas), sqrt_weights)
    exact = solver == "exact"
    options = dict(solver_options or {})
    if exact:
        fact, draws = ExactFactorization(features, sqrt_weights), None
    else:
        fact, draws = None, SampleDraws(system, n_samples, rng)
        solve = SOLVERS[solver]
        solve_options = dict(options, random_state=rng) if solver == "sgd" else options
    if lambda_band is not None:
        # A saturated network has B ~ 0: gamma -> 0 and the bare update drives
        # lambda to where H is numerically singular. A wide band around the
        # mean curvature keeps H factorisable without touching a sensible
        # fixed point.
        curvature = float(np.mean(to_numpy(features.col_sq_norms(w))))
        curvature = curvature if np.isfinite(curvature) and curvature > 0 else 1.0

    coef, samples = (None, None) if warm is None else warm
    results, scores = [], []

    def e_step(system):
        """Solve at the system's hyperparameters; return (SolverResult or None, mean, sse, gammas)."""
        nonlocal coef, samples
        alpha, prior = system.alpha, system.prior
        rhs_mean = mean_rhs(alpha)
        if exact:
            mean = fact.posterior_mean(alpha, prior, rhs_mean, y=targets)
            gammas = fact.effective_dims(alpha, prior, None if scalar_prior else group_list)
            sse = mean.sse
            if sse is None and (tune_alpha or compute_score):
                sse = _weighted_sse(xp, targets - features.matmat(mean.coef[:, None])[:, 0], w)
            return None, mean, sse, gammas
        sample_rhs = draws.rhs(alpha, prior)
        x0_mean = xp.zeros_like(rhs_mean) if coef is None else coef[:, None]
        # theta_n = A^-1 r: the low-curvature directions start at their optimum.
        x0_samples = system.prior_solve(sample_rhs) if samples is None else samples
        res = solve(system, xp.concat([rhs_mean, sample_rhs], axis=1), xp.concat([x0_mean, x0_samples], axis=1), **solve_options)
        coef, samples = res.solution[:, 0], res.solution[:, 1:]
        # One pass over Phi: the residual and the samples' data images.
        P = features.matmat(res.solution)
        sse = _weighted_sse(xp, targets - P[:, 0], w) if targets is not None else None
        images = P[:, 1:] if w is None else P[:, 1:] * sqrt_weights[:, None]
        gammas = estimate_effective_dims(
            system, samples, images, draws, sample_rhs, None if scalar_prior else group_list, noise_estimate
        )
        return res, PosteriorMean(coef), sse, gammas

    def score(system, mean, sse):
        ld = fact.logdet(system.alpha, system.prior) if exact else logdet(system)
        return log_evidence(n_eff, d, system.alpha, system.prior, sse, mean.coef_sq, ld, priors)

    alpha_1, alpha_2, lambda_1, lambda_2 = priors
    converged = False
    mean_old = None
    it = 0
    n_steps = max_iter if (tune_alpha or tune_lambda) else 0
    for it in range(n_steps):
        res, mean, sse, gammas = e_step(system)
        if res is not None:
            # Only the diagnostics are kept: the solutions are d x (k + 1) each.
            results.append(replace(res, solution=None))
        if compute_score:
            scores.append(score(system, mean, sse))
        if callback is not None:
            callback(it, alpha, lambdas[0] if len(lambdas) == 1 else lambdas.copy(), float(np.sum(gammas)), res)
        new_lambdas, new_alpha = lambdas, alpha
        if tune_lambda:
            if scalar_prior:
                sq = mean.coef_sq
            else:
                c2 = mean.coef * mean.coef
                sq = to_numpy(group_sums(c2 if prior_scale is None else prior_scale * c2, group_list, xp))
            new_lambdas = (gammas + 2 * lambda_1) / (sq + 2 * lambda_2)
            if lambda_band is not None:
                new_lambdas = np.clip(new_lambdas, lambda_band[0] * alpha * curvature, lambda_band[1] * alpha * curvature)
        if tune_alpha:
            gamma = float(np.sum(gammas))
            new_alpha = (n_eff - gamma + 2 * alpha_1) / (sse + 2 * alpha_2)
            if not new_alpha > 0:
                raise ValueError(
                    f"The noise update needs the sum of the sample weights ({n_eff:.6g}) to exceed the "
                    f"effective number of parameters ({gamma:.6g}); scale the sample weights up."
                )
        change = max(float(np.max(np.abs(new_lambdas / lambdas - 1))), abs(new_alpha / alpha - 1))
        lambdas, alpha = new_lambdas, float(new_alpha)
        system = system.with_hyperparameters(alpha, prior_of(lambdas))
        if stop == "coef":
            # An iterative solve whose warm start already meets its tolerance
            # leaves the mean unchanged although alpha and lambda moved, so for
            # those solvers the hyperparameters must also have settled.
            done = it != 0 and (exact or change < tol) and mean.l1_change(mean_old, tol) < tol
        else:
            done = change < tol
        if done:
            converged = True
            break
        mean_old = mean

    res, mean, sse, gammas = e_step(system)
    if res is not None:
        results.append(res)
    if compute_score:
        scores.append(score(system, mean, sse))
    coef = mean.coef
    posterior = Posterior(system, coef, solver=solver, solver_options=options, factorization=fact, samples=samples)
    if exact and exact_samples:
        samples = posterior.samples = posterior.sample(n_samples, rng)
    return EvidenceResult(
        coef=coef,
        samples=samples,
        alpha=alpha,
        lambdas=lambdas,
        gammas=gammas,
        n_iter=(it + 1) if n_steps else 0,
        converged=converged or n_steps == 0,
        scores=scores,
        posterior=posterior,
        solver_results=results,
    )


def _weighted_sse(xp, r, w):
    """``sum_i w_i r_i^2``."""
    return scalar(xp.sum(r * r if w is None else w * r * r))
