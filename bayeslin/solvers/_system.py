"""The linear system every solver works on, and what a solver returns."""

from dataclasses import dataclass, field

import numpy as np

from .._backend import standard_normal


class DataStatistics:
    """Hyperparameter-free statistics of ``Phi^T W Phi`` that the solvers compute once per loop.

    Each is ``None`` until the solver that needs it computes it.

    Attributes
    ----------
    gram_lmax : float or None
        Upper estimate of the largest eigenvalue of ``Phi^T W Phi`` (sgd).
    max_row_sq_norm : float or None
        ``max_i w_i ||phi_i||^2`` (sgd).
    gram_diagonal : array of shape (d,) or None
        ``diag(Phi^T W Phi)`` (cg's Jacobi preconditioner, the per-group
        effective dimensions' diagonal control variate).
    nystrom : NystromApproximation or None
        Randomized Nystrom approximation of ``Phi^T W Phi`` (cg's Nystrom preconditioner).
    """

    def __init__(self):
        self.gram_lmax = None
        self.max_row_sq_norm = None
        self.gram_diagonal = None
        self.nystrom = None


class PosteriorPrecision:
    """The posterior precision ``H = alpha Phi^T W Phi + A`` as an operator.

    ``W = diag(sqrt_weights**2)`` holds the sample weights and ``A`` is the
    prior precision: a scalar ``lambda`` times the identity, or a diagonal.
    ``H`` is symmetric positive definite whenever ``A`` is.

    Statistics of the data term that do not depend on ``alpha`` or ``A``
    (a spectral-norm estimate, the largest row norm, the diagonal) are kept
    in :attr:`statistics`, which :meth:`with_hyperparameters` shares, so an
    evidence loop pays for them once.

    Parameters
    ----------
    features : FeatureOperator
        ``Phi``, shape ``(n, d)``.
    alpha : float
        Noise precision (``alpha_`` in scikit-learn's naming).
    prior : float or array of shape (d,)
        Prior precision ``A`` (its diagonal when an array).
    sqrt_weights : array of shape (n,), optional
        Square roots of the sample weights; ``None`` means all ones.
    statistics : DataStatistics, optional
        Shared hyperparameter-free statistics (new when omitted).
    """

    def __init__(self, features, alpha, prior, sqrt_weights=None, statistics=None):
        self.features = features
        self.alpha = float(alpha)
        self.prior = prior
        self.sqrt_weights = sqrt_weights
        self.statistics = DataStatistics() if statistics is None else statistics
        d = features.shape[1]
        self.shape = (d, d)
        self.dtype = features.dtype

    @property
    def xp(self):
        """Array namespace of the features."""
        return self.features.xp

    @property
    def n_observations(self):
        """Number of rows of ``Phi``."""
        return self.features.shape[0]

    @property
    def scalar_prior(self):
        """Whether ``A`` is a multiple of the identity."""
        return np.ndim(self.prior) == 0

    def with_hyperparameters(self, alpha, prior):
        """Return the same system at new ``alpha`` and ``A``, sharing the statistics."""
        return PosteriorPrecision(self.features, alpha, prior, self.sqrt_weights, self.statistics)

    @property
    def weights(self):
        """The sample weights ``w`` (``None``: all ones)."""
        return None if self.sqrt_weights is None else self.sqrt_weights**2

    def gram_diagonal(self):
        """``diag(Phi^T W Phi)``, shape ``(d,)``: one pass, computed once per loop (shared statistics)."""
        stats = self.statistics
        if stats.gram_diagonal is None:
            stats.gram_diagonal = self.features.col_sq_norms(self.weights)
        return stats.gram_diagonal

    def diagonal(self):
        """``diag(H) = alpha diag(Phi^T W Phi) + diag(A)``, shape ``(d,)``."""
        return self.alpha * self.gram_diagonal() + self.prior

    def prior_times(self, V):
        """Return ``A @ V``."""
        if self.scalar_prior:
            return self.prior * V
        return self.prior[:, None] * V

    def prior_solve(self, V):
        """Return ``A^-1 @ V`` (the centre ``theta_n`` of a sample objective, from its right-hand side)."""
        if self.scalar_prior:
            return V / self.prior
        return V / self.prior[:, None]

    def data_times(self, V, rows=None, scale=1.0):
        """Return ``scale * alpha * Phi^T W Phi @ V``, or its restriction to ``rows``.

        With ``rows`` (an integer index array) only those observations enter
        the sum, which is what a minibatch gradient needs; ``scale`` is then
        typically ``n / len(rows)``.
        """
        F = self.features if rows is None else self.features.take_rows(rows)
        w = None
        if self.sqrt_weights is not None:
            w = self.sqrt_weights if rows is None else self.xp.take(self.sqrt_weights, rows)
            w = w**2
        return (scale * self.alpha) * F.gram_times(V, w)

    def matmat(self, V):
        """Return ``H @ V`` for ``V`` of shape ``(d, k)``: one pass over ``Phi``."""
        return self.data_times(V) + self.prior_times(V)


@dataclass
class SolverResult:
    """What a solver returns.

    Attributes
    ----------
    solution : array of shape (d, k)
        The approximate solution of ``H X = R``.
    n_iter : int
        Iterations taken (0 for a direct solver).
    residual_norms : array of shape (k,)
        ``||R - H X|| / ||R||`` for each right-hand side, as tracked by the
        solver (host NumPy array).
    converged : bool
        Whether every right-hand side met the tolerance.
    info : dict
        Solver-specific diagnostics.
    """

    solution: object
    n_iter: int
    residual_norms: np.ndarray
    converged: bool
    info: dict = field(default_factory=dict)


class SampleDraws:
    """Fixed standard normal draws behind sample-then-optimise right-hand sides.

    A zero-mean posterior sample is ``z = H^-1 r`` with
    ``r = A theta_0 + Phi^T W^1/2 (sqrt(alpha) xi) ~ N(0, H)``; with
    ``theta_0 = A^-1/2 g``, ``r = A^1/2 g + sqrt(alpha) Phi^T W^1/2 xi``.
    ``g``, ``xi`` and ``Phi^T W^1/2 xi`` are kept, so a new ``(alpha, A)``
    only rescales them (and ``xi`` feeds one of the estimates of gamma).

    Parameters
    ----------
    system : PosteriorPrecision
    n_samples : int
    rng : numpy.random.RandomState
    """

    def __init__(self, system, n_samples, rng):
        self.prior_noise, self.xi, self.data_noise = self._draw(system, n_samples, rng)

    @staticmethod
    def _draw(system, n_samples, rng):
        xp, F = system.xp, system.features
        n, d = F.shape
        prior_noise = standard_normal(rng, (d, n_samples), xp, system.dtype, F.device)
        xi = standard_normal(rng, (n, n_samples), xp, system.dtype, F.device)
        wxi = xi if system.sqrt_weights is None else xi * system.sqrt_weights[:, None]
        return prior_noise, xi, F.rmatmat(wxi)

    @property
    def n_samples(self):
        """Number of draws."""
        return self.prior_noise.shape[1]

    def extend(self, system, n_more, rng):
        """Append ``n_more`` new draws (one more pass over ``Phi``); the existing ones are kept."""
        xp = system.xp
        new = self._draw(system, n_more, rng)
        self.prior_noise, self.xi, self.data_noise = (
            xp.concat([old, add], axis=1) for old, add in zip((self.prior_noise, self.xi, self.data_noise), new)
        )

    def rhs(self, alpha, prior):
        """Return the right-hand sides ``r_j`` at ``(alpha, prior)``, shape (d, k)."""
        sqrt_prior = prior**0.5 if np.ndim(prior) == 0 else (prior**0.5)[:, None]
        return sqrt_prior * self.prior_noise + alpha**0.5 * self.data_noise
