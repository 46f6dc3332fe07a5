"""Minibatch SGD with Nesterov momentum and iterate averaging, for the whole block at once.

Every column ``x_j`` of the block minimises ``1/2 x^T H x - r_j^T x`` with
``H = alpha Phi^T W Phi + A``. The right-hand sides are exact (the caller
formed them with one pass), so a minibatch of ``b`` rows only has to estimate
the data term, ``(n / b) alpha Phi_b^T W_b Phi_b X``: no targets enter the
minibatch, which is the low-variance form of the sample-then-optimise
objective (Antoran et al., 2023; Lin et al., 2024). The prior term is exact.
One minibatch product serves every column.

Nothing is tuned by the user:

- The step size is ``1 / (L + L_noise)``. ``L = alpha s_max + max(A)`` is the
  largest curvature of the objective, with ``s_max`` the largest eigenvalue of
  ``Phi^T W Phi`` from a short Lanczos run (free of hyperparameters, so it is
  kept in ``system.statistics`` across an evidence loop).
  ``L_noise = alpha n (n - b) / (b (n - 1)) max_i w_i ||phi_i||^2`` bounds the
  minibatch Hessian error when rows are drawn without replacement:
  ``E ||(H_b - H) v||^2 <= L_noise v^T H v``. With the full data
  ``L_noise = 0`` and this is Nesterov's accelerated gradient descent.
- The momentum is Nesterov's constant ``(1 - sqrt(mu / L')) / (1 + sqrt(mu / L'))``
  for the one lower bound on the curvature that is known, ``mu = min(A)``,
  reached through the ``(k - 1) / (k + 2)`` ramp and restarted per column
  whenever a step goes uphill (O'Donoghue and Candes, 2015): an
  underestimated ``mu`` then costs little instead of making the iterates
  oscillate. Momentum amplifies minibatch noise by about ``1 / (1 - beta)``,
  so ``beta`` is also capped at ``1 - step L_noise``: small batches get
  little or no momentum, which is where acceleration brings nothing anyway.
  Without that cap small batches diverge.
- Every so often (every epoch at first, every tenth of the steps so far
  later, so the checks cost a vanishing share of a long run) the average of
  the recent iterates is checked with one full pass, ``H X_avg - R``. That
  pass is reused as the anchor of a control variate: the following minibatch
  gradients are ``H_b (Y - X_avg) + (H X_avg - R)``, unbiased, with an error
  that shrinks with ``Y - X_avg`` instead of staying at the size of
  ``(H_b - H) X*``. This is what lets a tolerance be met at a linear rate
  rather than at the ``1 / sqrt(t)`` of plain averaged SGD, for no extra
  pass over the data.
"""

import math

import numpy as np
from scipy.linalg import eigh_tridiagonal
from sklearn.utils import check_random_state

from .._backend import asarray_on, standard_normal, to_numpy
from ._system import SolverResult
from .lanczos import lanczos_tridiagonals

__all__ = ["solve_sgd"]

# Fewest steps between two full-pass checks: with the full data (one step per
# epoch) the checks then cost at most an eighth of the work.
_MIN_STEPS_PER_CHECK = 8
# Later checks come after this fraction of the steps taken so far: a long,
# ill-conditioned run overshoots its tolerance by at most about as much.
_CHECK_GROWTH = 0.1
# Lanczos steps for the largest eigenvalue of Phi^T W Phi.
_LANCZOS_STEPS = 20
# Below this many rows, or with more steps than this per epoch, the per-step
# overhead (a few dozen array operations, a row gather) starts to outweigh
# the arithmetic, on a GPU above all; past the critical batch size a bigger
# batch costs little progress per pass.
_MIN_BATCH_SIZE = 1024
_MAX_STEPS_PER_EPOCH = 256
# Row orders copied to the device per solve (an epoch uses one, rotated).
_N_ROW_ORDERS = 4


def solve_sgd(system, rhs, x0=None, *, tol=1e-4, max_iter=10000, batch_size=None, random_state=None):
    """Solve ``H X = R`` by minibatch SGD with Nesterov momentum and iterate averaging.

    Parameters
    ----------
    system : PosteriorPrecision
        The symmetric positive definite operator ``H``.
    rhs : array of shape (d, k)
        Right-hand sides, computed exactly by the caller.
    x0 : array of shape (d, k), optional
        Warm start (zeros when omitted). For posterior samples the
        regulariser's centre ``theta_n`` is a good one: the directions the
        data do not constrain then start at their optimum.
    tol : float, default=1e-4
        Stop when ``||R - H X|| <= tol * ||R||`` for every column. This is
        checked with a full pass on the averaged iterate, once per epoch at
        first and less often in long runs.
    max_iter : int, default=10000
        Cap on the number of minibatch steps.
    batch_size : int, optional
        Rows per minibatch. By default four times the critical batch size
        ``n max_i w_i ||phi_i||^2 / s_max`` of Ma, Bassily and Belkin (2018),
        beyond which bigger batches stop buying proportionally faster
        descent, and at least 1024 rows and ``n / 256``. The factor of four
        leaves room for momentum; the floors keep per-step overhead small.
        If that comes to more than half the rows, all rows are used, which
        gives plain accelerated gradient descent.
    random_state : int, RandomState instance or None, default=None
        Draws the minibatches and the Lanczos start vector.

    Returns
    -------
    SolverResult
        ``solution`` is the averaged iterate and ``residual_norms`` its true
        relative residuals ``||R - H X|| / ||R||`` (one full pass).
        ``n_iter`` is the number of minibatch steps. ``info`` holds
        ``batch_size``, ``step_size``, ``momentum`` (its cap),
        ``n_checks`` (full passes spent on checks) and ``lmax`` (the
        estimate of the largest eigenvalue of ``Phi^T W Phi``).
    """
    xp = system.xp
    rng = check_random_state(random_state)
    n = system.n_observations
    max_iter = int(max_iter)

    s_max = _gram_lmax(system, rng, rhs)
    r2 = _max_weighted_row_sq_norm(system)
    prior = to_numpy(system.prior)
    a_max, a_min = float(np.max(prior)), float(np.min(prior))

    b = _default_batch_size(n, s_max, r2) if batch_size is None else int(batch_size)
    if b < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    b = min(b, n)
    full = b == n
    steps_per_epoch = n // b

    noise = 0.0 if full else system.alpha * n * (n - b) / (b * (n - 1)) * r2
    step = 1.0 / (system.alpha * s_max + a_max + noise)
    q = math.sqrt(max(a_min, 0.0) * step)
    momentum = min((1.0 - q) / (1.0 + q), 1.0 - step * noise)

    rhs_norm = xp.linalg.vector_norm(rhs, axis=0)
    rhs_norm = xp.where(rhs_norm > 0, rhs_norm, xp.ones_like(rhs_norm))
    anchor = xp.zeros_like(rhs) if x0 is None else xp.asarray(x0, copy=True)
    # H X_avg - R: the convergence check and, until the next check, the
    # control variate's exact part, from one full pass.
    anchor_grad = system.matmat(anchor) - rhs
    rel = to_numpy(xp.linalg.vector_norm(anchor_grad, axis=0) / rhs_norm)
    n_checks = 1

    X = Y = anchor
    ramp = xp.zeros_like(rhs[0, :])
    zero, cap = xp.zeros_like(ramp), xp.full_like(ramp, momentum)
    n_iter = 0
    if not full:
        # Row orders are drawn on the host and copied once per solve, not per
        # epoch: each epoch takes one of them, rotated by a random offset.
        orders = asarray_on(
            np.stack([rng.permutation(n) for _ in range(_N_ROW_ORDERS)]), xp, system.features.device
        )
    while not np.all(rel <= tol) and n_iter < max_iter:
        # Whole epochs between checks, so every row weighs the same in an average.
        n_epochs = max(-(-_MIN_STEPS_PER_CHECK // steps_per_epoch), int(_CHECK_GROWTH * n_iter) // steps_per_epoch)
        n_steps = min(n_epochs * steps_per_epoch, max_iter - n_iter)
        # Average the second half: the first still carries the transient.
        n_avg = min(n_steps, max(1, n_epochs // 2) * steps_per_epoch)
        X_sum = xp.zeros_like(X)
        for t in range(n_steps):
            rows = None
            if not full:
                pos = (n_iter + t) % steps_per_epoch
                if pos == 0:
                    perm = xp.roll(orders[rng.randint(_N_ROW_ORDERS), :], int(rng.randint(n)))
                rows = perm[pos * b : (pos + 1) * b]
            D = Y - anchor
            grad = system.data_times(D, rows=rows, scale=n / b) + system.prior_times(D) + anchor_grad
            X_new = Y - step * grad
            delta = X_new - X
            # A column whose step goes uphill restarts its momentum ramp.
            uphill = xp.sum(grad * delta, axis=0) > 0
            ramp = xp.where(uphill, zero, ramp + 1.0)
            beta = xp.where(ramp > 1.0, xp.minimum((ramp - 1.0) / (ramp + 2.0), cap), zero)
            Y = X_new + beta[None, :] * delta
            X = X_new
            if t >= n_steps - n_avg:
                X_sum = X_sum + X
        n_iter += n_steps
        anchor = X_sum / n_avg
        anchor_grad = system.matmat(anchor) - rhs
        rel = to_numpy(xp.linalg.vector_norm(anchor_grad, axis=0) / rhs_norm)
        n_checks += 1

    info = {"batch_size": b, "step_size": step, "momentum": momentum, "n_checks": n_checks, "lmax": s_max}
    return SolverResult(anchor, n_iter, rel, bool(np.all(rel <= tol)), info)


def _default_batch_size(n, s_max, r2):
    """Four times the critical batch size, at least 1024 rows and 1/256 of them; all rows past half."""
    critical = n * r2 / s_max if s_max > 0 else float(n)
    b = max(_MIN_BATCH_SIZE, int(math.ceil(4 * critical)), -(-n // _MAX_STEPS_PER_EPOCH))
    return n if 2 * b > n else b


def _gram_times(system, V):
    """Return ``Phi^T W Phi @ V``, without ``alpha``: what is cached must not depend on it."""
    w = None if system.sqrt_weights is None else system.sqrt_weights**2
    return system.features.gram_times(V, w)


def _gram_lmax(system, rng, like):
    """Estimate the largest eigenvalue of ``Phi^T W Phi`` from above (cached).

    A Lanczos run from a random vector needs far fewer passes than power
    iteration for the same accuracy. Its largest Ritz value ``theta``
    approaches the eigenvalue from below. Adding the Ritz residual
    ``|beta_m s_m|``, the distance within which some eigenvalue is
    guaranteed to lie, turns it into an estimate from above (Zhou and Li,
    2011). The plain three-term recurrence is enough: lost orthogonality
    duplicates converged Ritz values but does not push them out of the
    spectrum.
    """
    if system.statistics.gram_lmax is not None:
        return system.statistics.gram_lmax
    d = system.shape[0]
    v = standard_normal(rng, (d, 1), system.xp, like.dtype, system.features.device)
    v = v / system.xp.linalg.vector_norm(v)
    ((diag, off),) = lanczos_tridiagonals(lambda V: _gram_times(system, V), v, min(_LANCZOS_STEPS, d))
    if np.max(np.abs(diag)) == 0.0:
        lmax = 0.0  # Phi^T W Phi = 0: only the prior is left
    else:
        theta, S = eigh_tridiagonal(diag, off[:-1])
        lmax = max(float(theta[-1] + abs(off[-1] * S[-1, -1])), 0.0)
    system.statistics.gram_lmax = lmax
    return lmax


def _max_weighted_row_sq_norm(system):
    """``max_i w_i ||phi_i||^2``: the largest curvature one observation adds (cached)."""
    stats = system.statistics
    if stats.max_row_sq_norm is None:
        sq = system.features.row_sq_norms()
        if system.sqrt_weights is not None:
            sq = sq * system.sqrt_weights**2
        stats.max_row_sq_norm = float(system.xp.max(sq))
    return stats.max_row_sq_norm
