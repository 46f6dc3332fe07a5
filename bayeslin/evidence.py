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

from dataclasses import dataclass, field, replace

import numpy as np

from ._backend import get_namespace, scalar, standard_normal, to_numpy
from .solvers import SOLVERS, PosteriorPrecision, SolverResult, exact_factorization

__all__ = [
    "EvidenceResult",
    "fit_evidence",
    "estimate_effective_dim",
    "min_variance_mean",
    "spanned_inverse_diagonal",
    "SampleDraws",
]


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
        One per solve, without the solutions; the last is the solve the
        outputs come from.
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
    ``g``, ``xi`` and ``Phi^T W^1/2 xi`` are kept, so a new ``(alpha, lambda)``
    only rescales them (and ``xi`` feeds one of the estimates of gamma).

    Parameters
    ----------
    system : PosteriorPrecision
    n_samples : int
    rng : numpy.random.RandomState
    """

    def __init__(self, system, n_samples, rng):
        xp, F = system.xp, system.features
        n, d = F.shape
        self.prior_noise = standard_normal(rng, (d, n_samples), xp, system.dtype, F.device)
        self.xi = standard_normal(rng, (n, n_samples), xp, system.dtype, F.device)
        wxi = self.xi if system.sqrt_weights is None else self.xi * system.sqrt_weights[:, None]
        self.data_noise = F.rmatmat(wxi)

    def rhs(self, alpha, prior):
        """Return the right-hand sides ``r_j`` at ``(alpha, prior)``, shape (d, k)."""
        sqrt_prior = prior**0.5 if np.ndim(prior) == 0 else (prior**0.5)[:, None]
        return sqrt_prior * self.prior_noise + alpha**0.5 * self.data_noise


def estimate_effective_dim(system, samples, data_images, draws, rhs=None):
    """Estimate ``gamma = Tr(H^-1 M)``, ``M = alpha Phi^T W Phi``, from posterior samples.

    Each draw ``z_j = H^-1 r_j`` gives three unbiased estimates. With
    ``r_i`` the eigenvalues of ``H^-1 M`` (each in [0, 1)):

    - ``a_j = alpha ||W^1/2 Phi z_j||^2`` (DESIGN.md), variance
      ``2 sum r_i^2``: small when few directions are determined by the data;
    - ``b_j = d - lambda ||z_j||^2``, variance about ``2 sum (1 - r_i)^2``
      over the d parameters: small when nearly all are;
    - ``c_j = n - xi_j^T (xi_j - sqrt(alpha) W^1/2 Phi z_j)``, with ``xi_j``
      the data noise behind ``r_j``: the same sum over the n observations,
      small when nearly every observation is fitted (``gamma`` close to
      ``n``, where the noise update ``n - gamma`` needs it most).

    The affine combination with the smallest empirical variance is used.
    When the right-hand sides ``Y`` span the whole parameter space (more
    samples than parameters), ``H^-1 = Z Y^+`` is known and gamma is exact.

    Parameters
    ----------
    system : PosteriorPrecision
        With a scalar prior.
    samples : array of shape (d, k)
        Zero-mean posterior draws ``Z = H^-1 Y``.
    data_images : array of shape (n, k)
        ``W^1/2 Phi Z``.
    draws : SampleDraws
        The draws behind ``Y``.
    rhs : array of shape (d, k), optional
        The right-hand sides ``Y``.

    Returns
    -------
    gamma : float
    """
    xp = system.xp
    d, k = samples.shape
    n = data_images.shape[0]
    lam, alpha = system.prior, system.alpha
    diag = None if rhs is None else spanned_inverse_diagonal(samples, rhs)
    if diag is not None:
        return float(d - lam * np.sum(diag))
    xi = draws.xi
    estimates = np.stack(
        [
            to_numpy(alpha * xp.sum(data_images * data_images, axis=0)),
            d - lam * to_numpy(xp.sum(samples * samples, axis=0)),
            n - to_numpy(xp.sum(xi * xi, axis=0) - alpha**0.5 * xp.sum(xi * data_images, axis=0)),
        ],
        axis=1,
    )
    if k < 2:
        return float(estimates[0, 0])
    # gamma lies in [0, min(n, d)]; a noisy estimate must not leave it.
    return float(np.clip(min_variance_mean(estimates), 0.0, min(n, d)))


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
        BayesianRidge's: stop when the L1 change of the coefficients is < tol
        (iterative solvers: and the relative change of alpha and lambda).
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
    results, scores = [], []
    if exact and fact.kind == "dual":
        # The whole loop runs in the kernel's eigenbasis: O(n) per step.
        y_basis = fact.basis.to_basis((y if sqrt_weights is None else y * sqrt_weights)[:, None])[:, 0]

    def e_step(system):
        """Solve at the system's hyperparameters; return (SolverResult, mean, gamma)."""
        nonlocal coef, samples
        alpha, prior = system.alpha, system.prior
        mean_rhs = alpha * b
        if exact:
            gamma = fact.effective_dim(alpha, prior)
            if fact.kind == "dual":
                return _DIRECT, _SpectralMean(fact, y_basis, alpha, prior), gamma
            coef = fact.posterior_mean(alpha, prior, y, mean_rhs)[:, 0]
            sse = _weighted_sse(system, y, w, features.matmat(coef[:, None])[:, 0])
            return _DIRECT, _Mean(coef, sse), gamma
        sample_rhs = draws.rhs(alpha, prior)
        rhs = xp.concat([mean_rhs, sample_rhs], axis=1)
        x0_mean = xp.zeros_like(mean_rhs) if coef is None else coef[:, None]
        # theta_n = A^-1 r: the low-curvature directions start at their optimum.
        x0_samples = system.prior_solve(sample_rhs) if samples is None else samples
        res = solve(system, rhs, xp.concat([x0_mean, x0_samples], axis=1), **options)
        coef, samples = res.solution[:, 0], res.solution[:, 1:]
        sse, gamma = _residual_and_gamma(system, y, w, coef, samples, sample_rhs, draws)
        return res, _Mean(coef, sse), gamma

    def score(alpha, lam, mean):
        ld = fact.logdet(alpha, lam) if exact else logdet(system)
        return log_evidence(n_eff, d, alpha, lam, mean.sse, mean.coef_sq, ld, priors)

    alpha_1, alpha_2, lambda_1, lambda_2 = priors
    converged = False
    mean_old = None
    for it in range(max_iter):
        res, mean, gamma = e_step(system)
        # Only the diagnostics are kept: the solutions are d x (k + 1) each.
        results.append(replace(res, solution=None))
        if compute_score:
            scores.append(score(alpha, lam, mean))
        if callback is not None:
            callback(it, alpha, lam, gamma, res)
        lam = (gamma + 2 * lambda_1) / (mean.coef_sq + 2 * lambda_2)
        alpha = (n_eff - gamma + 2 * alpha_1) / (mean.sse + 2 * alpha_2)
        if not alpha > 0:
            raise ValueError(
                f"The noise update needs the sum of the sample weights ({n_eff:.6g}) to exceed the "
                f"effective number of parameters ({gamma:.6g}); scale the sample weights up."
            )
        # An iterative solve whose warm start already meets its tolerance leaves
        # coef_ unchanged although alpha and lambda moved, so for those solvers
        # the hyperparameters must also have settled (relative change < tol).
        settled = exact or max(abs(alpha / system.alpha - 1), abs(lam / system.prior - 1)) < tol
        system = system.with_hyperparameters(alpha, lam)
        if it != 0 and settled and mean.l1_change(mean_old, tol) < tol:
            converged = True
            break
        mean_old = mean

    res, mean, gamma = e_step(system)
    results.append(res)
    if compute_score:
        scores.append(score(alpha, lam, mean))
    coef = mean.coef
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


_DIRECT = SolverResult(None, 0, np.zeros(1), True, {"kind": "exact"})


class _Mean:
    """The posterior mean at one evidence step, with what the M-step needs."""

    def __init__(self, coef, sse):
        self.coef = coef
        self.sse = sse
        self.coef_sq = scalar(get_namespace(coef).sum(coef * coef))

    def l1_change(self, other, tol):
        """``||coef - other.coef||_1`` (BayesianRidge's stopping test)."""
        return scalar(get_namespace(self.coef).sum(abs(self.coef - other.coef)))


class _SpectralMean:
    """The posterior mean held by its coordinates in the kernel's eigenbasis (dual exact).

    With ``t = V^T W^1/2 y`` and ``c = lambda / alpha``, the dual
    coefficients are ``V w`` with ``w = t / (s + c)``: ``||coef||^2 =
    sum s w^2`` and the residual is ``V (c w)``, so an evidence step costs
    O(n). ``coef`` itself (one pass over ``Phi``) is formed only when the
    stopping test or the caller needs it.
    """

    def __init__(self, fact, t, alpha, lam):
        xp = fact.xp
        c = lam / alpha
        self.fact = fact
        self.s = fact.eigenvalues
        self.w = t / (self.s + c)
        self.coef_sq = scalar(xp.sum(self.s * self.w * self.w))
        self.sse = scalar(xp.sum((c * self.w) ** 2))
        self._coef = None

    @property
    def coef(self):
        if self._coef is None:
            self._coef = self.fact.dual_coef(self.w)
        return self._coef

    def l1_change(self, other, tol):
        """``||coef - other.coef||_1``, skipping the passes when ``||.||_2 >= tol`` already decides it."""
        xp = self.fact.xp
        dw = self.w - other.w
        l2 = scalar(xp.sum(self.s * dw * dw)) ** 0.5
        if l2 >= tol:
            return l2
        return scalar(xp.sum(xp.abs(self.coef - other.coef)))


def _weighted_sse(system, y, w, fitted):
    """``sum_i w_i (y_i - fitted_i)^2``."""
    r = y - fitted
    return scalar(system.xp.sum(r * r if w is None else w * r * r))


def _residual_and_gamma(system, y, w, coef, samples, rhs, draws):
    """One pass over ``Phi``: the weighted residual sum of squares and, from the samples, gamma."""
    xp = system.xp
    P = system.features.matmat(xp.concat([coef[:, None], samples], axis=1))
    Pz = P[:, 1:] if w is None else P[:, 1:] * w[:, None] ** 0.5
    return _weighted_sse(system, y, w, P[:, 0]), estimate_effective_dim(system, samples, Pz, draws, rhs)
