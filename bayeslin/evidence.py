"""The evidence (type-II maximum likelihood) loop shared by every solver.

E-step: solve for the posterior mean and ``k`` posterior samples as one block
of right-hand sides of ``H``, warm-started from the previous step. M-step:
MacKay's fixed-point updates of the noise precision ``alpha`` and the prior
precision ``lambda`` (DESIGN.md section 2), the same updates and the same
convergence test as scikit-learn's BayesianRidge.

The random draws behind the samples are made once and rescaled when
``alpha`` and ``lambda`` change, so successive right-hand sides move smoothly
and the warm starts stay close.
"""

from dataclasses import dataclass, field

import numpy as np

from ._backend import scalar, standard_normal, to_numpy
from .solvers import SOLVERS, PosteriorPrecision, SolverResult, exact_factorization

__all__ = ["EvidenceResult", "fit_evidence", "estimate_effective_dim", "SampleDraws"]


@dataclass
class EvidenceResult:
    """Outcome of :func:`fit_evidence`.

    Attributes
    ----------
    coef : array of shape (d,)
        Posterior mean at the final hyperparameters.
    samples : array of shape (d, k) or None
        Zero-mean posterior draws ``z_j ~ N(0, H^-1)`` (iterative solvers).
    alpha, lambda_ : float
        Final noise and prior precisions.
    effective_dim : float
        ``gamma = Tr(H^-1 alpha Phi^T W Phi)`` at the final hyperparameters
        (exact for the exact solver, a sample estimate otherwise).
    n_iter : int
        Evidence iterations performed.
    converged : bool
        Whether the coefficient change fell below ``tol``.
    scores : list of float
        Log evidence at each iteration and at the end (if requested).
    system : PosteriorPrecision
        The posterior precision at the final hyperparameters.
    solver_results : list of SolverResult
        The last solve (the one the outputs come from) is the last entry.
    """

    coef: object
    samples: object
    alpha: float
    lambda_: float
    effective_dim: float
    n_iter: int
    converged: bool
    scores: list
    system: PosteriorPrecision
    solver_results: list = field(default_factory=list)


class SampleDraws:
    """Fixed standard normal draws behind sample-then-optimise right-hand sides.

    A zero-mean posterior sample is ``z = H^-1 r`` with
    ``r = A theta_0 + Phi^T W^1/2 (sqrt(alpha) xi) ~ N(0, H)``; with
    ``theta_0 = lambda^-1/2 g``, ``r = sqrt(lambda) g + sqrt(alpha) Phi^T W^1/2 xi``.
    ``g`` and ``Phi^T W^1/2 xi`` are kept, so a new ``(alpha, lambda)`` only
    rescales them.

    Parameters
    ----------
    system : PosteriorPrecision
    n_samples : int
    rng : numpy.random.RandomState
    """

    def __init__(self, system, n_samples, rng):
        xp, F = system.xp, system.features
        n, d = F.shape
        like = getattr(F, "X", None)
        self.prior_noise = standard_normal(rng, (d, n_samples), xp, system.dtype, like)
        xi = standard_normal(rng, (n, n_samples), xp, system.dtype, like)
        if system.sqrt_weights is not None:
            xi = xi * system.sqrt_weights[:, None]
        self.data_noise = F.rmatmat(xi)

    def rhs(self, alpha, prior):
        """Return the right-hand sides ``r_j`` at ``(alpha, prior)``, shape (d, k)."""
        sqrt_prior = prior**0.5 if np.ndim(prior) == 0 else (prior**0.5)[:, None]
        return sqrt_prior * self.prior_noise + alpha**0.5 * self.data_noise


def estimate_effective_dim(system, samples, data_sq_norms, rhs=None):
    """Estimate ``gamma = Tr(H^-1 M)``, ``M = alpha Phi^T W Phi``, from posterior samples.

    Two unbiased per-sample estimates are combined: ``a_j = z_j^T M z_j``
    (DESIGN.md; its variance ``2 sum r_i^2`` is small when few directions are
    determined by the data) and ``b_j = d - lambda ||z_j||^2`` (variance
    ``2 sum (1 - r_i)^2``, small when most are), where ``r_i`` are the
    eigenvalues of ``H^-1 M``. The weight minimising the empirical variance
    of the combination is used, so the estimate is good in both regimes.

    When the right-hand sides ``Y`` span the whole parameter space (more
    samples than parameters), ``H^-1 = Z Y^+`` is known and gamma is exact.

    Parameters
    ----------
    system : PosteriorPrecision
        With a scalar prior.
    samples : array of shape (d, k)
        Zero-mean posterior draws ``Z = H^-1 Y``.
    data_sq_norms : array of shape (k,)
        ``alpha * ||W^1/2 Phi z_j||^2`` for each draw.
    rhs : array of shape (d, k), optional
        The right-hand sides ``Y`` the draws solve.

    Returns
    -------
    gamma : float
    """
    xp = system.xp
    d, k = samples.shape
    lam = system.prior
    if rhs is not None and k > d:
        Y = to_numpy(rhs)
        gram = Y @ Y.T
        if np.linalg.cond(gram) < 1e8:
            return float(d - lam * np.trace(np.linalg.solve(gram, to_numpy(samples) @ Y.T)))
    a = to_numpy(data_sq_norms)
    b = d - lam * to_numpy(xp.sum(samples * samples, axis=0))
    if k < 2:
        return float(a.mean())
    diff = a - b
    var_diff = np.var(diff)
    beta = 0.5 if var_diff <= 0 else float(np.clip(-np.cov(b, diff, bias=True)[0, 1] / var_diff, 0.0, 1.0))
    return float(np.mean(b + beta * diff))


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
    y,
    *,
    sqrt_weights=None,
    n_eff,
    solver="exact",
    n_samples=16,
    alpha_init,
    lambda_init,
    priors=(1e-6, 1e-6, 1e-6, 1e-6),
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
        Centred features ``Phi`` (n x d).
    y : array of shape (n,)
        Centred targets.
    sqrt_weights : array of shape (n,), optional
    n_eff : float
        Number of observations in the noise update (the sum of the weights).
    solver : {'exact', 'cg', 'sgd'}
    n_samples : int
        Posterior samples solved alongside the mean (iterative solvers).
    alpha_init, lambda_init : float
    priors : tuple
        ``(alpha_1, alpha_2, lambda_1, lambda_2)``.
    max_iter, tol : int, float
        BayesianRidge's: stop when the L1 change of the coefficients is < tol.
    compute_score : bool
    rng : numpy.random.RandomState
    solver_options : dict, optional
        Passed to the solver.
    warm : tuple (coef, samples), optional
        Initial iterates.
    logdet : callable, optional
        ``logdet(system) -> float`` for the scores of iterative solvers.
    callback : callable, optional
        Called as ``callback(iteration, alpha, lambda, gamma, solver_result)``.

    Returns
    -------
    EvidenceResult
    """
    xp = features.xp
    n, d = features.shape
    options = dict(solver_options or {})
    w = None if sqrt_weights is None else sqrt_weights**2
    wy = y if w is None else w * y
    b = features.rmatmat(wy[:, None])
    alpha, lam = float(alpha_init), float(lambda_init)
    system = PosteriorPrecision(features, alpha, lam, sqrt_weights)
    exact = solver == "exact"
    solve = SOLVERS[solver]
    if exact:
        fact = exact_factorization(system)
        draws = None
    else:
        draws = SampleDraws(system, n_samples, rng)
        if solver == "sgd":
            options.setdefault("random_state", rng)

    coef, samples = (None, None) if warm is None else warm
    last_rhs = [None]
    results, scores = [], []

    def e_step(system):
        nonlocal coef, samples
        mean_rhs = system.alpha * b
        if exact:
            coef = fact.posterior_mean(system.alpha, system.prior, y, mean_rhs)[:, 0]
            return SolverResult(coef[:, None], 0, np.zeros(1), True, {"kind": fact.kind}), fact.effective_dim(
                system.alpha, system.prior
            )
        sample_rhs = draws.rhs(system.alpha, system.prior)
        last_rhs[0] = sample_rhs
        rhs = xp.concat([mean_rhs, sample_rhs], axis=1)
        x0_mean = xp.zeros_like(mean_rhs) if coef is None else coef[:, None]
        # theta_n = A^-1 r: the low-curvature directions start at their optimum.
        x0_samples = system.prior_solve(sample_rhs) if samples is None else samples
        res = solve(system, rhs, xp.concat([x0_mean, x0_samples], axis=1), **options)
        coef, samples = res.solution[:, 0], res.solution[:, 1:]
        return res, None

    converged = False
    coef_old = None
    for it in range(max_iter):
        res, gamma = e_step(system)
        results.append(res)
        sse, gamma_est = _residual_and_gamma(system, y, w, coef, samples, last_rhs[0])
        gamma = gamma_est if gamma is None else gamma
        if compute_score:
            ld = fact.logdet(alpha, lam) if exact else logdet(system)
            scores.append(log_evidence(n_eff, d, alpha, lam, sse, scalar(xp.sum(coef * coef)), ld, priors))
        if callback is not None:
            callback(it, alpha, lam, gamma, res)
        alpha_1, alpha_2, lambda_1, lambda_2 = priors
        lam = (gamma + 2 * lambda_1) / (scalar(xp.sum(coef * coef)) + 2 * lambda_2)
        alpha = (n_eff - gamma + 2 * alpha_1) / (sse + 2 * alpha_2)
        system = system.with_hyperparameters(alpha, lam)
        if it != 0 and scalar(xp.sum(xp.abs(coef_old - coef))) < tol:
            converged = True
            break
        coef_old = xp.asarray(coef, copy=True)

    res, gamma = e_step(system)
    results.append(res)
    sse, gamma_est = _residual_and_gamma(system, y, w, coef, samples, last_rhs[0])
    gamma = gamma_est if gamma is None else gamma
    if compute_score:
        ld = fact.logdet(alpha, lam) if exact else logdet(system)
        scores.append(log_evidence(n_eff, d, alpha, lam, sse, scalar(xp.sum(coef * coef)), ld, priors))
    return EvidenceResult(
        coef=coef,
        samples=samples,
        alpha=alpha,
        lambda_=lam,
        effective_dim=gamma,
        n_iter=it + 1,
        converged=converged,
        scores=scores,
        system=system,
        solver_results=results,
    )


def _residual_and_gamma(system, y, w, coef, samples, rhs):
    """One pass over ``Phi``: the weighted residual sum of squares and, from the samples, gamma."""
    xp = system.xp
    F = system.features
    if samples is None:
        r = y - F.matmat(coef[:, None])[:, 0]
        return scalar(xp.sum(r * r if w is None else w * r * r)), None
    P = F.matmat(xp.concat([coef[:, None], samples], axis=1))
    r = y - P[:, 0]
    Pz = P[:, 1:]
    if w is not None:
        Pz = Pz * w[:, None] ** 0.5
    sse = scalar(xp.sum(r * r if w is None else w * r * r))
    gamma = estimate_effective_dim(system, samples, system.alpha * xp.sum(Pz * Pz, axis=0), rhs)
    return sse, gamma
