"""Batched conjugate gradients: one pass over ``Phi`` per iteration for the whole block.

scipy.sparse.linalg.cg solves one right-hand side at a time; here every
column of the block runs its own CG recurrence, but the products with ``H``
are taken on the whole block at once (a matrix-matrix product), so each pass
over the data serves the posterior mean and every sample.
"""

import numpy as np

from .._backend import to_numpy
from ._system import SolverResult
from .nystrom import randomized_nystrom

__all__ = ["solve_cg"]

# Iterations between two reads of the residual norms by the host.
_CHECK_EVERY = 4
# Restarts from the true residual when the recurrence's one claims convergence falsely.
_MAX_RESTARTS = 3


def solve_cg(system, rhs, x0=None, *, tol=1e-6, max_iter=1000, preconditioner=None, preconditioner_rank=64):
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
    preconditioner : {None, 'jacobi', 'nystrom'}, default=None
        ``'jacobi'`` divides residuals by the diagonal of ``H``;
        ``'nystrom'`` (scalar prior only) applies the randomized Nystrom
        preconditioner of :mod:`bayeslin.solvers.nystrom`, its approximation
        of ``Phi^T W Phi`` formed once per evidence loop (one block product
        of ``preconditioner_rank`` columns) and kept in ``system.statistics``.
    preconditioner_rank : int, default=64
        Rank of the Nystrom approximation.

    Returns
    -------
    SolverResult
        ``residual_norms`` are the true relative residuals ``||R - H X|| / ||R||``
        at the returned ``X`` (one more product with ``H``); when the
        recurrence's residual met ``tol`` but the true one does not (rounding
        on an ill-conditioned ``H``), CG restarts from the true residual (at
        most three times, within ``max_iter``). ``info['restarts']`` counts them.
    """
    xp = system.xp
    X = xp.zeros_like(rhs) if x0 is None else xp.asarray(x0, copy=True)
    R = rhs - system.matmat(X) if x0 is not None else xp.asarray(rhs, copy=True)
    precondition = None
    if preconditioner == "jacobi":
        diag_inv = 1.0 / _diagonal(system)[:, None]

        def precondition(R):
            return R * diag_inv

    elif preconditioner == "nystrom":
        if not system.scalar_prior:
            raise ValueError("preconditioner='nystrom' needs a scalar prior; use 'jacobi' with per-parameter priors.")
        precondition = _nystrom(system, preconditioner_rank).preconditioner(system.alpha, system.prior)
    elif preconditioner is not None:
        raise ValueError(f"Unknown preconditioner {preconditioner!r}; use None, 'jacobi' or 'nystrom'.")

    rhs_norm = xp.linalg.vector_norm(rhs, axis=0)
    rhs_norm = xp.where(rhs_norm > 0, rhs_norm, xp.ones_like(rhs_norm))
    n_iter, restarts = 0, 0
    while True:
        X, R, rel, n_iter = _iterate(system, X, R, rhs_norm, precondition, tol, max_iter, n_iter)
        # The recurrence's residual drifts from the true one on ill-conditioned
        # systems (rounding in the updates): confirm the stop on rhs - H X,
        # one more pass, and restart from it while the true residual is
        # still above tol and iterations remain.
        R = rhs - system.matmat(X)
        rel = xp.linalg.vector_norm(R, axis=0) / rhs_norm
        if n_iter >= max_iter or float(xp.max(rel)) <= tol or restarts >= _MAX_RESTARTS:
            break
        restarts += 1
    rel_host = to_numpy(rel)
    return SolverResult(X, n_iter, rel_host, bool(np.all(rel_host <= tol)), {"restarts": restarts})


def _iterate(system, X, R, rhs_norm, precondition, tol, max_iter, n_iter):
    """Run (preconditioned) CG on every column from ``X`` with residual ``R`` until the recurrence meets ``tol``."""
    xp = system.xp
    Z = R if precondition is None else precondition(R)
    P = xp.asarray(Z, copy=True)
    rz = xp.sum(R * Z, axis=0)
    rel = xp.linalg.vector_norm(R, axis=0) / rhs_norm
    first = n_iter
    while n_iter < max_iter:
        # The host reads the residuals back only every few iterations: a
        # column that converges in between is frozen on the device anyway.
        if (n_iter - first) % _CHECK_EVERY == 0 and float(xp.max(rel)) <= tol:
            break
        active = rel > tol
        Q = system.matmat(P)
        pq = xp.sum(P * Q, axis=0)
        step = xp.where(active & (pq > 0), rz / xp.where(pq > 0, pq, xp.ones_like(pq)), xp.zeros_like(pq))
        X = X + P * step[None, :]
        R = R - Q * step[None, :]
        Z = R if precondition is None else precondition(R)
        rz_new = xp.sum(R * Z, axis=0)
        # Converged columns are frozen: no step, and no search direction to carry.
        beta = xp.where(active & (rz > 0), rz_new / xp.where(rz > 0, rz, xp.ones_like(rz)), xp.zeros_like(rz))
        P = Z + P * beta[None, :]
        rz = rz_new
        rel = xp.where(active, xp.linalg.vector_norm(R, axis=0) / rhs_norm, rel)
        n_iter += 1
    return X, R, rel, n_iter


def _nystrom(system, rank):
    """The Nystrom approximation of ``Phi^T W Phi``, formed once per loop (shared statistics)."""
    stats = system.statistics
    if stats.nystrom is None or stats.nystrom.rank != min(rank, system.shape[0]):
        F, w = system.features, system.weights
        stats.nystrom = randomized_nystrom(
            lambda V: F.gram_times(V, w), system.shape[0], rank, system.xp, system.dtype, F.device
        )
    return stats.nystrom


def _diagonal(system):
    """Diagonal of ``H``: ``alpha * sum_i w_i Phi_ij^2 + A_jj`` (its data part computed once per loop)."""
    stats = system.statistics
    if stats.gram_diagonal is None:
        stats.gram_diagonal = system.features.col_sq_norms(system.weights)
    return system.alpha * stats.gram_diagonal + system.prior
