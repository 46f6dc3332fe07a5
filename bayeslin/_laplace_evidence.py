"""The evidence loop of the linearised Laplace approximation.

The tangent linear model at the network's weights ``w`` has features
``Phi`` = the whitened Jacobian (rows ``L_i^T J_i``, so ``Phi^T Phi = J^T B J``
for classification; the plain Jacobian with noise precision ``alpha`` for
regression), the posterior precision ``H = alpha Phi^T Phi + A`` and a
right-hand side for its mode that the caller supplies:

- regression: ``alpha Phi^T y~`` with ``y~ = y - f(w) + J w`` (exact mode of
  the tangent model);
- classification: ``J^T B J w - J^T g`` with ``g`` the NLL gradient at the
  logits: one Newton step from ``w``, i.e. the mode of the Gaussian (GGN)
  approximation of the tangent model's posterior at ``w``.

The prior is ``A = diag(lambda_{g(j)} c_j)``: one ``lambda`` per parameter
group (one group: a scalar prior; one per layer: 'layerwise') times a fixed
scale ``c`` (ones, or the g-prior's normalisation). MacKay's update per group
is ``lambda_g <- gamma_g / theta_g^T C_g theta_g``, with
``gamma_g = Tr_g(H^-1 M)``, ``M = alpha Phi^T Phi``; for regression also
``alpha <- (N - gamma) / ||y~ - Phi theta||^2``. Each carries the tiny Gamma
hyperpriors of BayesianRidge (1e-6) so that an empty group stays finite, and
``lambda`` is kept within ``[1e-8, 1e8]`` times the mean curvature
``alpha mean_j diag(Phi^T Phi)_j`` so that ``H`` stays numerically positive
definite on degenerate fits (a network saturated on its training data).

``gamma_g`` is exact for the exact solver (``|g| - sum_{j in g} A_jj
(H^-1)_jj``). For the iterative solvers each sample ``z ~ N(0, H^-1)`` gives
two unbiased estimates per group, ``a = z_g^T (M z)_g`` (one extra pass)
and ``b = |g| - z_g^T A_g z_g``; the affine combination with the smallest
empirical variance across the samples is used (as
:func:`bayeslin.evidence.estimate_effective_dim`, restricted to the two
estimates that split over groups). ``a`` is precise when few directions are
determined by the data, ``b`` when nearly all are.
"""

from dataclasses import dataclass, field, replace

import numpy as np

from ._backend import create, device, scalar, standard_normal, to_numpy
from .evidence import SampleDraws, min_variance_mean, spanned_inverse_diagonal
from .solvers import SOLVERS, PosteriorPrecision

__all__ = ["DenseLaplace", "LaplaceEvidenceResult", "fit_laplace_evidence"]

_HYPER = 1e-6
# lambda stays within this band times the mean curvature alpha diag(Phi^T Phi).
_LAMBDA_BAND = (1e-8, 1e8)


@dataclass
class LaplaceEvidenceResult:
    """Outcome of :func:`fit_laplace_evidence`.

    Attributes
    ----------
    mode : array of shape (d,)
        Mode (posterior mean) of the tangent linear model at the final hyperparameters.
    samples : array of shape (d, k)
        Zero-mean draws from ``N(0, H^-1)``.
    lambdas : ndarray of shape (n_groups,)
    alpha : float
    gammas : ndarray of shape (n_groups,)
        Effective number of parameters per group.
    n_iter : int
    converged : bool
    system : PosteriorPrecision
        At the final hyperparameters.
    dense : DenseLaplace or None
        The dense factorisation (exact solver).
    solver_results : list
    history : list of dict
    """

    mode: object
    samples: object
    lambdas: np.ndarray
    alpha: float
    gammas: np.ndarray
    n_iter: int
    converged: bool
    system: PosteriorPrecision
    dense: object = None
    solver_results: list = field(default_factory=list)
    history: list = field(default_factory=list)


class DenseLaplace:
    """Dense ``H = alpha G + diag(A)`` and its inverse, for networks with a few thousand parameters.

    ``G = Phi^T Phi`` is formed once (``d`` Jacobian-vector products); every
    ``(alpha, A)`` then costs one ``d x d`` inversion.
    """

    def __init__(self, features):
        self.G = features.gram()
        self.G = 0.5 * (self.G + self.G.T)
        self._key = None

    @property
    def xp(self):
        """Array namespace of the factors (not stored: modules do not pickle)."""
        from ._backend import get_namespace

        return get_namespace(self.G)

    def factor(self, alpha, prior):
        """Return ``H^-1`` at ``(alpha, prior)`` (cached for the last pair)."""
        xp = self.xp
        key = (float(alpha), tuple(to_numpy(prior).tolist()))
        if key != self._key:
            H = alpha * self.G + create(xp, "eye", self.G.shape[0], dtype=self.G.dtype, device_=device(self.G)) * prior[None, :]
            Lc = xp.linalg.cholesky(H)
            # H = Lc Lc^T, so C = Lc^-T is a square root of H^-1: no second
            # (ill-conditioned) factorisation of the inverse is needed.
            self._cov_factor = xp.linalg.inv(Lc).T
            self.cov = self._cov_factor @ self._cov_factor.T
            self._key = key
        return self.cov

    def cov_factor(self, alpha, prior):
        """Return ``C`` with ``C C^T = H^-1`` (upper triangular)."""
        self.factor(alpha, prior)
        return self._cov_factor


def _group_sums(values, groups, xp):
    """Sum ``values`` (d, ...) over each ``(start, stop)`` group: shape (n_groups, ...)."""
    return xp.stack([xp.sum(values[a:b, ...], axis=0) for a, b in groups])


def expand_prior(lambdas, groups, scale, xp, dtype, device_=None):
    """``A_jj = lambda_{g(j)} c_j`` as a (d,) array."""
    parts = [create(xp, "full", (b - a,), float(lam), dtype=dtype, device_=device_) for lam, (a, b) in zip(lambdas, groups)]
    A = xp.concat(parts)
    return A if scale is None else A * scale


def fit_laplace_evidence(
    features,
    mean_rhs,
    *,
    groups,
    prior_scale=None,
    lambda_init,
    alpha_init=1.0,
    tune_lambda=True,
    tune_alpha=False,
    targets=None,
    solver="cg",
    n_samples=16,
    max_iter=50,
    tol=1e-3,
    rng,
    solver_options=None,
    callback=None,
):
    """Run the Laplace evidence loop.

    Parameters
    ----------
    features : FeatureOperator
        ``Phi`` (n_rows x d).
    mean_rhs : callable
        ``mean_rhs(alpha) -> array (d, 1)``: the right-hand side of the mode.
    groups : list of (int, int)
        Parameter groups sharing one ``lambda`` (they must tile ``0..d``).
    prior_scale : array of shape (d,), optional
        ``c`` (ones when None).
    lambda_init : array-like of shape (n_groups,)
    alpha_init : float
    tune_lambda, tune_alpha : bool
    targets : array of shape (n_rows,), optional
        ``y~`` for the noise update (regression).
    solver : {'exact', 'cg', 'sgd'}
    n_samples : int
    max_iter : int
        Evidence steps (M-steps).
    tol : float
        Stop when every hyperparameter changed by less than ``tol`` (relative).
    rng : numpy.random.RandomState
    solver_options : dict, optional
    callback : callable, optional
        ``callback(iteration, alpha, lambdas, gammas, solver_result)``.

    Returns
    -------
    LaplaceEvidenceResult
    """
    xp = features.xp
    n_rows, d = features.shape
    dtype = features.dtype
    options = dict(solver_options or {})
    lambdas = np.asarray(lambda_init, dtype=np.float64).reshape(-1)
    alpha = float(alpha_init)
    sizes = np.array([b - a for a, b in groups], dtype=np.float64)
    exact = solver == "exact"
    prior = expand_prior(lambdas, groups, prior_scale, xp, dtype, features.device)
    system = PosteriorPrecision(features, alpha, prior)
    if exact:
        dense = DenseLaplace(features)
        draws = None
    else:
        dense = None
        draws = SampleDraws(system, n_samples, rng)
        if solver == "sgd":
            options.setdefault("random_state", rng)
        solve = SOLVERS[solver]
    scale = create(xp, "ones", (d,), dtype=dtype, device_=features.device) if prior_scale is None else prior_scale
    # The mean curvature per parameter sets the range lambda may take. A
    # network that saturates on its training data has B ~ 0: gamma -> 0, the
    # Newton step explodes and the bare update drives lambda to a value at
    # which H is numerically singular. Clipping to a wide band around the
    # curvature keeps H factorisable without touching a sensible fixed point.
    curvature = float(np.mean(to_numpy(features.col_sq_norms())))
    curvature = curvature if np.isfinite(curvature) and curvature > 0 else 1.0
    state = {"mode": None, "samples": None}
    results, history = [], []

    def e_step(system):
        alpha, prior = system.alpha, system.prior
        rhs_mean = mean_rhs(alpha)
        if exact:
            cov = dense.factor(alpha, prior)
            mode = (cov @ rhs_mean)[:, 0]
            gammas = sizes - to_numpy(_group_sums(prior * xp.linalg.diagonal(cov), groups, xp))
            res = None
        else:
            sample_rhs = draws.rhs(alpha, prior)
            x0_mean = xp.zeros_like(rhs_mean) if state["mode"] is None else state["mode"][:, None]
            x0_samples = system.prior_solve(sample_rhs) if state["samples"] is None else state["samples"]
            res = solve(system, xp.concat([rhs_mean, sample_rhs], axis=1), xp.concat([x0_mean, x0_samples], axis=1), **options)
            mode, Z = res.solution[:, 0], res.solution[:, 1:]
            state["samples"] = Z
            P = features.matmat(Z)
            MZ = alpha * features.rmatmat(P)
            a = to_numpy(_group_sums(Z * MZ, groups, xp))  # (n_groups, k)
            b = sizes[:, None] - to_numpy(_group_sums(prior[:, None] * Z * Z, groups, xp))
            diag = spanned_inverse_diagonal(Z, sample_rhs)
            if diag is not None:
                # H^-1 known exactly: gamma_g = |g| - sum_{j in g} A_jj (H^-1)_jj.
                Ad = to_numpy(prior) * diag
                gammas = sizes - np.array([np.sum(Ad[start:stop]) for start, stop in groups])
            elif a.shape[1] < 2:
                gammas = a[:, 0]
            else:
                gammas = np.array([min_variance_mean(np.stack([a[g], b[g]], axis=1)) for g in range(len(groups))])
            gammas = np.clip(gammas, 0.0, sizes)
        state["mode"] = mode
        return res, mode, gammas

    converged = False
    it = 0
    n_steps = max_iter if (tune_lambda or tune_alpha) else 0
    for it in range(n_steps):
        res, mode, gammas = e_step(system)
        if res is not None:
            results.append(replace(res, solution=None))
        if callback is not None:
            callback(it, alpha, lambdas, gammas, res)
        new_lambdas, new_alpha = lambdas, alpha
        if tune_lambda:
            sq = to_numpy(_group_sums(scale * mode * mode, groups, xp))
            new_lambdas = (gammas + 2 * _HYPER) / (sq + 2 * _HYPER)
            new_lambdas = np.clip(new_lambdas, _LAMBDA_BAND[0] * alpha * curvature, _LAMBDA_BAND[1] * alpha * curvature)
        sse = None
        if tune_alpha:
            r = targets - features.matmat(mode[:, None])[:, 0]
            sse = scalar(xp.sum(r * r))
            gamma = float(np.sum(gammas))
            new_alpha = (n_rows - gamma + 2 * _HYPER) / (sse + 2 * _HYPER)
        history.append({"alpha": alpha, "lambdas": lambdas.copy(), "gammas": gammas.copy(), "sse": sse})
        change = max(np.max(np.abs(new_lambdas / lambdas - 1)), abs(new_alpha / alpha - 1))
        lambdas, alpha = new_lambdas, float(new_alpha)
        system = system.with_hyperparameters(alpha, expand_prior(lambdas, groups, prior_scale, xp, dtype, features.device))
        if change < tol:
            converged = True
            break

    res, mode, gammas = e_step(system)
    if res is not None:
        results.append(replace(res, solution=None))
    if exact:
        noise = standard_normal(rng, (d, n_samples), xp, dtype, features.device)
        samples = dense.cov_factor(alpha, system.prior) @ noise
    else:
        samples = state["samples"]
    return LaplaceEvidenceResult(
        mode=mode,
        samples=samples,
        lambdas=lambdas,
        alpha=alpha,
        gammas=gammas,
        n_iter=(it + 1) if n_steps else 0,
        converged=converged or n_steps == 0,
        system=system,
        dense=dense,
        solver_results=results,
        history=history,
    )
