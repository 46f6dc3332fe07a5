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

from .._backend import create
from ._system import SolverResult

__all__ = ["ExactFactorization", "exact_factorization", "solve_exact"]


class _EigenBasis:
    """``G = V diag(s) V^T`` from the namespace's ``eigh`` (NumPy or CuPy)."""

    def __init__(self, G, xp):
        s, self.vectors = xp.linalg.eigh(G)
        self.eigenvalues = xp.clip(s, 0.0, None)

    def to_basis(self, R):
        return self.vectors.T @ R

    def from_basis(self, U):
        return self.vectors @ U

    def shifted_solve(self, alpha, lam, U):
        """``(alpha S + lam I)^-1 U`` in the basis."""
        return U / (alpha * self.eigenvalues + lam)[:, None]

    def shifted_inv_sqrt(self, alpha, lam, U):
        """``C U`` with ``C C^T = (alpha S + lam I)^-1`` in the basis."""
        return U / ((alpha * self.eigenvalues + lam) ** 0.5)[:, None]


class _TridiagonalBasis:
    """``G = Q T Q^T`` with ``T`` tridiagonal and ``Q`` kept as Householder reflectors.

    LAPACK's ``sytrd`` costs a fraction of a full ``eigh`` (no eigenvectors,
    no back-transformation), and every ``(alpha, lambda)`` only needs
    ``alpha T + lambda I``, which is tridiagonal: solves and square roots
    cost O(d) per vector after applying ``Q^T``. NumPy float64 only.
    """

    def __init__(self, G):
        from scipy.linalg import eigvalsh_tridiagonal, lapack

        d = G.shape[0]
        lwork = int(lapack.dsytrd_lwork(d, lower=1)[0])
        c, self.diag, self.off, self.tau, info = lapack.dsytrd(G, lower=1, lwork=max(lwork, 1), overwrite_a=1)
        if info != 0:  # pragma: no cover - LAPACK argument errors only
            raise np.linalg.LinAlgError(f"LAPACK dsytrd failed with info={info}")
        # Q = H(1)...H(d-1) acts on rows 2..d as the QR factor stored below the subdiagonal.
        self.reflectors = np.asfortranarray(c[1:, :-1])
        self.eigenvalues = np.clip(eigvalsh_tridiagonal(self.diag, self.off), 0.0, None) if d > 1 else np.clip(self.diag, 0.0, None)

    def _apply(self, trans, R):
        out = np.array(R, dtype=np.float64, order="F", copy=True)
        if out.shape[0] > 1 and out.shape[1] > 0:
            from scipy.linalg import lapack

            work = lapack.dormqr("L", trans, self.reflectors, self.tau, out[1:], lwork=-1)[1]
            res = lapack.dormqr("L", trans, self.reflectors, self.tau, out[1:], lwork=int(work[0].real))
            out[1:] = res[0]
        return out

    def to_basis(self, R):
        return self._apply("T", R)

    def from_basis(self, U):
        return self._apply("N", U)

    def _shifted(self, alpha, lam):
        return alpha * self.diag + lam, alpha * self.off

    def shifted_solve(self, alpha, lam, U):
        from scipy.linalg import lapack

        d, e = self._shifted(alpha, lam)
        U = np.asarray(U, dtype=np.float64)
        if d.shape[0] == 1:
            return U / d[0]
        *_, x, info = lapack.dptsv(d, e, U)
        if info != 0:
            raise np.linalg.LinAlgError(
                f"alpha*T + lambda*I is not positive definite (LAPACK dptsv info={info}); "
                "the features are numerically rank deficient at this lambda."
            )
        return x

    def shifted_inv_sqrt(self, alpha, lam, U):
        from scipy.linalg import lapack, solve_banded

        d, e = self._shifted(alpha, lam)
        if d.shape[0] == 1:
            return np.asarray(U, dtype=np.float64) / np.sqrt(d[0])
        dd, ee, info = lapack.dpttrf(d, e)
        if info != 0:
            raise np.linalg.LinAlgError(f"alpha*T + lambda*I is not positive definite (LAPACK dpttrf info={info}).")
        # alpha T + lam I = L D L^T with L unit lower bidiagonal: C = L^-T D^-1/2.
        scaled = np.asarray(U, dtype=np.float64) / np.sqrt(dd)[:, None]
        if dd.shape[0] == 1:
            return scaled
        ab = np.zeros((2, dd.shape[0]))
        ab[0, 1:] = ee
        ab[1, :] = 1.0
        return solve_banded((0, 1), ab, scaled)


class ExactFactorization:
    """Spectral factorisation of ``G = Phi^T W Phi`` through its smaller side.

    Primal (``d <= n``): ``G = Q T Q^T`` (``T`` tridiagonal from LAPACK on
    NumPy, diagonal from ``eigh`` on other namespaces) and
    ``H^-1 = Q (alpha T + lambda I)^-1 Q^T``.

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
    n_features : int
    """

    def __init__(self, features, sqrt_weights=None):
        xp = features.xp
        n, d = features.shape
        self.n_features = d
        if d <= n:
            self.kind = "primal"
            G = features.gram(sqrt_weights)
            if isinstance(G, np.ndarray) and G.dtype == np.float64:
                self.basis = _TridiagonalBasis(G)
            else:
                self.basis = _EigenBasis(G, xp)
        else:
            self.kind = "dual"
            self.basis = _EigenBasis(features.kernel(sqrt_weights), xp)
        self.features = features
        self.sqrt_weights = sqrt_weights
        self._dual_range = None
        self.eigenvalues = self.basis.eigenvalues

    @property
    def xp(self):
        """Array namespace of the features."""
        return self.features.xp

    def _weighted_dual(self, U):
        """``W^1/2 U`` for ``U`` of shape (n, k)."""
        return U if self.sqrt_weights is None else U * self.sqrt_weights[:, None]

    @property
    def dual_range(self):
        """Orthonormal basis ``U`` (d x r) of the range of ``G`` and its eigenvalues ``s_r``.

        In the dual, ``U = Phi^T W^1/2 V S^-1/2`` over the eigenvalues that are
        not numerically zero, formed on first use: the evidence loop does not
        need it (see :meth:`posterior_mean`); solves, predictive variances and
        exact samples do.
        """
        if self._dual_range is None:
            xp = self.xp
            s = self.eigenvalues
            keep = s > float(xp.max(s)) * s.shape[0] * xp.finfo(s.dtype).eps
            # eigh sorts ascending, so the kept eigenvalues are a suffix: a
            # slice, which every array namespace indexes alike.
            first = s.shape[0] - int(xp.sum(xp.astype(keep, xp.int64)))
            V = self.basis.vectors[:, first:]
            s_r = s[first:]
            U = self.features.rmatmat(self._weighted_dual(V)) / (s_r**0.5)[None, :]
            self._dual_range = (U, s_r)
        return self._dual_range

    def posterior_mean(self, alpha, prior, y, rhs):
        """Return the posterior mean ``H^-1 alpha Phi^T W y``, shape (d, 1).

        Parameters
        ----------
        y : array of shape (n,)
            Targets.
        rhs : array of shape (d, 1)
            ``alpha Phi^T W y`` (used by the primal).

        Notes
        -----
        The dual takes BayesianRidge's route,
        ``Phi^T W^1/2 V diag(1 / (s + lambda / alpha)) V^T W^1/2 y``: one pass
        over ``Phi`` and no cancellation between the data and prior terms.
        """
        lam = self._check_prior(prior)
        if self.kind == "primal":
            return self.solve(alpha, lam, rhs)
        yw = y if self.sqrt_weights is None else y * self.sqrt_weights
        t = self.basis.to_basis(yw[:, None])[:, 0]
        return self.dual_coef(t / (self.eigenvalues + lam / alpha))[:, None]

    def dual_coef(self, w):
        """Return ``Phi^T W^1/2 V w``: weights from dual coordinates ``w`` (one pass), shape (d,)."""
        return self.features.rmatmat(self._weighted_dual(self.basis.from_basis(w[:, None])))[:, 0]

    def _check_prior(self, prior):
        if np.ndim(prior) != 0:
            raise NotImplementedError(
                "solver='exact' supports a scalar prior precision only; "
                "use solver='cg' or 'sgd' for a per-parameter prior."
            )
        return float(prior)

    def solve(self, alpha, prior, R):
        """Return ``H^-1 R`` for ``R`` of shape ``(d, k)``.

        In the dual, ``R`` is split into its part in the range of ``G``
        (solved with ``alpha s + lambda``) and the rest (divided by
        ``lambda``), the rest projected out twice so that no part of ``R``
        in the range leaks into the ``1 / lambda`` term: backward stable
        however large ``alpha s / lambda`` is.
        """
        lam = self._check_prior(prior)
        if self.kind == "primal":
            B = self.basis
            return B.from_basis(B.shifted_solve(alpha, lam, B.to_basis(R)))
        U, s = self.dual_range
        P = U.T @ R
        N = R - U @ P
        N = N - U @ (U.T @ N)
        return U @ (P / (alpha * s + lam)[:, None]) + N / lam

    def inverse_quadratic_forms(self, alpha, prior, rows, chunk_size=1024):
        """Return ``diag(X H^-1 X^T)`` for the rows ``X`` of a feature operator.

        Parameters
        ----------
        rows : FeatureOperator
            Query rows, shape ``(m, d)``.
        chunk_size : int, default=1024
            Query rows handled at once (bounds the dense ``d x chunk`` block).

        Returns
        -------
        array of shape (m,)
        """
        xp = self.xp
        lam = self._check_prior(prior)
        s = self.eigenvalues
        if self.kind == "dual":
            U, s = self.dual_range
            P = rows.matmat(U)
            in_range = xp.sum(P * P / (alpha * s + lam)[None, :], axis=1)
            null = xp.clip(rows.row_sq_norms() - xp.sum(P * P, axis=1), 0.0, None)
            return in_range + null / lam
        m = rows.shape[0]
        out = []
        for start in range(0, m, chunk_size):
            stop = min(m, start + chunk_size)
            Y = self.basis.to_basis(_rows_transposed(rows, start, stop))
            out.append(xp.sum(Y * self.basis.shifted_solve(alpha, lam, Y), axis=0))
        return xp.concat(out) if out else create(xp, "zeros", 0, dtype=rows.dtype, device_=rows.device)

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
        noise : array of shape (noise_rows, k)
            Standard normal numbers (see :attr:`noise_rows`).

        Returns
        -------
        z : array of shape (d, k)
        """
        lam = self._check_prior(prior)
        d = self.n_features
        if self.kind == "primal":
            B = self.basis
            return B.from_basis(B.shifted_inv_sqrt(alpha, lam, noise))
        # Sample-then-optimise with the exact solve: U S^1/2 g2 ~ N(0, G).
        U, s = self.dual_range
        rhs = lam**0.5 * noise[:d, :] + alpha**0.5 * (U @ (noise[d:, :] * (s**0.5)[:, None]))
        return self.solve(alpha, lam, rhs)

    @property
    def noise_rows(self):
        """Number of standard normal rows :meth:`sample` consumes per draw."""
        return self.n_features + (0 if self.kind == "primal" else self.dual_range[1].shape[0])


def _rows_transposed(rows, start, stop):
    """Rows ``start:stop`` of a feature operator as a dense ``(d, stop - start)`` block."""
    xp = rows.xp
    try:
        return rows.take_rows(create(xp, "arange", start, stop, device_=rows.device)).dense().T
    except NotImplementedError:
        # No row access (a LinearOperator): Phi^T applied to identity columns.
        E = create(xp, "eye", rows.shape[0], stop - start, k=-start, dtype=rows.dtype, device_=rows.device)
        return rows.rmatmat(E)


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
