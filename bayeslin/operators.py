"""Feature operators: what the feature matrix ``Phi`` (n x d) is.

The solvers never index into ``Phi``; they only ask an operator for products
``Phi @ V`` and ``Phi.T @ U`` on blocks of vectors, for the same products on a
batch of rows (stochastic solvers), and, for the exact solver, for the dense
Gram ``Phi.T W Phi`` or kernel ``W^1/2 Phi Phi.T W^1/2`` matrix.
"""

import numpy as np
import scipy.sparse as sp

from ._backend import get_namespace

__all__ = ["FeatureOperator", "DenseFeatures", "SparseFeatures", "CenteredFeatures", "as_features"]


class FeatureOperator:
    """Interface of a feature matrix ``Phi`` of shape ``(n, d)``.

    Subclasses implement :meth:`matmat`, :meth:`rmatmat`, :meth:`take_rows`
    and :meth:`row_sq_norms`; :meth:`gram` and :meth:`kernel` have matrix-free
    defaults that are only used on problems small enough for the exact solver.

    Attributes
    ----------
    shape : tuple of int
        ``(n, d)``: observations by features.
    dtype : dtype
        Floating dtype of the products.
    xp : module
        Array namespace of the products.
    """

    shape = (0, 0)
    dtype = np.float64

    @property
    def xp(self):
        """Array namespace of the products.

        Built-in operators derive it from their arrays; an operator written
        by a user may simply assign it. It is stored by name when pickled.
        """
        try:
            return self._xp
        except AttributeError:
            raise NotImplementedError(f"{type(self).__name__} must set or define `xp`.") from None

    @xp.setter
    def xp(self, namespace):
        self._xp = namespace

    def __getstate__(self):
        state = dict(self.__dict__)
        if "_xp" in state:
            state["_xp"] = state["_xp"].__name__
        return state

    def __setstate__(self, state):
        if "_xp" in state:
            import importlib

            state["_xp"] = importlib.import_module(state["_xp"])
        self.__dict__.update(state)

    def matmat(self, V):
        """Return ``Phi @ V`` for ``V`` of shape ``(d, k)``."""
        raise NotImplementedError

    def rmatmat(self, U):
        """Return ``Phi.T @ U`` for ``U`` of shape ``(n, k)``."""
        raise NotImplementedError

    def take_rows(self, rows):
        """Return the operator restricted to the integer index array ``rows``."""
        raise NotImplementedError

    def row_sq_norms(self):
        """Return the squared Euclidean norm of every row of ``Phi``, shape ``(n,)``."""
        raise NotImplementedError

    def col_sq_norms(self, weights=None):
        """Return ``sum_i w_i Phi_ij^2`` for every column ``j``, shape ``(d,)``."""
        raise NotImplementedError

    def dense(self):
        """Return ``Phi`` as a dense ``(n, d)`` array (for small row blocks only)."""
        xp = self.xp
        return self.rmatmat(xp.eye(self.shape[0], dtype=self.dtype)).T

    def gram(self, sqrt_weights=None):
        """Return the dense ``(d, d)`` matrix ``Phi.T W Phi`` with ``W = diag(sqrt_weights**2)``."""
        xp = self.xp
        n, d = self.shape
        eye = xp.eye(d, dtype=self.dtype)
        P = self.matmat(eye)
        if sqrt_weights is not None:
            P = P * sqrt_weights[:, None]
        return P.T @ P

    def kernel(self, sqrt_weights=None):
        """Return the dense ``(n, n)`` matrix ``W^1/2 Phi Phi.T W^1/2``."""
        xp = self.xp
        n, d = self.shape
        eye = xp.eye(n, dtype=self.dtype)
        P = self.rmatmat(eye if sqrt_weights is None else xp.diag(sqrt_weights))
        return P.T @ P


class DenseFeatures(FeatureOperator):
    """A dense feature matrix held in memory (NumPy or CuPy).

    Parameters
    ----------
    X : array of shape (n, d)
    """

    def __init__(self, X):
        self.X = X
        self.shape = tuple(X.shape)
        self.dtype = X.dtype

    @property
    def xp(self):
        return get_namespace(self.X)

    def matmat(self, V):
        return self.X @ V

    def rmatmat(self, U):
        return self.X.T @ U

    def take_rows(self, rows):
        return DenseFeatures(self.xp.take(self.X, rows, axis=0))

    def dense(self):
        return self.X

    def row_sq_norms(self):
        return self.xp.sum(self.X * self.X, axis=1)

    def col_sq_norms(self, weights=None):
        sq = self.X * self.X
        return self.xp.sum(sq if weights is None else sq * weights[:, None], axis=0)

    def gram(self, sqrt_weights=None):
        X = self.X if sqrt_weights is None else self.X * sqrt_weights[:, None]
        return X.T @ X

    def kernel(self, sqrt_weights=None):
        X = self.X if sqrt_weights is None else self.X * sqrt_weights[:, None]
        return X @ X.T


class SparseFeatures(FeatureOperator):
    """A scipy.sparse feature matrix, used without densifying it.

    Parameters
    ----------
    X : scipy.sparse matrix or array of shape (n, d)
        Converted to CSR once.
    """

    def __init__(self, X):
        self.X = sp.csr_matrix(X)
        self.shape = tuple(self.X.shape)
        self.dtype = self.X.dtype

    @property
    def xp(self):
        return get_namespace()

    def matmat(self, V):
        return np.asarray(self.X @ V)

    def rmatmat(self, U):
        return np.asarray(self.X.T @ U)

    def take_rows(self, rows):
        return SparseFeatures(self.X[np.asarray(rows)])

    def dense(self):
        return self.X.toarray()

    def row_sq_norms(self):
        return np.asarray(self.X.multiply(self.X).sum(axis=1)).ravel()

    def col_sq_norms(self, weights=None):
        w = np.ones(self.shape[0], dtype=self.dtype) if weights is None else weights
        return np.asarray(self.X.multiply(self.X).T @ w).ravel()

    def gram(self, sqrt_weights=None):
        X = self.X if sqrt_weights is None else sp.diags(sqrt_weights) @ self.X
        return np.asarray((X.T @ X).toarray())

    def kernel(self, sqrt_weights=None):
        X = self.X if sqrt_weights is None else sp.diags(sqrt_weights) @ self.X
        return np.asarray((X @ X.T).toarray())


class CenteredFeatures(FeatureOperator):
    """``Phi = base - 1 offset^T``: centring without forming the centred matrix.

    This keeps a sparse matrix sparse when an intercept is fitted.

    Parameters
    ----------
    base : FeatureOperator
        The uncentred features.
    offset : array of shape (d,)
        The value subtracted from every row.
    """

    def __init__(self, base, offset):
        self.base = base
        self.offset = offset
        self.shape = base.shape
        self.dtype = base.dtype

    @property
    def xp(self):
        return self.base.xp

    def matmat(self, V):
        return self.base.matmat(V) - (self.offset @ V)[None, :]

    def rmatmat(self, U):
        xp = self.xp
        return self.base.rmatmat(U) - self.offset[:, None] * xp.sum(U, axis=0)[None, :]

    def take_rows(self, rows):
        return CenteredFeatures(self.base.take_rows(rows), self.offset)

    def dense(self):
        return self.base.dense() - self.offset[None, :]

    def row_sq_norms(self):
        xp = self.xp
        cross = self.base.matmat(self.offset[:, None])[:, 0]
        return self.base.row_sq_norms() - 2 * cross + xp.sum(self.offset * self.offset)

    def col_sq_norms(self, weights=None):
        xp = self.xp
        w = xp.ones(self.shape[0], dtype=self.dtype) if weights is None else weights
        m = self.offset
        s = self.base.rmatmat(w[:, None])[:, 0]
        return self.base.col_sq_norms(weights) - 2 * m * s + xp.sum(w) * m * m

    def gram(self, sqrt_weights=None):
        # sum_i w_i (x_i - m)(x_i - m)^T expanded so the base stays uncentred.
        xp = self.xp
        n = self.shape[0]
        w = xp.ones(n, dtype=self.dtype) if sqrt_weights is None else sqrt_weights**2
        G = self.base.gram(sqrt_weights)
        s = self.base.rmatmat(w[:, None])[:, 0]
        m = self.offset
        return G - s[:, None] * m[None, :] - m[:, None] * s[None, :] + xp.sum(w) * (m[:, None] * m[None, :])

    def kernel(self, sqrt_weights=None):
        xp = self.xp
        K = self.base.kernel()
        u = self.base.matmat(self.offset[:, None])[:, 0]
        K = K - u[:, None] - u[None, :] + xp.sum(self.offset * self.offset)
        if sqrt_weights is not None:
            K = K * sqrt_weights[:, None] * sqrt_weights[None, :]
        return K


def as_features(X):
    """Wrap ``X`` as a :class:`FeatureOperator`.

    Parameters
    ----------
    X : array, scipy.sparse matrix or FeatureOperator

    Returns
    -------
    FeatureOperator
    """
    if isinstance(X, FeatureOperator):
        return X
    if sp.issparse(X):
        return SparseFeatures(X)
    return DenseFeatures(X)
