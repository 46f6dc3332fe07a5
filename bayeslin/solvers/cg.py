"""Batched conjugate gradients: one pass over ``Phi`` per iteration for the whole block.

scipy.sparse.linalg.cg solves one right-hand side at a time; here every
column of the block runs its own CG recurrence, but the products with ``H``
are taken on the whole block at once (a matrix-matrix product), so each pass
over the data serves the posterior mean and every sample.
"""

import numpy as np

from .._backend import to_numpy
from ._system import SolverResult
from .nystrom import sketch_of

__all__ = ["solve_cg", "auto_preconditioner"]

# Iterations between two reads of the residual norms by the host.
_CHECK_EVERY = 4
# Restarts from the true residual when the recurrence's one claims convergence falsely.
_MAX_RESTARTS = 3
# preconditioner='auto' sketches at most d / NYSTROM_MIN_DIM_FACTOR columns,
# and none when that is below NYSTROM_MIN_RANK.
NYSTROM_MIN_DIM_FACTOR = 4
NYSTROM_MIN_RANK = 16
# preconditioner='auto' applies the sketch only where it flattens the top of
# H's spectrum by at least this factor (about half the iterations); a flat
# spectrum (well-conditioned dense or hashed sparse features) keeps plain CG,
# whose iterations then cost no 4 d r k flops of application.
NYSTROM_MIN_GAIN = 4.0


def solve_cg(system, rhs, x0=None, *, tol=1e-6, max_iter=1000, preconditioner=None, preconditioner_rank=128):
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
    preconditioner : {None, 'auto', 'jacobi', 'nystrom'}, default=None
        ``'jacobi'`` divides residuals by the diagonal of ``H``;
        ``'nystrom'`` applies the randomized Nystrom preconditioner of
        :mod:`bayeslin.solvers.nystrom` (scalar or per-parameter prior),
        its approximation of ``Phi^T W Phi`` formed once per evidence loop
        (one block product of ``preconditioner_rank`` columns) and kept in
        ``system.statistics``. ``'auto'`` (what :func:`solver_options`
        gives the estimators) forms it with rank
        ``min(preconditioner_rank, d // 4)`` (none below 16) and applies it
        where its captured spectrum is not flat (see
        :meth:`~bayeslin.solvers.nystrom.NystromApproximation.gain`);
        plain CG otherwise.
    preconditioner_rank : int, default=128
        Rank of the Nystrom approximation (128: on a 13,066-parameter
        network's curvature it halves the passes of the first, worst
        conditioned, evidence step; the sketch costs ``128 / k`` passes).

    Returns
    -------
    SolverResult
        ``residual_norms`` are the true relative residuals ``||R - H X|| / ||R||``
        at the returned ``X`` (one more product with ``H``); when the
        recurrence's residual met ``tol`` but the true one does not (rounding
        on an ill-conditioned ``H``), CG restarts from the true residual (at
        most three times, within ``max_iter``). ``info['restarts']`` counts them;
        ``info['passes']`` counts the passes over the data, in products with
        ``H`` of the block's width: the iterations, the residual checks, and
        forming the preconditioner when this call formed it (the sketch of
        ``rank`` columns counts ``rank / k``).
    """
    xp = system.xp
    X = xp.zeros_like(rhs) if x0 is None else xp.asarray(x0, copy=True)
    R = rhs - system.matmat(X) if x0 is not None else xp.asarray(rhs, copy=True)
    k = rhs.shape[1]
    statistics_before = (system.statistics.gram_diagonal, system.statistics.nystrom)
    precondition = _preconditioner(system, preconditioner, preconditioner_rank)
    passes = (x0 is not None) + _setup_passes(system, statistics_before, k)
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
        passes += 1
        if n_iter >= max_iter or float(xp.max(rel)) <= tol or restarts >= _MAX_RESTARTS:
            break
        restarts += 1
    rel_host = to_numpy(rel)
    info = {"restarts": restarts, "passes": passes + n_iter}
    return SolverResult(X, n_iter, rel_host, bool(np.all(rel_host <= tol)), info)


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


def _setup_passes(system, before, k):
    """Passes over the data, in products with ``k`` columns, that forming the preconditioner took in this call."""
    stats = system.statistics
    passes = 0.0
    if stats.gram_diagonal is not None and before[0] is None:
        passes += 1.0  # diag(Phi^T W Phi): one pass
    if stats.nystrom is not None and stats.nystrom is not before[1]:
        passes += stats.nystrom.rank / k  # one product with rank columns
    return passes


def _preconditioner(system, name, rank):
    """``apply(R) = P^-1 R`` for the named preconditioner, or None."""
    automatic = name == "auto"
    if automatic:
        name, rank = auto_preconditioner(system.shape[0], rank)
    if name is None:
        return None
    if name == "jacobi":
        diag_inv = 1.0 / system.diagonal()[:, None]
        return lambda R: R * diag_inv
    if name == "nystrom":
        approx = sketch_of(system, rank)
        if automatic and approx.gain(system.alpha, system.prior) < NYSTROM_MIN_GAIN:
            return None
        return approx.preconditioner(system.alpha, system.prior)
    raise ValueError(f"Unknown preconditioner {name!r}; use None, 'auto', 'jacobi' or 'nystrom'.")


def auto_preconditioner(d, rank):
    """``(name, rank)`` of the preconditioner ``'auto'`` forms: Nystrom of rank at most ``d // 4``, or None.

    A sketch of more than a quarter of ``d`` columns (and its
    ``d x rank`` factorisation) costs about what CG needs without it; below
    ``NYSTROM_MIN_RANK`` columns it captures too little to pay.
    """
    rank = min(rank, d // NYSTROM_MIN_DIM_FACTOR)
    return ("nystrom", rank) if rank >= NYSTROM_MIN_RANK else (None, rank)
