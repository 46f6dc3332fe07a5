"""A randomized Nystrom approximation of the data curvature ``G = Phi^T W Phi``, and the CG preconditioner built on it.

Frangella, Tropp and Udell (2023), "Randomized Nystrom preconditioning":
one block product ``Y = G Omega`` with a Gaussian test matrix of ``rank``
columns gives ``G ~ U diag(s) U^T``. ``G`` does not depend on the
hyperparameters, so an evidence loop forms it once and preconditions every
``H = alpha G + A`` with it.

Scalar prior ``A = lambda I`` (their preconditioner):

``P^-1 = U diag((alpha s_l + lambda) / (alpha s + lambda)) U^T + (I - U U^T)``

(``s_l`` the smallest captured eigenvalue), which maps the captured top of
``H``'s spectrum onto ``alpha s_l + lambda``, the level of the rest.

Per-parameter (diagonal) prior: the sketch is taken of the Jacobi-scaled
``S G S``, ``S = diag(G)^-1/2``, whose unit diagonal puts parameters of very
different curvature (a network's layers, a g-prior) on one footing, and

``P = S^-1 (D + alpha U diag(s) U^T) S^-1``,
``D = S A S + alpha max(1 - diag(U diag(s) U^T), 0)``:

the captured part exactly, and the diagonal of what the sketch missed (at
rank 0 this is Jacobi, ``P = diag(H)``). ``P^-1`` is applied by the
Woodbury identity, one ``r x r`` system factored once per ``(alpha, A)``.
"""

import numpy as np

from .._backend import create, device, get_namespace, standard_normal

__all__ = ["NystromApproximation", "randomized_nystrom", "jacobi_scale"]


class NystromApproximation:
    """``S G S ~ U diag(s) U^T`` with orthonormal ``U`` (d x r), ``s`` descending, ``s >= 0``.

    Parameters
    ----------
    U : array of shape (d, r)
    s : array of shape (r,)
    scale : array of shape (d,), optional
        The diagonal ``S`` the sketch was taken of (None: the identity).
    diagonal : array of shape (d,), optional
        ``diag(S G S)``: with it the per-parameter preconditioner also
        carries the diagonal of the uncaptured remainder.
    """

    def __init__(self, U, s, scale=None, diagonal=None):
        self.U = U
        self.s = s
        self.scale = scale
        self.diagonal = diagonal

    @property
    def rank(self):
        """Number of captured directions."""
        return self.s.shape[0]

    def preconditioner(self, alpha, prior, min_gain=None):
        """Return ``apply(R) = P^-1 R`` for ``H = alpha G + A``.

        Parameters
        ----------
        alpha : float
        prior : float or array of shape (d,)
            ``A``: a scalar times the identity, or its diagonal.
        min_gain : float, optional
            Scaled sketches only: keep the captured directions only if
            ``(alpha s_1 + a) / (alpha s_r + a) >= min_gain``, ``a`` the
            mean of the scaled prior ``S A S``: about the factor by which
            they shrink the top of the spectrum. Below it (a flat spectrum,
            nothing to gain) the preconditioner is Jacobi, whose
            application costs ``d k`` instead of ``4 d r k``.

        Returns
        -------
        callable
        """
        if np.ndim(prior) == 0 and self.scale is None:
            return self._scalar_preconditioner(alpha, prior)
        return self._woodbury_preconditioner(alpha, prior, min_gain)

    def _scalar_preconditioner(self, alpha, lam):
        U, s = self.U, self.s
        floor = alpha * s[-1] + lam
        scale = floor / (alpha * s + lam) - 1.0

        def apply(R):
            UR = U.T @ R
            return R + U @ (UR * scale[:, None])

        return apply

    def _woodbury_preconditioner(self, alpha, prior, min_gain=None):
        U, s, S = self.U, self.s, self.scale
        xp = get_namespace(U)
        D = prior if S is None else prior * S * S
        if np.ndim(D) == 0:
            D = create(xp, "full", (U.shape[0],), float(D), dtype=U.dtype, device_=device(U))
        s_col = None if S is None else S[:, None]
        if min_gain is not None and self.diagonal is not None:
            level = float(xp.mean(D))
            if alpha * float(s[0]) + level < min_gain * (alpha * float(s[-1]) + level):
                # The diagonal of the scaled H: Jacobi on H itself.
                jacobi = D + alpha * self.diagonal
                jacobi = (1.0 / jacobi)[:, None] if s_col is None else s_col * s_col / jacobi[:, None]
                return lambda R: jacobi * R
        if self.diagonal is not None:
            remainder = self.diagonal - xp.sum(U * U * s[None, :], axis=1)
            D = D + alpha * xp.clip(remainder, 0.0, None)
        d_inv = (1.0 / D)[:, None]
        # P = D + V V^T with V = U sqrt(alpha s): Woodbury needs only
        # K = I + V^T D^-1 V (r x r, eigenvalues >= 1, so well conditioned).
        V = U * xp.sqrt(alpha * s)[None, :]
        W = d_inv * V
        eye = create(xp, "eye", U.shape[1], dtype=U.dtype, device_=device(U))
        M = W @ xp.linalg.inv(eye + V.T @ W)

        def apply(R):
            T = R if s_col is None else s_col * R
            Y = d_inv * T - M @ (W.T @ T)
            return Y if s_col is None else s_col * Y

        return apply


def jacobi_scale(gram_diagonal, xp):
    """``S = diag(G)^-1/2``, with zero (dead) columns given the scale of the largest.

    A zero column of ``G`` stays zero under any scaling, so its entry only
    needs to be finite.
    """
    top = xp.max(gram_diagonal)
    floor = xp.where(top > 0, top, xp.ones_like(top)) * float(xp.finfo(gram_diagonal.dtype).eps)
    return 1.0 / xp.sqrt(xp.maximum(gram_diagonal, floor))


def randomized_nystrom(gram_times, d, rank, xp, dtype, device_=None, seed=0, scale=None, gram_diagonal=None):
    """Randomized Nystrom approximation of a PSD ``G`` (or of ``S G S``) from one block product.

    Frangella, Tropp and Udell (2023), Algorithm 2.1.

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
    scale : array of shape (d,), optional
        Approximate ``S G S`` with ``S = diag(scale)`` instead of ``G``.
    gram_diagonal : array of shape (d,), optional
        ``diag(G)``, kept (scaled) for the remainder term of the
        per-parameter preconditioner.

    Returns
    -------
    NystromApproximation
    """
    rank = min(rank, d)
    Omega = standard_normal(np.random.RandomState(seed), (d, rank), xp, dtype, device_)
    Q, _ = xp.linalg.qr(Omega)
    Y = gram_times(Q) if scale is None else scale[:, None] * gram_times(scale[:, None] * Q)
    # A shift of the size of rounding keeps the small core factorisable.
    nu = float(np.sqrt(d)) * float(xp.finfo(dtype).eps) * float(xp.linalg.vector_norm(Y))
    Y = Y + nu * Q
    core = Q.T @ Y
    C = xp.linalg.cholesky(0.5 * (core + core.T))
    # B = Y C^-T, then G_nu ~ B B^T.
    B = xp.linalg.solve(C, Y.T).T
    U, S, _ = xp.linalg.svd(B, full_matrices=False)
    s = xp.clip(S * S - nu, 0.0, None)
    diagonal = None
    if gram_diagonal is not None:
        diagonal = gram_diagonal if scale is None else gram_diagonal * scale * scale
    return NystromApproximation(U, s, scale, diagonal)

