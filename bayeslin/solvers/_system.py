"""The linear system every solver works on, and what a solver returns."""

from dataclasses import dataclass, field

import numpy as np


class PosteriorPrecision:
    """The posterior precision ``H = alpha Phi^T W Phi + A`` as an operator.

    ``W = diag(sqrt_weights**2)`` holds the sample weights and ``A`` is the
    prior precision: a scalar ``lambda`` times the identity, or a diagonal.
    ``H`` is symmetric positive definite whenever ``A`` is.

    Work that does not depend on ``alpha`` or ``A`` (a Gram matrix and its
    eigendecomposition, a spectral-norm estimate) is kept in :attr:`cache`,
    which :meth:`with_hyperparameters` shares, so an evidence loop pays for
    it once.

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
    cache : dict, optional
        Shared cache of hyperparameter-free quantities.
    """

    def __init__(self, features, alpha, prior, sqrt_weights=None, cache=None):
        self.features = features
        self.alpha = float(alpha)
        self.prior = prior
        self.sqrt_weights = sqrt_weights
        self.cache = {} if cache is None else cache
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
        """Return the same system at new ``alpha`` and ``A``, sharing the cache."""
        return PosteriorPrecision(self.features, alpha, prior, self.sqrt_weights, self.cache)

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
