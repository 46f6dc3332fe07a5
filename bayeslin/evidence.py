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
from .operators.features import CentringPrecisionError
from .posterior import Posterior, warn_if_stopped_short
from .solvers import SOLVERS, ExactFactorization, PosteriorPrecision, SampleDraws
from .solvers.cg import NYSTROM_MIN_GAIN, auto_preconditioner
from .solvers.exact import PosteriorMean, group_sums
from .solvers.nystrom import sketch_of

__all__ = [
    "EvidenceResult",
    "exact_traces_affordable",
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
    gamma_se : ndarray of shape (n_groups,)
        Monte Carlo standard error of ``gammas`` (zeros where exact).
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
    gamma_se: np.ndarray = None

    @property
    def lambda_(self):
        """The prior precision of the first group (the only one of a scalar prior)."""
        return float(self.lambdas[0])

    @property
    def effective_dim(self):
        """Total effective number of parameters."""
        return float(np.sum(self.gammas))

    @property
    def effective_dim_se(self):
        """Monte Carlo standard error of :attr:`effective_dim` (0 when exact; groups taken as independent)."""
        return 0.0 if self.gamma_se is None else float(np.sqrt(np.sum(self.gamma_se**2)))


# The iterative path takes the effective dimension and log det H exactly from
# the spectrum of the smaller of Phi^T W Phi and W^1/2 Phi Phi^T W^1/2 when
# forming it costs at most about this many block products with H (its
# n d min(n, d) flops against 2 n d (k + 1) per product): then it is cheaper
# than one evidence step, and it removes the Monte Carlo noise that can walk
# the MacKay updates into the interpolation corner (gamma -> n, alpha -> inf).
EXACT_TRACE_PRODUCTS = 32
# A per-group prior factorises the d x d matrix H at every step (d^3 / 3
# flops): affordable while that costs at most this many block products.
STEP_FACTOR_PRODUCTS = 8


def exact_traces_affordable(features, n_samples, scalar_prior=True):
    """Whether the exact spectrum of the data term costs less than the block products of ``n_samples`` samples it replaces.

    Forming the spectrum must cost at most about ``EXACT_TRACE_PRODUCTS``
    block products of ``n_samples + 1`` columns (about one evidence step),
    and a per-parameter prior's Cholesky factor of ``H``, one per step, at
    most ``STEP_FACTOR_PRODUCTS`` of them. The loop asks first with its
    ``n_samples``, and, for a per-parameter prior, again with the grown
    sample count when the samples cannot decide a group's step (see
    :func:`fit_evidence`).

    Parameters
    ----------
    features : FeatureOperator
    n_samples : int
        Posterior samples solved alongside the mean.
    scalar_prior : bool, default=True
        A per-parameter prior needs the ``d x d`` Gram matrix (and one
        Cholesky factor per step), so ``d`` is the side that counts.

    Returns
    -------
    bool
    """
    n, d = features.shape
    if scalar_prior:
        side, needs = min(n, d), ("gram" if d <= n else "kernel")
    else:
        side, needs = d, "gram"
        # d^3 / 3 flops per step against 2 n d (k + 1) per product.
        if d * d > 6 * STEP_FACTOR_PRODUCTS * n * (n_samples + 1):
            return False
    return side <= 2 * EXACT_TRACE_PRODUCTS * (n_samples + 1) and callable(getattr(features, needs, None))


def warn_if_unconverged(result, *, solver, solver_tol, max_iter, tol):
    """Warn (ConvergenceWarning) if any solve of the fit stopped short or the evidence updates did not settle.

    Every solve counts, not only the last: the ones that drive the evidence
    updates decide where the hyperparameters land.
    """
    warn_if_stopped_short(result.solver_results, solver, solver_tol)
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


def estimate_effective_dims(
    system, samples, data_images, draws, rhs=None, groups=None, noise_estimate=True, return_se=False, control=None
):
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
      ``n``, where the noise update ``n - gamma`` needs it most);
    - with a ``control`` variate ``v_j ~ N(0, P^-1)`` drawn from the same
      noise as ``z_j``, ``P = A + M~`` with ``M~`` the curvature a Nystrom
      sketch captures (see
      :meth:`~bayeslin.solvers.nystrom.NystromApproximation.control_variate`),
      ``a`` and ``b`` with their captured parts taken exactly (the
      Nystrom++ idea): ``Tr_g(M~ P^-1) + z_g^T (M z)_g - v_g^T (M~ v)_g``
      and ``|g| - Tr_g(A P^-1) - z_g^T A_g z_g + v_g^T A_g v_g``. Only the
      uncaptured remainder carries Monte Carlo noise;
    - with a per-parameter prior (``groups``), ``a`` and ``b`` with the
      diagonal of ``H`` as a control variate (see :func:`_diagonal_control`):
      a group the prior dominates has a small ``gamma_g``, the difference of
      two large traces, which the diagonal nearly takes exactly.

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
    return_se : bool, default=False
        Also return the Monte Carlo standard error of each estimate (0 when
        exact; ``inf`` from a single sample).
    control : tuple (v, prior_diagonal, captured), optional
        Control-variate draws ``v`` (d, k) of known covariance ``P^-1``,
        ``diag(A P^-1)`` (d,) and ``M~ v`` (d, k).

    Returns
    -------
    gammas : ndarray of shape (n_groups,)
    se : ndarray of shape (n_groups,)
        Only with ``return_se``.
    """
    gammas, se = _estimate_effective_dims(system, samples, data_images, draws, rhs, groups, noise_estimate, control)
    return (gammas, se) if return_se else gammas


def _estimate_effective_dims(system, samples, data_images, draws, rhs, groups, noise_estimate, control):
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
            return np.array([float(d - prior * np.sum(diag))]), np.zeros(1)
        Ad = to_numpy(prior) * diag
        return sizes - np.array([np.sum(Ad[a:b]) for a, b in groups]), np.zeros(len(groups))
    if len(groups) == 1:
        a = to_numpy(alpha * xp.sum(data_images * data_images, axis=0))[None, :]
    else:
        w_images = data_images if system.sqrt_weights is None else data_images * system.sqrt_weights[:, None]
        a = to_numpy(group_sums(samples * (alpha * system.features.rmatmat(w_images)), groups, xp))
    if control is not None:
        v, prior_diagonal, captured = control
        # Tr_g(A P^-1): what v's part of b has in expectation (and |g| minus it, of a).
        known = to_numpy(group_sums(prior_diagonal[:, None], groups, xp))
        a_cv = a + (sizes[:, None] - known) - to_numpy(group_sums(v * captured, groups, xp))
    if scalar_prior:
        b = (d - prior * to_numpy(xp.sum(samples * samples, axis=0)))[None, :]
    else:
        b = sizes[:, None] - to_numpy(group_sums(prior[:, None] * samples * samples, groups, xp))
    extra = []
    if not scalar_prior and rhs is not None:
        extra = _diagonal_control(system, rhs, a, b, groups)
    if control is not None:
        v_sq = v * v if scalar_prior else prior[:, None] * v * v
        v_part = to_numpy(group_sums(v_sq, groups, xp)) * (prior if scalar_prior else 1.0)
        # |g| - Tr_g(A P^-1) - (z_g^T A z_g - v_g^T A v_g): unbiased, with P's part exact.
        extra += [a_cv, b - known + v_part]
    if noise_estimate and len(groups) == 1:
        xi = draws.xi
        c = n - to_numpy(xp.sum(xi * xi, axis=0) - alpha**0.5 * xp.sum(xi * data_images, axis=0))
        if k < 2:
            return a[:, 0], np.full(1, np.inf)
        # gamma lies in [0, min(n, d)]; a noisy estimate must not leave it.
        mean, se = min_variance_mean(np.stack([a[0], b[0], c] + [e[0] for e in extra], axis=1), return_se=True)
        return np.array([np.clip(mean, 0.0, min(n, d))]), np.array([se])
    if k < 2:
        return np.clip(a[:, 0], 0.0, sizes), np.full(len(groups), np.inf)
    pairs = [
        min_variance_mean(np.stack([a[g], b[g]] + [e[g] for e in extra], axis=1), return_se=True)
        for g in range(len(groups))
    ]
    gammas = np.array([m for m, _ in pairs])
    return np.clip(gammas, 0.0, sizes), np.array([se for _, se in pairs])


def _diagonal_control(system, rhs, a, b, groups):
    """``a`` and ``b`` of a per-group prior with the diagonal of ``H`` as a control variate.

    ``v = P^-1 r`` with ``P = diag(H)`` follows the sample ``z = H^-1 r``
    wherever ``H`` is nearly diagonal, as on a group the prior dominates
    (``lambda_g`` far above its curvature, ``gamma_g`` small), and
    ``E[v_j^2] = H_jj / P_jj^2 = 1 / P_jj`` is known. So
    ``b + v_g^T A v_g - Tr_g(A P^-1)`` and ``a - v_g^T D v_g + Tr_g(D P^-1)``
    (``D = alpha diag(Phi^T W Phi)``) stay unbiased and, on such a group,
    carry a fraction of the Monte Carlo error (a digits MLP's input layer,
    ``gamma_0 = 0.04``: standard deviation 0.17 per sample against 0.63).
    """
    xp = system.xp
    P = system.diagonal()
    D = system.alpha * system.gram_diagonal()
    v_sq = (rhs / P[:, None]) ** 2
    known_prior = to_numpy(group_sums((system.prior / P)[:, None], groups, xp))
    known_data = to_numpy(group_sums((D / P)[:, None], groups, xp))
    b_cv = b + to_numpy(group_sums(system.prior[:, None] * v_sq, groups, xp)) - known_prior
    a_cv = a - to_numpy(group_sums(D[:, None] * v_sq, groups, xp)) + known_data
    return [a_cv, b_cv]


def min_variance_mean(estimates, return_se=False):
    """Mean of the affine combination of unbiased estimates with the smallest empirical variance.

    Parameters
    ----------
    estimates : array of shape (k, m)
        ``k`` draws of ``m`` unbiased estimates of one quantity (k >= 2).
    return_se : bool, default=False
        Also return the standard error of the mean: ``std(estimates @ w) / sqrt(k)``
        with ``k - m`` degrees of freedom, times ``sqrt((k - 2) / (k - m - 1))``
        for the weights fitted to the same draws (``inf`` when ``k <= m + 1``,
        or ``k < 2`` for one estimate).

    Returns
    -------
    float
        ``mean(estimates @ w)`` with ``sum(w) = 1`` minimising the
        empirical variance of ``estimates @ w``.
    float
        The standard error (only with ``return_se``).
    """
    m = estimates.shape[1]
    cov = np.cov(estimates, rowvar=False, bias=True).reshape(m, m)
    # A ridge of relative size 1e-10 keeps a zero-variance (exact) estimate usable.
    cov = cov + 1e-10 * max(np.trace(cov), np.finfo(float).tiny) * np.eye(m)
    weights = np.linalg.solve(cov, np.ones(m))
    weights /= weights.sum()
    combined = estimates @ weights
    if return_se:
        # The m - 1 free weights are fitted to the same k draws: k - m degrees
        # of freedom are left for the residual spread, and the fitted weights
        # themselves add variance, by (k - 2) / (k - m - 1) for Gaussian
        # estimates (Lavenberg and Welch's control-variate loss factor: 1.56
        # for six estimates from 16 draws, which the spread over repeated
        # fits shows).
        k = combined.shape[0]
        if m == 1:
            loss = 1.0 if k > 1 else np.inf  # one estimate: no weights fitted
        else:
            loss = (k - 2) / (k - m - 1) if k > m + 1 else np.inf
        se = float(np.std(combined, ddof=m) * np.sqrt(loss / k)) if np.isfinite(loss) else np.inf
        return float(np.mean(combined)), se
    return float(np.mean(combined))


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


# Columns of the Nystrom sketch behind the effective dimension's control
# variate: cg's default preconditioner rank, so one sketch serves both (and,
# as for cg, at most d / 4 and none below 16).
CONTROL_RANK = 128


# The iterative path doubles its posterior samples, up to this factor, while
# the effective dimension is too uncertain to decide the evidence updates.
MAX_SAMPLE_GROWTH = 16
# Relative standard error of gamma (and of n - gamma, the noise update's
# numerator) above which the updates are undecided.
DECIDE_RTOL = 0.02


def _too_uncertain(gammas, gamma_se, n_eff, tune_alpha):
    """Whether the Monte Carlo error of gamma exceeds DECIDE_RTOL of gamma or of ``n - gamma``.

    Only fits that tune the noise: the runaway into the interpolation corner
    goes through the noise update ``(n - gamma) / sse``. Per-group fits
    also add samples while some group is undecided (see
    :func:`_groups_undecided`).
    """
    if not tune_alpha:
        return False
    tiny = np.finfo(float).tiny
    gamma, se = float(np.sum(gammas)), float(np.sqrt(np.sum(gamma_se**2)))
    return se > DECIDE_RTOL * max(min(gamma, n_eff - gamma), tiny)


# Relative Monte Carlo error of a group's effective dimension (so of its
# lambda, which the update makes proportional to it) above which a
# per-group fit adds samples and, if that does not decide it, warns.
GROUP_WARN_RTOL = 0.05


def _groups_undecided(gammas, gamma_se):
    """``(worst, rel, undecided)``: the group whose gamma has the largest relative Monte Carlo error, that error, and whether it exceeds GROUP_WARN_RTOL."""
    rel = gamma_se / np.maximum(gammas, np.finfo(float).tiny)
    worst = int(np.argmax(rel))
    return worst, float(rel[worst]), bool(rel[worst] > GROUP_WARN_RTOL)


def _warn_if_groups_undecided(gammas, gamma_se, n_samples):
    """Warn (ConvergenceWarning) when some group's gamma, hence its lambda, carries a large Monte Carlo error."""
    worst, rel, undecided = _groups_undecided(gammas, gamma_se)
    if undecided:
        warnings.warn(
            f"The prior precision of parameter group {worst} is undecided by the posterior samples: its effective "
            f"dimension is {gammas[worst]:.4g} +- {gamma_se[worst]:.2g} (Monte Carlo standard error with "
            f"{n_samples} samples), so its lambda carries about {rel:.0%} relative error. Increase "
            f"n_samples, use solver='exact' if the network is small enough, or prior_structure='scalar'.",
            ConvergenceWarning,
        )


# The smallest fraction of MacKay's step a damped group update takes.
MIN_DAMPING = 0.2


class _SecantDamping:
    """Per-group secant steps on ``log lambda`` where MacKay's update overshoots.

    For a group the data barely determine (``gamma_g`` small against
    ``|g|``), ``gamma_g`` falls about as fast as ``lambda_g`` rises, so the
    update ``lambda_g <- gamma_g / |w_g|^2`` has slope near -1 in
    ``log lambda``: it swings about the fixed point and settles slowly, if
    at all (19 steps at ``tol=1e-3`` for the input layer of a digits MLP
    with exact traces; on sampled traces it had not settled in 50). Where
    a group's step changes sign, the slope ``s`` of the map is measured
    from its last two values and the step scaled by ``1 / (1 - s)``, the
    secant root of ``log lambda -> update - log lambda``: the same fixed
    point, reached without swinging. Groups that approach it from one side
    take MacKay's step unchanged.
    """

    def __init__(self):
        self.reset()

    def reset(self):
        """Forget the history (the map changed: more samples)."""
        self.x = self.g = None

    def __call__(self, lambdas, proposed):
        x, g = np.log(lambdas), np.log(proposed)
        out = g
        if self.x is not None:
            dx = x - self.x
            moved = dx != 0
            slope = np.where(moved, (g - self.g) / np.where(moved, dx, 1.0), 0.0)
            swing = moved & ((g - x) * (self.g - self.x) < 0) & (slope < 0)
            weight = np.clip(1.0 / (1.0 - np.minimum(slope, 0.0)), MIN_DAMPING, 1.0)
            out = np.where(swing, x + weight * (g - x), g)
        self.x, self.g = x, g
        return np.exp(out)


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
    exact_traces="auto",
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
        ``tol`` after the first step, and the hyperparameters' relative
        change below ``tol`` too (the mean of heavily shrunk coefficients,
        or of a warm-started solve, can stand still while they move).
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
    exact_traces : {'auto', True, False}, default='auto'
        Iterative solvers: take the effective dimension, ``log det H`` and
        the posterior's predictive variances from the exact spectrum of the data term
        (the exact factorisation, formed once) instead of the samples.
        ``'auto'``: when that costs less than about one evidence step (see
        :func:`exact_traces_affordable`), or, for a per-parameter prior, from
        the first step whose samples cannot decide a group if it costs less
        than the grown samples would.
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

    def trace_factorization(system):
        """The exact factorisation for the traces of the iterative path, or None where it has lost its digits."""
        fact = ExactFactorization(features, sqrt_weights)
        try:
            fact.logdet(system.alpha, system.prior)  # factorises now
        except CentringPrecisionError:
            # A sparse X whose offset dwarfs its spread: the centred Gram
            # matrix has lost its digits, but the solves centre each
            # product, so the traces stay with the samples.
            return None
        return fact

    auto_traces = exact_traces == "auto"
    if exact:
        fact, draws = ExactFactorization(features, sqrt_weights), None
    else:
        fact, draws = None, SampleDraws(system, n_samples, rng)
        if auto_traces:
            exact_traces = exact_traces_affordable(features, n_samples, scalar_prior)
        if exact_traces:
            # The solves still give the mean and the samples; the traces come
            # from the factorisation, with no Monte Carlo error.
            fact = trace_factorization(system)
        solve = SOLVERS[solver]
        solve_options = dict(options, random_state=rng) if solver == "sgd" else options
    if lambda_band is not None:
        # A saturated network has B ~ 0: gamma -> 0 and the bare update drives
        # lambda to where H is numerically singular. A wide band around the
        # mean curvature keeps H factorisable without touching a sensible
        # fixed point.
        curvature = float(np.mean(to_numpy(system.gram_diagonal())))
        curvature = curvature if np.isfinite(curvature) and curvature > 0 else 1.0

    # Without exact traces, a Nystrom sketch of the curvature (cg's
    # preconditioner, shared) gives the samples a control variate: gamma's
    # captured part exact, Monte Carlo noise only on the remainder.
    control_rank = None
    if not exact and fact is None:
        name, rank = auto_preconditioner(d, options.get("preconditioner_rank", CONTROL_RANK))
        control_rank = rank if name is not None else None
    projected = {}

    def control_draws(system):
        """``((v, diag(A P^-1), M~ v) or None, passes)``: the control variate at the system's hyperparameters."""
        if control_rank is None:
            return None, 0.0
        before = system.statistics.nystrom
        approx = sketch_of(system, control_rank)
        # Forming the sketch here (sgd, or cg without it) is one product of rank columns.
        passes = 0.0 if approx is before else float(approx.rank)
        if approx.gain(system.alpha, system.prior) < NYSTROM_MIN_GAIN:
            # A flat captured spectrum (hashed sparse or well-conditioned
            # features) leaves the samples' error where it was, and the
            # d x r work per step would cost more than the solve.
            return None, passes / (draws.n_samples + 1)
        if approx.compressed is None:
            approx.compress(lambda V: features.gram_times(V, w))
            passes += approx.rank
        key = (id(approx), draws.n_samples)
        if projected.get("key") != key:
            projected.update(key=key, c=approx.project_noise(draws.data_noise))
        solve_control, prior_diagonal, captured_times = approx.control_variate(system.alpha, system.prior)
        v = solve_control(draws.prior_noise, projected["c"])
        return (v, prior_diagonal, captured_times(v)), passes / (draws.n_samples + 1)

    coef, samples = (None, None) if warm is None else warm
    results, scores = [], []
    gamma_se = np.zeros(len(group_list))
    max_samples = n_samples * MAX_SAMPLE_GROWTH

    def e_step(system):
        """Solve at the system's hyperparameters; return (SolverResult or None, mean, sse, gammas)."""
        nonlocal coef, samples
        alpha, prior = system.alpha, system.prior
        rhs_mean = mean_rhs(alpha)
        if exact:
            mean = fact.posterior_mean(alpha, prior, rhs_mean, y=targets)
            gammas = fact.effective_dims(alpha, prior, None if scalar_prior else group_list)
            gamma_se[:] = 0.0
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
        if fact is not None:
            gammas = fact.effective_dims(alpha, prior, None if scalar_prior else group_list)
            gamma_se[:] = 0.0
        else:
            control, passes = control_draws(system)
            if passes:
                # The sketch's products count as passes of this step (in products of k + 1 columns).
                res.info["passes"] = res.info.get("passes", res.n_iter) + passes
            gammas, gamma_se[:] = estimate_effective_dims(
                system,
                samples,
                images,
                draws,
                sample_rhs,
                None if scalar_prior else group_list,
                noise_estimate,
                True,
                control=control,
            )
        return res, PosteriorMean(coef), sse, gammas

    def score(system, mean, sse):
        ld = fact.logdet(system.alpha, system.prior) if fact is not None else logdet(system)
        return log_evidence(n_eff, d, system.alpha, system.prior, sse, mean.coef_sq, ld, priors)

    alpha_1, alpha_2, lambda_1, lambda_2 = priors
    damping = _SecantDamping()
    tried_exact = False
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
        group_undecided = tune_lambda and not scalar_prior and _groups_undecided(gammas, gamma_se)[2]
        undecided = group_undecided or _too_uncertain(gammas, gamma_se, n_eff, tune_alpha)
        if draws is not None and fact is None and group_undecided and auto_traces and not tried_exact:
            # The samples cannot decide a group's step. Where the exact
            # spectrum costs less than the samples that could (a group the
            # data barely determine has a gamma_g of 0.04 +- 0.16 per 16
            # samples on a digits MLP's input layer), take it instead and
            # redo the E-step at the same hyperparameters.
            tried_exact = True
            if exact_traces_affordable(features, max_samples, scalar_prior):
                fact = trace_factorization(system)
                if fact is not None:
                    damping.reset()
                    continue
        if draws is not None and draws.n_samples < max_samples and undecided:
            # The updates would follow Monte Carlo noise rather than the
            # evidence (near gamma ~ n it walks into the interpolation
            # corner, a fixed point of the updates): add samples and redo
            # the E-step at the same hyperparameters.
            k = draws.n_samples
            damping.reset()
            draws.extend(system, min(k, max_samples - k), rng)
            if samples is not None:
                added = draws.rhs(alpha, system.prior)[:, k:]
                samples = xp.concat([samples, system.prior_solve(added)], axis=1)
            continue
        new_lambdas, new_alpha = lambdas, alpha
        mackay_lambdas = lambdas
        if tune_lambda:
            if scalar_prior:
                sq = mean.coef_sq
            else:
                c2 = mean.coef * mean.coef
                sq = to_numpy(group_sums(c2 if prior_scale is None else prior_scale * c2, group_list, xp))
            new_lambdas = (gammas + 2 * lambda_1) / (sq + 2 * lambda_2)
            if lambda_band is not None:
                new_lambdas = np.clip(new_lambdas, lambda_band[0] * alpha * curvature, lambda_band[1] * alpha * curvature)
            # Convergence is judged on MacKay's own step: a damped step is
            # shorter than the distance to the fixed point.
            mackay_lambdas = new_lambdas
            if not scalar_prior:
                new_lambdas = damping(lambdas, new_lambdas)
        if tune_alpha:
            gamma = float(np.sum(gammas))
            new_alpha = (n_eff - gamma + 2 * alpha_1) / (sse + 2 * alpha_2)
            if not new_alpha > 0:
                raise ValueError(
                    f"The noise update needs the sum of the sample weights ({n_eff:.6g}) to exceed the "
                    f"effective number of parameters ({gamma:.6g}); scale the sample weights up."
                )
        change = max(float(np.max(np.abs(mackay_lambdas / lambdas - 1))), abs(new_alpha / alpha - 1))
        lambdas, alpha = new_lambdas, float(new_alpha)
        system = system.with_hyperparameters(alpha, prior_of(lambdas))
        if stop == "coef":
            # BayesianRidge's rule alone stops where heavily shrunk
            # coefficients barely move although alpha and lambda still do
            # (11% short of the fixed point on a nearly signal-free n < d
            # problem), and an iterative solve whose warm start meets its
            # tolerance leaves the mean unchanged while they move: every
            # solver also waits for the hyperparameters to settle.
            done = it != 0 and change < tol and mean.l1_change(mean_old, tol) < tol
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
    if draws is not None and (tune_alpha or tune_lambda) and _too_uncertain(gammas, gamma_se, n_eff, tune_alpha):
        gamma = float(np.sum(gammas))
        warnings.warn(
            f"The effective dimension is too uncertain to decide the evidence updates with "
            f"{draws.n_samples} posterior samples: {gamma:.4g} +- {float(np.sqrt(np.sum(gamma_se**2))):.2g} "
            f"(Monte Carlo standard error), so alpha and lambda carry about that relative error; "
            f"increase n_samples, or use solver='exact' if the problem is small enough.",
            ConvergenceWarning,
        )
    if draws is not None and tune_lambda and not scalar_prior:
        _warn_if_groups_undecided(gammas, gamma_se, draws.n_samples)
    coef = mean.coef
    # Only the exact solver's posterior answers from the factorisation: the
    # iterative ones draw by their own solves (what their users reproduce).
    posterior = Posterior(
        system,
        coef,
        solver=solver,
        solver_options=options,
        factorization=fact if exact else None,
        samples=samples,
        variance_factorization=None if exact else fact,
    )
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
        gamma_se=gamma_se.copy(),
    )


def _weighted_sse(xp, r, w):
    """``sum_i w_i r_i^2``."""
    return scalar(xp.sum(r * r if w is None else w * r * r))
