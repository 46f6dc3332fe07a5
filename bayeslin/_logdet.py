"""Stochastic Lanczos quadrature for ``log det H`` (matrix-free log evidence)."""

import numpy as np
from sklearn.utils import check_random_state

from ._backend import asarray_on, to_numpy

__all__ = ["logdet_slq"]


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
    V_prev = xp.zeros_like(V)
    beta_prev = xp.zeros_like(V[0, :])
    alphas, betas = [], []
    for j in range(m):
        W = system.matmat(V) - V_prev * beta_prev[None, :]
        a = xp.sum(W * V, axis=0)
        W = W - V * a[None, :]
        b = xp.linalg.vector_norm(W, axis=0)
        alphas.append(a)
        betas.append(b)
        safe = xp.where(b > 0, b, xp.ones_like(b))
        V_prev, V, beta_prev = V, W / safe[None, :], b
    A = to_numpy(xp.stack(alphas))
    B = to_numpy(xp.stack(betas))
    total = 0.0
    for p in range(n_probes):
        # Stop a probe's recurrence where it broke down (an invariant subspace).
        steps = m
        for j in range(m - 1):
            if B[j, p] <= 1e-12 * max(abs(A[j, p]), 1.0):
                steps = j + 1
                break
        T = np.diag(A[:steps, p]) + np.diag(B[: steps - 1, p], 1) + np.diag(B[: steps - 1, p], -1)
        theta, U = np.linalg.eigh(T)
        total += d * float(np.sum(U[0] ** 2 * np.log(np.clip(theta, np.finfo(float).tiny, None))))
    return total / n_probes
