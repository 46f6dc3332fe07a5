"""Feature operators: what the feature matrix ``Phi`` (n x d) is.

The solvers never index into ``Phi``; they only ask an operator for products
``Phi @ V`` and ``Phi.T @ U`` on blocks of vectors, for the same products on a
batch of rows (stochastic solvers), and, for the exact solver, for the dense
Gram ``Phi.T W Phi`` or kernel ``W^1/2 Phi Phi.T W^1/2`` matrix.

The protocol
------------
Anything with ``shape`` ``(n, d)``, ``matmat(V)`` (``Phi @ V`` for ``V`` of
shape ``(d, k)``) and ``rmatmat(U)`` (``Phi.T @ U`` for ``U`` of shape
``(n, k)``) can be fitted: :func:`as_features` wraps it. Optional members:

- ``take_rows(rows)``: the same protocol restricted to the integer index
  array ``rows``. The ``'sgd'`` solver needs it for its minibatches, and
  so do the defaults of ``row_sq_norms`` and ``dense``.
- ``dtype`` (float64 when absent), ``xp`` (the array namespace of the
  products; NumPy when absent) and ``device``.
- ``row_sq_norms()`` and ``col_sq_norms(weights)``, when they are cheaper
  than the defaults, which stream the rows in batches.

A :class:`scipy.sparse.linalg.LinearOperator` is accepted as it is; it has no
row batches, so it works with the ``'cg'`` and ``'exact'`` solvers.
:class:`RandomFourierFeatures` is a complete example: it generates its
features on the fly, a batch of rows at a time, so ``d`` can be far larger
than an ``n x d`` matrix in memory would allow.
"""

import math
import os

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

from .._backend import asarray_on, create, device, get_namespace, is_sparse

__all__ = [
    "FeatureOperator",
    "DenseFeatures",
    "SparseFeatures",
    "CenteredFeatures",
    "LinearOperatorFeatures",
    "ImplicitFeatures",
    "RandomFourierFeatures",
    "as_features",
    "is_feature_protocol",
]

# Rows materialised at once by the streaming defaults: bounds their memory
# by this many bytes, whatever n is.
_BATCH_BYTES = 256 * 2**20


def _row_batches(n, d, itemsize, batch_rows=None):
    """Yield ``(start, stop)`` of row batches of about ``_BATCH_BYTES`` each."""
    size = batch_rows or max(1, _BATCH_BYTES // max(1, d * itemsize))
    for start in range(0, n, size):
        yield start, min(n, start + size)


class FeatureOperator:
    """Interface of a feature matrix ``Phi`` of shape ``(n, d)``.

    Subclasses implement :meth:`matmat` and :meth:`rmatmat`, and
    :meth:`take_rows` when minibatches are wanted. The other methods have
    defaults that stream row batches (:meth:`row_sq_norms`,
    :meth:`col_sq_norms`, :meth:`dense`) or use the products on identity
    blocks (:meth:`gram`, :meth:`kernel`; only the exact solver calls them,
    on problems small enough for it).

    Attributes
    ----------
    shape : tuple of int
        ``(n, d)``: observations by features.
    dtype : dtype
        Floating dtype of the products.
    xp : module
        Array namespace of the products.
    device : object
        Device of the products (None: the namespace's default).
    """

    shape = (0, 0)
    dtype = np.float64
    device = None

    @property
    def xp(self):
        """Array namespace of the products.

        Built-in operators derive it from their arrays; an operator written
        by a user may simply assign it. It is stored by name when pickled.
        """
        try:
            return self._xp
        except AttributeError:
            return get_namespace()

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

    def _zeros(self, shape):
        return create(self.xp, "zeros", shape, dtype=self.dtype, device_=self.device)

    def _eye(self, n):
        return create(self.xp, "eye", n, dtype=self.dtype, device_=self.device)

    def matmat(self, V):
        """Return ``Phi @ V`` for ``V`` of shape ``(d, k)``."""
        raise NotImplementedError

    def rmatmat(self, U):
        """Return ``Phi.T @ U`` for ``U`` of shape ``(n, k)``."""
        raise NotImplementedError

    def take_rows(self, rows):
        """Return the operator restricted to the integer index array ``rows``."""
        raise NotImplementedError(
            f"{type(self).__name__} gives no row batches (take_rows): solver='sgd' and the streaming "
            "row statistics need them; use solver='cg' or 'exact', or implement take_rows."
        )

    def gram_times(self, V, weights=None):
        """Return ``Phi.T @ (w * (Phi @ V))``: the data term of ``H @ V`` (``W = diag(weights)``).

        Two products by default. An operator that generates its features may
        override it to generate each row batch once for both products.
        """
        P = self.matmat(V)
        return self.rmatmat(P if weights is None else P * weights[:, None])

    def _batches(self):
        """Yield the operator's rows as dense ``(b, d)`` blocks of bounded memory."""
        n, d = self.shape
        for start, stop in _row_batches(n, d, self.xp.finfo(self.dtype).bits // 8):
            yield start, stop, self.take_rows(create(self.xp, "arange", start, stop, device_=self.device)).dense()

    def row_sq_norms(self):
        """Return the squared Euclidean norm of every row of ``Phi``, shape ``(n,)``."""
        xp = self.xp
        parts = [xp.sum(B * B, axis=1) for _, _, B in self._batches()]
        return xp.concat(parts) if parts else self._zeros((0,))

    def col_sq_norms(self, weights=None):
        """Return ``sum_i w_i Phi_ij^2`` for every column ``j``, shape ``(d,)``."""
        xp = self.xp
        out = self._zeros((self.shape[1],))
        for start, stop, B in self._batches():
            sq = B * B
            out = out + xp.sum(sq if weights is None else sq * weights[start:stop, None], axis=0)
        return out

    def dense(self):
        """Return ``Phi`` as a dense ``(n, d)`` array (for small row blocks only)."""
        return self.rmatmat(self._eye(self.shape[0])).T

    def gram(self, sqrt_weights=None):
        """Return the dense ``(d, d)`` matrix ``Phi.T W Phi`` with ``W = diag(sqrt_weights**2)``.

        Streams row batches when the operator has them, so memory stays
        ``O(d^2)`` plus one batch; otherwise forms ``Phi`` from ``d`` products.
        """
        try:
            G = self._zeros((self.shape[1], self.shape[1]))
            for start, stop, B in self._batches():
                if sqrt_weights is not None:
                    B = B * sqrt_weights[start:stop, None]
                G = G + B.T @ B
            return G
        except NotImplementedError:
            pass
        P = self.matmat(self._eye(self.shape[1]))
        if sqrt_weights is not None:
            P = P * sqrt_weights[:, None]
        return P.T @ P

    def kernel(self, sqrt_weights=None):
        """Return the dense ``(n, n)`` matrix ``W^1/2 Phi Phi.T W^1/2``.

        Streams row batches when the operator has them (one product per
        batch, ``O(n^2)`` memory plus one batch); otherwise forms ``Phi.T``.
        """
        xp = self.xp
        try:
            parts = [self.matmat(B.T).T for _, _, B in self._batches()]
            K = xp.concat(parts, axis=0) if parts else self._zeros((0, 0))
        except NotImplementedError:
            P = self.rmatmat(self._eye(self.shape[0]))
            K = P.T @ P
        if sqrt_weights is not None:
            K = K * sqrt_weights[:, None] * sqrt_weights[None, :]
        return K


class _ArrayBacked(FeatureOperator):
    """An operator computed from an array ``self.X``: its namespace and device are the array's."""

    @property
    def xp(self):
        return get_namespace(self.X)

    @property
    def device(self):
        return device(self.X)


class DenseFeatures(_ArrayBacked):
    """A dense feature matrix held in memory (NumPy, CuPy or another array-API array).

    Parameters
    ----------
    X : array of shape (n, d)
    """

    def __init__(self, X):
        self.X = X
        self.shape = tuple(X.shape)
        self.dtype = X.dtype

    def matmat(self, V):
        return self.X @ V

    def rmatmat(self, U):
        return self.X.T @ U

    def take_rows(self, rows):
        return DenseFeatures(self.xp.take(self.X, rows, axis=0))

    def _batches(self):
        # Slices are views: no row is copied.
        n, d = self.shape
        for start, stop in _row_batches(n, d, self.xp.finfo(self.dtype).bits // 8):
            yield start, stop, self.X[start:stop, :]

    def dense(self):
        return self.X

    # row_sq_norms and col_sq_norms stream row batches (the base class's): an
    # elementwise X * X would hold a second copy of X, which on a GPU was the
    # peak of an sgd fit (15 GiB over a 1,000,000 x 4,096 float32 X).

    def gram(self, sqrt_weights=None):
        if sqrt_weights is not None:
            # Weighted rows batch by batch rather than a weighted copy of X.
            return super().gram(sqrt_weights)
        return self.X.T @ self.X

    def kernel(self, sqrt_weights=None):
        K = self.X @ self.X.T
        if sqrt_weights is not None:
            K = K * sqrt_weights[:, None] * sqrt_weights[None, :]
        return K


class SparseFeatures(FeatureOperator):
    """A scipy.sparse or cupyx.scipy.sparse feature matrix, used without densifying it.

    Parameters
    ----------
    X : sparse matrix or array of shape (n, d)
        Converted to CSR once (scipy.sparse stays on the host, cupyx on its GPU).
    """

    def __init__(self, X):
        self._sparse = _sparse_module(X)
        self.X = self._sparse.csr_matrix(X)
        self.shape = tuple(self.X.shape)
        self.dtype = self.X.dtype
        self._parallel = None

    @property
    def xp(self):
        return get_namespace(self.X)

    @property
    def device(self):
        return None if self._sparse is sp else device(self.X.data)

    def __setstate__(self, state):
        import importlib

        state["_sparse"] = importlib.import_module(state["_sparse"])
        self.__dict__.update(state)

    def _vector(self, M):
        """A sparse reduction (matrix type) as a 1-d array of the namespace."""
        return self.xp.reshape(self.xp.asarray(M), (-1,))

    def matmat(self, V):
        blocks = self._host_blocks()
        if blocks is None:
            return self.xp.asarray(self.X @ V)
        return np.concatenate(list(_thread_pool().map(lambda B: B @ V, blocks[0])))

    def rmatmat(self, U):
        blocks = self._host_blocks()
        if blocks is None:
            return self.xp.asarray(self.X.T @ U)
        return np.concatenate(list(_thread_pool().map(lambda B: B @ U, blocks[1])))

    def _host_blocks(self):
        """Row blocks of ``X`` and of ``X^T`` (both CSR) for threaded products, or None.

        scipy's sparse products run on one core; its kernels release the
        GIL, so row blocks on a thread pool use them all. ``X^T`` is kept as
        a CSR copy (one more copy of the non-zeros) because a transposed
        product scatters its writes and cannot be split by rows.
        """
        if self._sparse is not sp or self.X.nnz < _PARALLEL_MIN_NNZ or _n_threads() < 2:
            return None
        if self._parallel is None:
            t = _n_threads()
            Xt = self.X.T.tocsr()
            self._parallel = (_split_rows(self.X, t), _split_rows(Xt, t))
        return self._parallel

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_sparse"] = self._sparse.__name__
        state["_parallel"] = None  # rebuilt on first use
        return state

    def take_rows(self, rows):
        return SparseFeatures(self.X[rows])

    def dense(self):
        return self.X.toarray()

    def row_sq_norms(self):
        return self._vector(self.X.multiply(self.X).sum(axis=1))

    def col_sq_norms(self, weights=None):
        sq = self.X.multiply(self.X)
        if weights is None:
            return self._vector(sq.sum(axis=0))
        return self._vector(sq.T @ weights)

    def gram(self, sqrt_weights=None):
        X = self.X if sqrt_weights is None else self._sparse.diags(sqrt_weights) @ self.X
        return (X.T @ X).toarray()

    def kernel(self, sqrt_weights=None):
        X = self.X if sqrt_weights is None else self._sparse.diags(sqrt_weights) @ self.X
        return (X @ X.T).toarray()


# Below this many non-zeros a sparse product is too short to share out.
_PARALLEL_MIN_NNZ = 200_000
_POOL = None


def _n_threads():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _thread_pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=_n_threads(), thread_name_prefix="bayeslin")
    return _POOL


def _split_rows(X, parts):
    """``X`` (CSR) as about ``parts`` blocks of consecutive rows with equal non-zeros."""
    bounds = np.searchsorted(X.indptr, np.linspace(0, X.nnz, parts + 1)[1:-1])
    edges = [0, *sorted(set(int(b) for b in bounds) - {0, X.shape[0]}), X.shape[0]]
    return [X[a:b] for a, b in zip(edges[:-1], edges[1:])]


def _sparse_module(X):
    """scipy.sparse, or cupyx.scipy.sparse for a matrix on a GPU."""
    if sp.issparse(X):
        return sp
    import cupyx.scipy.sparse

    return cupyx.scipy.sparse


class CenteredFeatures(FeatureOperator):
    """``Phi = base - 1 offset^T``: centring without forming the centred matrix.

    This keeps a sparse matrix sparse, and an implicit one implicit, when an
    intercept is fitted.

    Parameters
    ----------
    base : FeatureOperator
        The uncentred features.
    offset : array of shape (d,)
        The value subtracted from every row.
    """

    def __init__(self, base, offset, *, _centre_batches=None):
        self.base = base
        self.offset = offset
        self.shape = base.shape
        self.dtype = base.dtype
        self._centre_batches = _centre_batches

    @property
    def xp(self):
        return self.base.xp

    @property
    def device(self):
        return self.base.device

    def _products_centre_batches(self):
        """Whether products centre each row batch first: a dense base whose offset dwarfs its spread.

        ``X V - 1 (m^T V)`` loses ``log10(|m| / std)`` digits to
        cancellation, harmless for usual data but not for an offset of 1e8
        against a spread of 1; subtracting ``m`` from each batch costs one
        more pass over it, so it is done only then (decided once, from one
        pass over the rows).
        """
        if getattr(self, "_centre_batches", None) is None:  # absent from older pickles
            self._centre_batches = False
            if isinstance(self.base, DenseFeatures) and self.shape[0] > 0:
                xp = self.xp
                spread = super().col_sq_norms() / self.shape[0]
                # Compared without dividing: a constant column (zero spread)
                # centres batches too, with no overflow on the way.
                dwarfs = self.offset * self.offset > _PRODUCT_MAX_OFFSET_RATIO**2 * spread
                self._centre_batches = bool(xp.any(dwarfs))
        return self._centre_batches

    def matmat(self, V):
        if self._products_centre_batches():
            parts = [B @ V for _, _, B in self._batches()]
            return self.xp.concat(parts, axis=0) if parts else self._zeros((0, V.shape[1]))
        return self.base.matmat(V) - (self.offset @ V)[None, :]

    def rmatmat(self, U):
        xp = self.xp
        if self._products_centre_batches():
            out = self._zeros((self.shape[1], U.shape[1]))
            for start, stop, B in self._batches():
                out = out + B.T @ U[start:stop, :]
            return out
        return self.base.rmatmat(U) - self.offset[:, None] * xp.sum(U, axis=0)[None, :]

    def gram_times(self, V, weights=None):
        if type(self.base).gram_times is FeatureOperator.gram_times:
            return super().gram_times(V, weights)
        # The base fuses its two products: keep that, and centre by expanding
        # (X - 1 m^T)^T W (X - 1 m^T) V, with s = X^T W 1 computed once.
        xp = self.xp
        cached = getattr(self, "_weighted_sums", None)
        if cached is None or cached[0] is not weights:
            w = self._ones(self.shape[0]) if weights is None else weights
            self._weighted_sums = (weights, self.base.rmatmat(w[:, None])[:, 0], xp.sum(w))
        _, s, total = self._weighted_sums
        mV = (self.offset @ V)[None, :]
        return (
            self.base.gram_times(V, weights)
            - s[:, None] * mV
            - self.offset[:, None] * (s @ V)[None, :]
            + total * self.offset[:, None] * mV
        )

    def take_rows(self, rows):
        return CenteredFeatures(self.base.take_rows(rows), self.offset, _centre_batches=self._products_centre_batches())

    def dense(self):
        return self.base.dense() - self.offset[None, :]

    def _batches(self):
        # Each row batch is centred before any product is formed: expanding
        # (X - 1 m^T)^T (X - 1 m^T) instead cancels catastrophically when the
        # offset is large against the spread (N m m^T ~ X^T X).
        for start, stop, B in self.base._batches():
            yield start, stop, B - self.offset[None, :]

    def _expands(self):
        """Whether statistics are expanded around the uncentred base (sparse ``X``: centring would densify it)."""
        return isinstance(self.base, SparseFeatures)

    def row_sq_norms(self):
        if not self._expands():
            try:
                return super().row_sq_norms()
            except NotImplementedError:
                pass  # no row batches: expand around the base's own statistics
        xp = self.xp
        cross = self.base.matmat(self.offset[:, None])[:, 0]
        return self.base.row_sq_norms() - 2 * cross + xp.sum(self.offset * self.offset)

    def col_sq_norms(self, weights=None):
        if not self._expands():
            try:
                return super().col_sq_norms(weights)
            except NotImplementedError:
                pass  # no row batches: expand around the base's own statistics
        if self._expands():
            return self._sparse_centred_col_sq_norms(weights)
        xp = self.xp
        w = self._ones(self.shape[0]) if weights is None else weights
        m = self.offset
        s = self.base.rmatmat(w[:, None])[:, 0]
        return self.base.col_sq_norms(weights) - 2 * m * s + xp.sum(w) * m * m

    def _sparse_centred_col_sq_norms(self, weights=None):
        """``sum_i w_i (x_ij - m_j)^2`` of a sparse base as a sum of non-negative terms (no cancellation).

        Over the stored entries ``w_i (x_ij - m_j)^2``, plus ``m_j^2`` times
        the weight of the rows where column ``j`` is zero: one pass over the
        non-zeros.
        """
        xp = self.xp
        X = self.base.X
        w = self._ones(self.shape[0]) if weights is None else weights
        m_nz = self.offset[X.indices]
        P = X.copy()
        P.data = (X.data - m_nz) ** 2
        stored = self.base._vector(P.T @ w)
        P.data = xp.ones_like(P.data)
        stored_weight = self.base._vector(P.T @ w)
        return stored + self.offset * self.offset * xp.clip(xp.sum(w) - stored_weight, 0.0, None)

    def gram(self, sqrt_weights=None):
        # Centred batches when the base has them; without row batches the
        # default forms Phi from products with identity columns, which centre
        # exactly too (each entry is x_ij - m_j).
        if not self._expands():
            return super().gram(sqrt_weights)
        # Sparse: sum_i w_i (x_i - m)(x_i - m)^T expanded so X stays sparse.
        xp = self.xp
        n = self.shape[0]
        w = self._ones(n) if sqrt_weights is None else sqrt_weights**2
        G = self.base.gram(sqrt_weights)
        s = self.base.rmatmat(w[:, None])[:, 0]
        m = self.offset
        total = xp.sum(w)
        G = G - s[:, None] * m[None, :] - m[:, None] * s[None, :] + total * (m[:, None] * m[None, :])
        spread = self._sparse_centred_col_sq_norms(w)
        varies = spread > 0
        # A constant column is exactly zero once centred: drop the rounding
        # residue the expansion leaves there; elsewhere measure what is lost.
        G = G * xp.astype(varies, G.dtype)[:, None] * xp.astype(varies, G.dtype)[None, :]
        self._check_cancellation(xp.where(varies, total * m * m, 0.0), xp.where(varies, spread, 1.0))
        return G

    def _ones(self, n):
        return create(self.xp, "ones", n, dtype=self.dtype, device_=self.device)

    def kernel(self, sqrt_weights=None):
        if not self._expands():
            return self._centred_kernel(sqrt_weights)
        xp = self.xp
        K = self.base.kernel()
        u = self.base.matmat(self.offset[:, None])[:, 0]
        K = K - u[:, None] - u[None, :] + xp.sum(self.offset * self.offset)
        # The mean squared norm of the centred rows, computed without cancellation.
        spread = xp.sum(self._sparse_centred_col_sq_norms()) / self.shape[0]
        if float(spread) == 0.0:
            K = K * 0.0  # every centred row is zero
        else:
            self._check_cancellation(xp.sum(self.offset * self.offset), spread)
        if sqrt_weights is not None:
            K = K * sqrt_weights[:, None] * sqrt_weights[None, :]
        return K

    def _centred_kernel(self, sqrt_weights):
        # Both factors centred batch by batch: centring only one side (the
        # default's Phi @ B^T) still leaves an error of eps * |m| * |B| in
        # every entry, enough to move alpha_ when the noise is small.
        xp = self.xp
        try:
            # A @ A.T on the diagonal: NumPy takes the symmetric product (syrk) there.
            blocks = []
            for a, _, A in self._batches():
                row = [A @ A.T if b == a else A @ (B - self.offset[None, :]).T for b, _, B in self.base._batches()]
                blocks.append(xp.concat(row, axis=1))
        except NotImplementedError:
            return super().kernel(sqrt_weights)
        K = xp.concat(blocks, axis=0) if blocks else self._zeros((0, 0))
        if sqrt_weights is not None:
            K = K * sqrt_weights[:, None] * sqrt_weights[None, :]
        return K

    def _check_cancellation(self, uncentred, centred):
        """Refuse an expanded (sparse) Gram or kernel that lost most of its digits to the offset.

        An entry of the expansion carries a rounding error of about
        ``eps * N m^2`` (``eps * ||m||^2`` for the kernel) against the
        centred sum of squares (computed without cancellation): their ratio
        says how many digits are left.
        """
        xp = self.xp
        eps = float(xp.finfo(self.dtype).eps)
        lost = float(xp.max(uncentred / xp.clip(centred, float(xp.finfo(self.dtype).smallest_normal), None)))
        # The same share of the digits in every precision: float32 has half
        # of float64's, so its bound is the square root of eps32 / eps64 wider.
        max_error = _CENTRING_MAX_ERROR * math.sqrt(eps / float(np.finfo(np.float64).eps))
        if eps * lost > max_error:
            raise CentringPrecisionError(
                f"The features' means are too large against their spread to centre a sparse matrix "
                f"implicitly: the centred Gram/kernel would keep only about {max(0.0, -np.log10(eps * lost)):.0f} "
                f"significant digits (sum of squares of the offset {lost:.3g} times the centred one). "
                f"Use solver='cg', which centres each product, or centre X yourself (this densifies it) "
                f"and fit again."
            )


class CentringPrecisionError(ValueError):
    """An implicitly centred sparse Gram or kernel matrix would lose most of its digits to the offset."""


# Offset-to-spread ratio of a dense column above which products centre each
# row batch (about 4 of 16 digits would otherwise cancel).
_PRODUCT_MAX_OFFSET_RATIO = 1e4

# Relative error of an implicitly centred sparse Gram matrix above which the
# exact solver refuses it (about 8 of float64's 16 significant digits left;
# scaled to keep the same share in float32, as on a GPU).
_CENTRING_MAX_ERROR = 1e-8


class LinearOperatorFeatures(FeatureOperator):
    """A :class:`scipy.sparse.linalg.LinearOperator` as features (NumPy, no row batches).

    Parameters
    ----------
    op : LinearOperator of shape (n, d)
    """

    def __init__(self, op):
        self.op = op
        self.shape = tuple(op.shape)
        self.dtype = np.dtype(op.dtype) if op.dtype is not None else np.dtype(np.float64)

    def matmat(self, V):
        return np.asarray(self.op.matmat(np.asarray(V)))

    def rmatmat(self, U):
        return np.asarray(self.op.rmatmat(np.asarray(U)))

    def _column_blocks(self):
        """Yield ``Phi``'s columns as dense ``(n, b)`` blocks: no row access, so ``Phi @ I``."""
        n, d = self.shape
        for start, stop in _row_batches(d, n, self.dtype.itemsize):
            E = np.zeros((d, stop - start), dtype=self.dtype)
            E[np.arange(start, stop), np.arange(stop - start)] = 1.0
            yield self.matmat(E)

    def row_sq_norms(self):
        out = np.zeros(self.shape[0], dtype=self.dtype)
        for P in self._column_blocks():
            out += np.sum(P * P, axis=1)
        return out

    def col_sq_norms(self, weights=None):
        parts = [np.sum(P * P if weights is None else P * P * weights[:, None], axis=0) for P in self._column_blocks()]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=self.dtype)


class ImplicitFeatures(FeatureOperator):
    """Adapter giving any object with ``shape``, ``matmat`` and ``rmatmat`` the full interface.

    See the module docstring for the protocol. The optional members of
    ``obj`` (``take_rows``, ``dtype``, ``xp``, ``device``, ``row_sq_norms``,
    ``col_sq_norms``) are used when present.

    Parameters
    ----------
    obj : object
        The user's operator.
    """

    def __init__(self, obj):
        self.obj = obj
        self.shape = tuple(int(s) for s in obj.shape)
        self.dtype = getattr(obj, "dtype", None) or np.float64
        xp = getattr(obj, "xp", None)
        if xp is not None:
            self.xp = xp
        self.device = getattr(obj, "device", None)

    def matmat(self, V):
        return self.obj.matmat(V)

    def rmatmat(self, U):
        return self.obj.rmatmat(U)

    def take_rows(self, rows):
        if not hasattr(self.obj, "take_rows"):
            return super().take_rows(rows)
        return as_features(self.obj.take_rows(rows))

    def row_sq_norms(self):
        if hasattr(self.obj, "row_sq_norms"):
            return self.obj.row_sq_norms()
        return super().row_sq_norms()

    def col_sq_norms(self, weights=None):
        if hasattr(self.obj, "col_sq_norms"):
            return self.obj.col_sq_norms(weights)
        return super().col_sq_norms(weights)


class RandomFourierFeatures(_ArrayBacked):
    """Random Fourier features of an RBF kernel, generated on the fly in row batches.

    ``Phi_ij = sqrt(2 / d) cos(x_i . omega_j + b_j)`` with
    ``omega_j ~ N(0, 2 gamma I)`` and ``b_j ~ U(0, 2 pi)``, so that
    ``Phi Phi^T`` approximates ``exp(-gamma ||x - x'||^2)`` (Rahimi and
    Recht, 2007; the features of :class:`sklearn.kernel_approximation.RBFSampler`).
    The ``n x d`` matrix is never stored: each product recomputes the
    features of ``batch_rows`` rows at a time, so memory is
    ``O(batch_rows * d + p * d)`` for ``p`` input columns, whatever ``n`` is.

    Parameters
    ----------
    X : array of shape (n, p)
        Inputs (NumPy, CuPy or another array-API array): the features live
        in its namespace and on its device.
    n_components : int
        Number of features ``d``.
    gamma : float, default=1.0
        RBF kernel parameter.
    random_state : int, RandomState instance or None, default=None
        Draws the frequencies and phases.
    batch_rows : int, default=None
        Rows whose features are materialised at once (by default as many
        as fit in 256 MiB).

    Examples
    --------
    >>> import numpy as np
    >>> from bayeslin import BayesianLinearRegressor
    >>> from bayeslin.operators import RandomFourierFeatures
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-3, 3, size=(500, 1))
    >>> y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(500)
    >>> rff = RandomFourierFeatures(X, n_components=2000, gamma=0.5, random_state=0)
    >>> reg = BayesianLinearRegressor(solver="cg", random_state=0).fit(rff, y)
    >>> mean = reg.predict(rff.with_inputs(X[:5]))
    """

    def __init__(self, X, n_components, gamma=1.0, random_state=None, batch_rows=None, *, _frequencies=None):
        from sklearn.utils import check_random_state

        xp = get_namespace(X)
        self.X = X
        self.shape = (int(X.shape[0]), int(n_components))
        self.dtype = X.dtype
        self.gamma = float(gamma)
        self.batch_rows = batch_rows
        if _frequencies is None:
            rng = check_random_state(random_state)
            p = int(X.shape[1])
            omega = rng.standard_normal(size=(p, n_components)) * math.sqrt(2.0 * self.gamma)
            phase = rng.uniform(0.0, 2.0 * math.pi, size=n_components)
            _frequencies = (asarray_on(omega, xp, device(X), X.dtype), asarray_on(phase, xp, device(X), X.dtype))
        self.omega, self.phase = _frequencies
        self.scale = math.sqrt(2.0 / n_components)

    def with_inputs(self, X):
        """Return the same features (same frequencies) at new inputs ``X``, e.g. test points."""
        return RandomFourierFeatures(X, self.shape[1], self.gamma, batch_rows=self.batch_rows, _frequencies=(self.omega, self.phase))

    def _block(self, start, stop):
        return self.scale * self.xp.cos(self.X[start:stop, :] @ self.omega + self.phase[None, :])

    def _ranges(self):
        n, d = self.shape
        return _row_batches(n, d, self.xp.finfo(self.dtype).bits // 8, self.batch_rows)

    def matmat(self, V):
        parts = [self._block(start, stop) @ V for start, stop in self._ranges()]
        return self.xp.concat(parts, axis=0) if parts else self._zeros((0, V.shape[1]))

    def rmatmat(self, U):
        out = self._zeros((self.shape[1], U.shape[1]))
        for start, stop in self._ranges():
            out = out + self._block(start, stop).T @ U[start:stop, :]
        return out

    def gram_times(self, V, weights=None):
        # Each batch of features is generated once for both products.
        out = self._zeros((self.shape[1], V.shape[1]))
        for start, stop in self._ranges():
            B = self._block(start, stop)
            P = B @ V
            out = out + B.T @ (P if weights is None else P * weights[start:stop, None])
        return out

    def take_rows(self, rows):
        return self.with_inputs(self.xp.take(self.X, rows, axis=0))

    def dense(self):
        return self._block(0, self.shape[0])

    def row_sq_norms(self):
        parts = [self.xp.sum(self._block(a, b) ** 2, axis=1) for a, b in self._ranges()]
        return self.xp.concat(parts) if parts else self._zeros((0,))


def as_features(X):
    """Wrap ``X`` as a :class:`FeatureOperator`.

    Parameters
    ----------
    X : array, sparse matrix, LinearOperator, FeatureOperator or protocol object
        Dense arrays of any array-API namespace, scipy.sparse and
        cupyx.scipy.sparse matrices, :class:`scipy.sparse.linalg.LinearOperator`,
        or any object following the protocol of this module.

    Returns
    -------
    FeatureOperator
    """
    if isinstance(X, FeatureOperator):
        return X
    if is_sparse(X):
        return SparseFeatures(X)
    if isinstance(X, LinearOperator):
        return LinearOperatorFeatures(X)
    if is_feature_protocol(X):
        return ImplicitFeatures(X)
    return DenseFeatures(X)


def is_feature_protocol(X):
    """Whether ``X`` is an operator (not an array): it has ``matmat``, ``rmatmat`` and ``shape``."""
    return isinstance(X, (FeatureOperator, LinearOperator)) or (
        hasattr(X, "matmat") and hasattr(X, "rmatmat") and hasattr(X, "shape") and not hasattr(X, "__array_namespace__")
    )

