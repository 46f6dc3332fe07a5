"""The Lanczos recurrence, and what is built on it: ``log det H`` by stochastic Lanczos quadrature.

The same block recurrence serves the log evidence of the iterative solvers
(:func:`logdet_slq`) and the sgd solver's estimate of the largest curvature
(:func:`lanczos_tridiagonals`).
"""

import numpy as np
from scipy.linalg import eigh_tridiagonal
from sklearn.utils import check_random_state

from .._backend import asarray_on, get_namespace as get_xp, to_numpy

__all__ = ["lanczos_tridiagonals", "logdet_slq"]


def lanczos_tridiagonals(matmat, V, n_steps):
    """Run ``n_steps`` Lanczos steps from every column of ``V`` at once.

    Parameters
    ----------
    matmat : callable
        ``matmat(V)``: a symmetric operator applied to a ``(d, k)`` block.
    V : array of shape (d, k)
        Start vectors, each of unit norm.
    n_steps : int

    Returns
    -------
    list of (ndarray, ndarray)
        Per column, the diagonal and off-diagonal of its tridiagonal matrix
        (host NumPy), cut where the recurrence broke down (an invariant
        subspace: the Ritz values are then exact). The off-diagonal has the
        same length as the diagonal; its last entry is the residual norm
        ``beta_m`` that bounds the Ritz values' error.
    """
    xp = get_xp(V)
    V_prev = xp.zeros_like(V)
    beta_prev = xp.zeros_like(V[0, :])
    alphas, betas = [], []
    for _ in range(n_steps):
        W = matmat(V) - V_prev * beta_prev[None, :]
        a = xp.sum(W * V, axis=0)
        W = W - V * a[None, :]
        b = xp.linalg.vector_norm(W, axis=0)
        alphas.append(a)
        betas.append(b)
        safe = xp.where(b > 0, b, xp.ones_like(b))
        V_prev, V, beta_prev = V, W / safe[None, :], b
    A = to_numpy(xp.stack(alphas))
    B = to_numpy(xp.stack(betas))
    out = []
    for p in range(A.shape[1]):
        steps = n_steps
        for j in range(n_steps - 1):
            if B[j, p] <= 1e-12 * max(np.max(np.abs(A[: j + 1, p])), 1e-300):
                steps = j + 1
                break
        out.append((A[:steps, p], B[:steps, p]))
    return out


def logdet_slq(system, n_probes=16, n_steps=30, random_state=None):
    """Estimate ``log det H`` by stochastic Lanczos quadrature.

    ``log det H = Tr(log H) = E[v^T log(H) v]`` for Rademacher ``v``; each
    quadratic form is the Gauss quadrature given by ``n_steps`` Lanczos steps
    started at ``v`` (Ubaru, Chen and Saad, 2017). All probes advance
    together, one block product with ``H`` per step.

    Parameters
    ----------
    system : PosteriorPrecision
        Symmetric positive definite operator of size ``d``.
    n_probes : int, default=16
        Number of Rademacher probe vectors.
    n_steps : int, default=30
        Lanczos steps per probe (capped at ``d``).
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    float
    """
    xp = system.xp
    d = system.shape[0]
    rng = check_random_state(random_state)
    m = min(n_steps, d)
    signs = rng.randint(0, 2, size=(d, n_probes)) * 2.0 - 1.0
    V = asarray_on(signs / np.sqrt(d), xp, system.features.device, system.dtype)
    total = 0.0
    for diag, off in lanczos_tridiagonals(system.matmat, V, m):
        theta, U = eigh_tridiagonal(diag, off[:-1])
        total += d * float(np.sum(U[0] ** 2 * np.log(np.clip(theta, np.finfo(float).tiny, None))))
    return total / n_probes
