"""Batched conjugate gradients: one pass over ``Phi`` per iteration for the whole block.

scipy.sparse.linalg.cg solves one right-hand side at a time; here every
column of the block runs its own CG recurrence, but the products with ``H``
are taken on the whole block at once (a matrix-matrix product), so each pass
over the data serves the posterior mean and every sample.
"""

import numpy as np

from .._backend import to_numpy
from ._system import SolverResult

__all__ = ["solve_cg"]

# Iterations between two reads of the residual norms by the host.
_CHECK_EVERY = 4


def solve_cg(system, rhs, x0=None, *, tol=1e-6, max_iter=1000, preconditioner=None):
    """Solve ``H X = R`` by conjugate gradients on every column at once.

    Parameters
    ----------
    system : PosteriorPrecision
        The symmetric positive definite operator ``H``.
    rhs : array of shape (d, k)
        Right-hand sides.
    x0 : array of shape (d, k), optional
        Warm start (zeros when omitted).
    tol : float, default=1e-6
        Stop a column when ``||R - H X|| <= tol * ||R||``.
    max_iter : int, default=1000
        Iteration cap.
    preconditioner : {None, 'jacobi'}, default=None
        ``'jacobi'`` divides residuals by the diagonal of ``H``.

    Returns
    -------
    SolverResult
        ``residual_norms`` are the relative residuals of the recurrence.
    """
    xp = system.xp
    X = xp.zeros_like(rhs) if x0 is None else xp.asarray(x0, copy=True)
    R = rhs - system.matmat(X) if x0 is not None else xp.asarray(rhs, copy=True)
    inv_diag = None
    if preconditioner == "jacobi":
        inv_diag = 1.0 / _diagonal(system)[:, None]
    elif preconditioner is not None:
        raise ValueError(f"Unknown preconditioner {preconditioner!r}; use None or 'jacobi'.")

    rhs_norm = xp.linalg.vector_norm(rhs, axis=0)
    rhs_norm = xp.where(rhs_norm > 0, rhs_norm, xp.ones_like(rhs_norm))
    Z = R if inv_diag is None else R * inv_diag
    P = xp.asarray(Z, copy=True)
    rz = xp.sum(R * Z, axis=0)
    rel = xp.linalg.vector_norm(R, axis=0) / rhs_norm
    n_iter = 0
    while n_iter < max_iter:
        # The host reads the residuals back only every few iterations: a
        # column that converges in between is frozen on the device anyway.
        if n_iter % _CHECK_EVERY == 0 and float(xp.max(rel)) <= tol:
            break
        active = rel > tol
        Q = system.matmat(P)
        pq = xp.sum(P * Q, axis=0)
        step = xp.where(active & (pq > 0), rz / xp.where(pq > 0, pq, xp.ones_like(pq)), xp.zeros_like(pq))
        X = X + P * step[None, :]
        R = R - Q * step[None, :]
        Z = R if inv_diag is None else R * inv_diag
        rz_new = xp.sum(R * Z, axis=0)
        # Converged columns are frozen: no step, and no search direction to carry.
        beta = xp.where(active & (rz > 0), rz_new / xp.where(rz > 0, rz, xp.ones_like(rz)), xp.zeros_like(rz))
        P = Z + P * beta[None, :]
        rz = rz_new
        rel = xp.where(active, xp.linalg.vector_norm(R, axis=0) / rhs_norm, rel)
        n_iter += 1
    rel_host = to_numpy(rel)
    return SolverResult(X, n_iter, rel_host, bool(np.all(rel_host <= tol)), {})


def _diagonal(system):
    """Diagonal of ``H``: ``alpha * sum_i w_i Phi_ij^2 + A_jj`` (its data part computed once per loop)."""
    stats = system.statistics
    if stats.gram_diagonal is None:
        stats.gram_diagonal = system.features.col_sq_norms(system.weights)
    return system.alpha * stats.gram_diagonal + system.prior
