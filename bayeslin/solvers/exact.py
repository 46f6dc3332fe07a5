"""The exact factorisation of the posterior precision, for scalar and per-parameter priors.

With a scalar prior ``A = lambda I`` the posterior precision is
``H = alpha G + lambda I`` with ``G = Phi^T W Phi``. One symmetric
eigendecomposition, of ``G`` (d x d, the primal) or of the kernel
``K = W^1/2 Phi Phi^T W^1/2`` (n x n, the dual), whichever is smaller, gives
``H^-1``, the effective dimension and ``log det H`` in closed form for every
``(alpha, lambda)``: an evidence loop factorises once. The dual never forms a
d x d matrix.

With a per-parameter (diagonal) prior ``A`` no such shift exists: ``G`` is
formed once and every ``(alpha, A)`` costs one Cholesky factorisation of
``alpha G + A`` (a network's parameter groups, a g-prior). Both routes answer
the same methods (mean, effective dimension per group, log-determinant,
samples, solves, predictive quadratic forms), so the evidence loop never
looks inside.
"""

import numpy as np

from .._backend import create, device, get_namespace, scalar, to_numpy

__all__ = ["ExactFactorization", "group_sums"]


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
    """Exact factorisation of ``H = alpha Phi^T W Phi + A`` for every ``(alpha, A)``.

    Scalar ``A = lambda I``, through the smaller side of ``G = Phi^T W Phi``:

    - primal (``d <= n``): ``G = Q T Q^T`` (``T`` tridiagonal from LAPACK on
      NumPy, diagonal from ``eigh`` on other namespaces) and
      ``H^-1 = Q (alpha T + lambda I)^-1 Q^T``;
    - dual (``d > n``): ``K = V diag(s) V^T``; with ``F = Phi^T W^1/2 V``
      (d x n), ``G = F F^T`` and, by the Woodbury identity,
      ``H^-1 = (I - F diag(alpha / (alpha s + lambda)) F^T) / lambda``.

    Diagonal ``A`` (an array of shape (d,)): ``alpha G + diag(A) = L L^T``
    by Cholesky, kept as ``C = L^-T`` (``C C^T = H^-1``) for the last
    ``(alpha, A)``: for networks of a few thousand parameters.

    Nothing is factorised before the first call that needs it. A pickled
    factorisation keeps what answers the methods at its last
    hyperparameters, not the features.

    Parameters
    ----------
    features : FeatureOperator
        ``Phi``, shape ``(n, d)``.
    sqrt_weights : array of shape (n,), optional
        Square roots of the sample weights.
    """

    def __init__(self, features, sqrt_weights=None):
        n, d = features.shape
        self.n_features = d
        self.kind = "primal" if d <= n else "dual"
        self.features = features
        self.sqrt_weights = sqrt_weights
        self._basis = None
        self._dual_range = None
        self._gram = None
        self._cholesky = None  # (key, C)

    def __getstate__(self):
        if self.kind == "dual" and self._basis is not None and self.features is not None:
            self.dual_range  # noqa: B018 - formed from the features before they go
        state = dict(self.__dict__)
        # Sized by the model, not the data: no features, no Gram matrix.
        state.update(features=None, sqrt_weights=None, _gram=None)
        if state["_basis"] is not None and self.kind == "dual":
            state["_basis"] = _Eigenvalues(self._basis.eigenvalues)
        return state

    def release_data(self):
        """Let go of the features and the Gram matrix if nothing needs them any more; return whether it did.

        A per-parameter prior's factor and a primal basis answer every method
        at the hyperparameters last used; a dual basis still forms its range
        from the features on first use, so it keeps them.
        """
        if self.kind == "dual" and self._cholesky is None:
            return False
        self.features = self.sqrt_weights = self._gram = None
        return True

    @property
    def basis(self):
        """The spectral basis of the smaller of ``G`` and ``K`` (formed on first use)."""
        if self._basis is None:
            self._require_features("the spectral factorisation")
            if self.kind == "primal":
                G = self.features.gram(self.sqrt_weights)
                if isinstance(G, np.ndarray) and G.dtype == np.float64:
                    self._basis = _TridiagonalBasis(G)
                else:
                    self._basis = _EigenBasis(G, self.xp)
            else:
                self._basis = _EigenBasis(self.features.kernel(self.sqrt_weights), self.xp)
        return self._basis

    @property
    def eigenvalues(self):
        """Eigenvalues ``s`` of ``G`` (the non-trivial ones, ``min(n, d)``), clipped at 0."""
        return self.basis.eigenvalues

    def _require_features(self, what):
        if self.features is None:
            raise RuntimeError(
                f"This posterior was unpickled without its training data, which {what} needs; refit the estimator."
            )

    @property
    def xp(self):
        """Array namespace of the factors."""
        if self._cholesky is not None:
            return get_namespace(self._cholesky[1])
        if self.features is not None:
            return self.features.xp
        return get_namespace(self.eigenvalues)

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
            self._require_features("the range of the dual factorisation")
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

    # -- the diagonal (per-parameter) prior: Cholesky of alpha G + diag(A) --

    def _covariance_factor(self, alpha, prior):
        """``C = L^-T`` with ``L L^T = alpha G + diag(A)``, for the last ``(alpha, A)``."""
        key = (float(alpha), tuple(to_numpy(prior).tolist()))
        if self._cholesky is None or self._cholesky[0] != key:
            if self._gram is None:
                self._require_features("a new factorisation")
                G = self.features.gram(self.sqrt_weights)
                self._gram = 0.5 * (G + G.T)
            xp, G = self.xp, self._gram
            eye = create(xp, "eye", G.shape[0], dtype=G.dtype, device_=device(G))
            L = xp.linalg.cholesky(alpha * G + eye * prior[None, :])
            # C = L^-T is a square root of H^-1: no second (ill-conditioned)
            # factorisation of the inverse is needed.
            self._cholesky = (key, xp.linalg.inv(L).T)
        return self._cholesky[1]

    def covariance_factor(self, alpha, prior):
        """Return ``C`` (d x d) with ``C C^T = H^-1`` (diagonal priors).

        Parameters
        ----------
        alpha : float
        prior : array of shape (d,)

        Returns
        -------
        array of shape (d, d)
            Upper triangular.
        """
        if np.ndim(prior) == 0:
            raise NotImplementedError("covariance_factor is formed for a per-parameter prior only.")
        return self._covariance_factor(alpha, prior)

    # -- what the evidence loop and the posterior ask --

    def posterior_mean(self, alpha, prior, rhs, y=None):
        """Return the posterior mean ``H^-1 rhs`` with what the evidence updates need.

        Parameters
        ----------
        alpha : float
        prior : float or array of shape (d,)
        rhs : array of shape (d, 1)
            The mean's right-hand side (``alpha Phi^T W y`` for regression).
        y : array of shape (n,), optional
            The targets behind ``rhs``. With them the dual takes
            BayesianRidge's route,
            ``Phi^T W^1/2 V diag(1 / (s + lambda / alpha)) V^T W^1/2 y``: one
            pass over ``Phi`` and no cancellation between the data and prior
            terms, and an evidence step costs O(n) (see :class:`SpectralMean`).

        Returns
        -------
        PosteriorMean or SpectralMean
        """
        if y is not None and self.kind == "dual" and np.ndim(prior) == 0:
            yw = y if self.sqrt_weights is None else y * self.sqrt_weights
            return SpectralMean(self, self.basis.to_basis(yw[:, None])[:, 0], alpha, float(prior))
        return PosteriorMean(self.solve(alpha, prior, rhs)[:, 0])

    def dual_coef(self, w):
        """Return ``Phi^T W^1/2 V w``: weights from dual coordinates ``w`` (one pass), shape (d,)."""
        return self.features.rmatmat(self._weighted_dual(self.basis.from_basis(w[:, None])))[:, 0]

    def solve(self, alpha, prior, R):
        """Return ``H^-1 R`` for ``R`` of shape ``(d, k)``.

        In the dual, ``R`` is split into its part in the range of ``G``
        (solved with ``alpha s + lambda``) and the rest (divided by
        ``lambda``), the rest projected out twice so that no part of ``R``
        in the range leaks into the ``1 / lambda`` term: backward stable
        however large ``alpha s / lambda`` is.
        """
        if np.ndim(prior) != 0:
            C = self._covariance_factor(alpha, prior)
            return C @ (C.T @ R)
        lam = float(prior)
        if self.kind == "primal":
            B = self.basis
            return B.from_basis(B.shifted_solve(alpha, lam, B.to_basis(R)))
        U, s = self.dual_range
        P = U.T @ R
        N = R - U @ P
        N = N - U @ (U.T @ N)
        return U @ (P / (alpha * s + lam)[:, None]) + N / lam

    def covariance(self, alpha, prior):
        """Return the dense posterior covariance ``H^-1``, shape ``(d, d)``, symmetric.

        ``d x d`` memory: for models small enough to hold it (BayesianRidge's
        ``sigma_``).

        Parameters
        ----------
        alpha : float
        prior : float or array of shape (d,)

        Returns
        -------
        array of shape (d, d)
        """
        if np.ndim(prior) != 0:
            C = self._covariance_factor(alpha, prior)
            S = C @ C.T
        else:
            # The eigenvalues live where the factors do, in their dtype.
            ref = self.eigenvalues
            xp = get_namespace(ref)
            eye = create(xp, "eye", self.n_features, dtype=ref.dtype, device_=device(ref))
            S = self.solve(alpha, prior, eye)
        return (S + S.T) / 2

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
        if np.ndim(prior) != 0:
            P = rows.matmat(self._covariance_factor(alpha, prior))
            return xp.sum(P * P, axis=1)
        lam = float(prior)
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

    def effective_dims(self, alpha, prior, groups=None):
        """Return ``gamma_g = Tr_g(H^-1 alpha G)`` per parameter group, host array.

        Parameters
        ----------
        groups : list of (int, int), optional
            Parameter groups tiling ``0..d`` (one group when None; a
            scalar prior takes one group only).
        """
        xp = self.xp
        d = self.n_features
        groups = [(0, d)] if groups is None else groups
        if np.ndim(prior) == 0:
            if len(groups) != 1:
                raise NotImplementedError("A scalar prior has one parameter group.")
            s = self.eigenvalues
            return np.array([float(xp.sum(alpha * s / (alpha * s + float(prior))))])
        # gamma_g = |g| - sum_{j in g} A_jj (H^-1)_jj.
        C = self._covariance_factor(alpha, prior)
        sizes = np.array([b - a for a, b in groups], dtype=np.float64)
        return sizes - to_numpy(group_sums(prior * xp.sum(C * C, axis=1), groups, xp))

    def effective_dim(self, alpha, prior):
        """Return ``gamma = Tr(H^-1 alpha G)``, the effective number of parameters."""
        return float(np.sum(self.effective_dims(alpha, prior)))

    def logdet(self, alpha, prior):
        """Return ``log det H``."""
        xp = self.xp
        if np.ndim(prior) != 0:
            C = self._covariance_factor(alpha, prior)
            return -2.0 * float(xp.sum(xp.log(xp.abs(xp.linalg.diagonal(C)))))
        lam = float(prior)
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
        d = self.n_features
        if np.ndim(prior) != 0:
            return self._covariance_factor(alpha, prior) @ noise
        lam = float(prior)
        if self.kind == "primal":
            B = self.basis
            return B.from_basis(B.shifted_inv_sqrt(alpha, lam, noise))
        # Sample-then-optimise with the exact solve: U S^1/2 g2 ~ N(0, G).
        U, s = self.dual_range
        rhs = lam**0.5 * noise[:d, :] + alpha**0.5 * (U @ (noise[d:, :] * (s**0.5)[:, None]))
        return self.solve(alpha, lam, rhs)

    @property
    def noise_rows(self):
        """Number of standard normal rows :meth:`sample` consumes per draw (``d`` with a per-parameter prior)."""
        return self.n_features + (0 if self.kind == "primal" else self.dual_range[1].shape[0])


class PosteriorMean:
    """The posterior mean ``coef`` at one evidence step."""

    sse = None  # the residual needs a pass over Phi, which the loop takes

    def __init__(self, coef):
        self.coef = coef
        self.coef_sq = scalar(get_namespace(coef).sum(coef * coef))

    def l1_change(self, other, tol):
        """``||coef - other.coef||_1`` (BayesianRidge's stopping test)."""
        return scalar(get_namespace(self.coef).sum(abs(self.coef - other.coef)))


class SpectralMean:
    """The posterior mean held by its coordinates in the kernel's eigenbasis (dual, scalar prior).

    With ``t = V^T W^1/2 y`` and ``c = lambda / alpha``, the dual
    coefficients are ``V w`` with ``w = t / (s + c)``: ``||coef||^2 =
    sum s w^2`` and the weighted residual is ``V (c w)``, so an evidence step
    costs O(n). ``coef`` itself (one pass over ``Phi``) is formed only when
    the stopping test or the caller needs it.
    """

    def __init__(self, fact, t, alpha, lam):
        xp = fact.xp
        c = lam / alpha
        self.fact = fact
        self.s = fact.eigenvalues
        self.w = t / (self.s + c)
        self.coef_sq = scalar(xp.sum(self.s * self.w * self.w))
        self.sse = scalar(xp.sum((c * self.w) ** 2))
        self._coef = None

    @property
    def coef(self):
        if self._coef is None:
            self._coef = self.fact.dual_coef(self.w)
        return self._coef

    def l1_change(self, other, tol):
        """``||coef - other.coef||_1``, skipping the passes when ``||.||_2 >= tol`` already decides it."""
        xp = self.fact.xp
        dw = self.w - other.w
        l2 = scalar(xp.sum(self.s * dw * dw)) ** 0.5
        if l2 >= tol:
            return l2
        return scalar(xp.sum(xp.abs(self.coef - other.coef)))


class _Eigenvalues:
    """What a pickled dual basis keeps: its eigenvalues (the range ``U`` is kept beside it)."""

    def __init__(self, eigenvalues):
        self.eigenvalues = eigenvalues


def group_sums(values, groups, xp):
    """Sum ``values`` (d, ...) over each ``(start, stop)`` group: shape (n_groups, ...)."""
    return xp.stack([xp.sum(values[a:b, ...], axis=0) for a, b in groups])


def _rows_transposed(rows, start, stop):
    """Rows ``start:stop`` of a feature operator as a dense ``(d, stop - start)`` block."""
    xp = rows.xp
    try:
        return rows.take_rows(create(xp, "arange", start, stop, device_=rows.device)).dense().T
    except NotImplementedError:
        # No row access (a LinearOperator): Phi^T applied to identity columns.
        E = create(xp, "eye", rows.shape[0], stop - start, k=-start, dtype=rows.dtype, device_=rows.device)
        return rows.rmatmat(E)
