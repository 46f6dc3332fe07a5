"""A randomized Nystrom approximation of the data curvature ``G = Phi^T W Phi``, and the CG preconditioner built on it.

Frangella, Tropp and Udell (2023), "Randomized Nystrom preconditioning":
one block product ``Y = G Omega`` with a Gaussian test matrix of ``rank``
columns gives ``G ~ U diag(s) U^T``. ``G`` does not depend on the
hyperparameters, so an evidence loop forms it once and every
``H = alpha G + lambda I`` is preconditioned by

``P^-1 = U diag((alpha s_l + lambda) / (alpha s + lambda)) U^T + (I - U U^T)``

(``s_l`` the smallest captured eigenvalue), which maps the captured top of
``H``'s spectrum onto ``alpha s_l + lambda``, the level of the rest.
"""

import numpy as np

from .._backend import standard_normal

__all__ = ["NystromApproximation", "randomized_nystrom"]


class NystromApproximation:
    """``G ~ U diag(s) U^T`` with orthonormal ``U`` (d x r) and ``s`` descending, ``s >= 0``."""

    def __init__(self, U, s):
        self.U = U
        self.s = s

    @property
    def rank(self):
        """Number of captured directions."""
        return self.s.shape[0]

    def preconditioner(self, alpha, lam):
        """Return ``apply(R) = P^-1 R`` for ``H = alpha G + lam I`` (scalar prior)."""
        U, s = self.U, self.s
        floor = alpha * s[-1] + lam
        scale = floor / (alpha * s + lam) - 1.0

        def apply(R):
            UR = U.T @ R
            return R + U @ (UR * scale[:, None])

        return apply


def randomized_nystrom(gram_times, d, rank, xp, dtype, device_=None, seed=0):
    """Randomized Nystrom approximation of a PSD ``G`` from one block product (Frangella, Tropp and Udell, 2023, Alg. 2.1).

    Parameters
    ----------
    gram_times : callable
        ``gram_times(V) -> G V`` for ``V`` of shape (d, rank).
    d : int
    rank : int
        Columns of the test matrix (capped at ``d``).
    xp : namespace
    dtype, device_ :
        Of the arrays ``gram_times`` takes.
    seed : int, default=0
        Seed of the test matrix (fixed: the preconditioner changes the
        iterates, not the answer, so a fit stays reproducible).

    Returns
    -------
    NystromApproximation
    """
    rank = min(rank, d)
    Omega = standard_normal(np.random.RandomState(seed), (d, rank), xp, dtype, device_)
    Q, _ = xp.linalg.qr(Omega)
    Y = gram_times(Q)
    # A shift of the size of rounding keeps the small core factorisable.
    nu = float(np.sqrt(d)) * float(xp.finfo(dtype).eps) * float(xp.linalg.vector_norm(Y))
    Y = Y + nu * Q
    core = Q.T @ Y
    C = xp.linalg.cholesky(0.5 * (core + core.T))
    # B = Y C^-T, then G_nu ~ B B^T.
    B = xp.linalg.solve(C, Y.T).T
    U, S, _ = xp.linalg.svd(B, full_matrices=False)
    s = xp.clip(S * S - nu, 0.0, None)
    return NystromApproximation(U, s)
