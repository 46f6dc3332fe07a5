"""Direct solver: an eigendecomposition of the smaller of the Gram and kernel matrices.

With a scalar prior ``A = lambda I`` the posterior precision is
``H = alpha G + lambda I`` with ``G = Phi^T W Phi``. One symmetric
eigendecomposition, of ``G`` (d x d, the primal) or of the kernel
``K = W^1/2 Phi Phi^T W^1/2`` (n x n, the dual), whichever is smaller, gives
``H^-1``, the effective dimension and ``log det H`` in closed form for every
``(alpha, lambda)``: an evidence loop factorises once. The dual never forms a
d x d matrix.
"""

import numpy as np

from ._system import SolverResult

__all__ = ["ExactFactorization", "exact_factorization", "solve_exact"]


class ExactFactorization:
    """Spectral factorisation of ``Phi^T W Phi`` through its smaller side.

    Primal (``d <= n``): ``G = U diag(s) U^T`` and
    ``H^-1 = U diag(1 / (alpha s + lambda)) U^T``.

    Dual (``d > n``): ``K = V diag(s) V^T``; with ``F = Phi^T W^1/2 V`` (d x n),
    ``G = F F^T`` and, by the Woodbury identity,
    ``H^-1 = (I - F diag(alpha / (alpha s + lambda)) F^T) / lambda``.

    Parameters
    ----------
    features : FeatureOperator
        ``Phi``, shape ``(n, d)``.
    sqrt_weights : array of shape (n,), optional
        Square roots of the sample weights.

    Attributes
    ----------
    kind : {'primal', 'dual'}
    eigenvalues : array of shape (min(n, d),)
        Eigenvalues ``s`` of ``G`` (the non-trivial ones), clipped at 0.
    basis : array
        ``U`` (d x d) in the primal, ``F`` (d x n) in the dual.
    n_features : int
    """

    def __init__(self, features, sqrt_weights=None):
        xp = features.xp
        n, d = features.shape
        self.xp = xp
        self.n_features = d
        if d <= n:
            self.kind = "primal"
            s, self.basis = xp.linalg.eigh(features.gram(sqrt_weights))
        else:
            self.kind = "dual"
            s, V = xp.linalg.eigh(features.kernel(sqrt_weights))
            if sqrt_weights is not None:
                V = V * sqrt_weights[:, None]
            self.basis = features.rmatmat(V)
        self.eigenvalues = xp.clip(s, 0.0, None)

    def _check_prior(self, prior):
        if np.ndim(prior) != 0:
            raise NotImplementedError(
                "solver='exact' supports a scalar prior precision only; "
                "use solver='cg' or 'sgd' for a per-parameter prior."
            )
        return float(prior)

    def solve(self, alpha, prior, R):
        """Return ``H^-1 R`` for ``R`` of shape ``(d, k)``."""
        lam = self._check_prior(prior)
        U, s = self.basis, self.eigenvalues
        if self.kind == "primal":
            return U @ ((U.T @ R) / (alpha * s + lam)[:, None])
        return (R - U @ ((U.T @ R) * (alpha / (alpha * s + lam))[:, None])) / lam

    def inverse_quadratic_forms(self, alpha, prior, rows):
        """Return ``diag(X H^-1 X^T)`` for the rows ``X`` of a feature operator.

        Parameters
        ----------
        rows : FeatureOperator
            Query rows, shape ``(m, d)``.

        Returns
        -------
        array of shape (m,)
        """
        xp = self.xp
        lam = self._check_prior(prior)
        P = rows.matmat(self.basis)
        s = self.eigenvalues
        if self.kind == "primal":
            return xp.sum(P * P / (alpha * s + lam)[None, :], axis=1)
        data = xp.sum(P * P * (alpha / (alpha * s + lam))[None, :], axis=1)
        return (rows.row_sq_norms() - data) / lam

    def effective_dim(self, alpha, prior):
        """Return ``gamma = Tr(H^-1 alpha G)``, the effective number of parameters."""
        xp = self.xp
        lam = self._check_prior(prior)
        s = self.eigenvalues
        return float(xp.sum(alpha * s / (alpha * s + lam)))

    def logdet(self, alpha, prior):
        """Return ``log det H``."""
        xp = self.xp
        lam = self._check_prior(prior)
        s = self.eigenvalues
        n_null = self.n_features - s.shape[0]
        return float(xp.sum(xp.log(alpha * s + lam))) + n_null * np.log(lam)

    def sample(self, alpha, prior, noise):
        """Map standard normal ``noise`` to exact draws from ``N(0, H^-1)``.

        Parameters
        ----------
        noise : array of shape (d + r, k)
            Standard normal numbers; ``r`` is 0 in the primal and the number
            of eigenvalues in the dual (see :meth:`noise_rows`).

        Returns
        -------
        z : array of shape (d, k)
        """
        lam = self._check_prior(prior)
        U, s = self.basis, self.eigenvalues
        d = self.n_features
        if self.kind == "primal":
            return U @ (noise / (alpha * s + lam)[:, None] ** 0.5)
        # Sample-then-optimise with the exact solve: F g2 ~ N(0, G).
        rhs = lam**0.5 * noise[:d] + alpha**0.5 * (U @ noise[d:])
        return self.solve(alpha, lam, rhs)

    @property
    def noise_rows(self):
        """Number of standard normal rows :meth:`sample` consumes per draw."""
        return self.n_features + (0 if self.kind == "primal" else self.eigenvalues.shape[0])


def exact_factorization(system):
    """Return the (cached) :class:`ExactFactorization` of ``system``."""
    fact = system.cache.get("exact")
    if fact is None:
        fact = ExactFactorization(system.features, system.sqrt_weights)
        system.cache["exact"] = fact
    return fact


def solve_exact(system, rhs, x0=None):
    """Solve ``H X = R`` directly.

    Parameters
    ----------
    system : PosteriorPrecision
        With a scalar prior.
    rhs : array of shape (d, k)
    x0 : ignored
        Accepted for the common solver signature.

    Returns
    -------
    SolverResult
    """
    fact = exact_factorization(system)
    X = fact.solve(system.alpha, system.prior, rhs)
    k = rhs.shape[1]
    return SolverResult(X, 0, np.zeros(k), True, {"kind": fact.kind})
