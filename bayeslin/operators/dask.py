"""Dask arrays chunked along rows as feature operators.

:class:`DaskFeatures` gives the solvers every product with a Dask array
``X`` (chunked along its rows only, one chunk across the columns, chunks of
NumPy, scipy.sparse or CuPy) as a map over the chunks followed by Dask's tree
reduction of the ``d x k`` blocks: one Dask computation per product, run on
the active ``dask.distributed`` client or Dask's default scheduler. Products
that return ``n`` rows stay lazy Dask arrays. Dask is imported only when an
operator is used.

``BayesianLinearRegressor`` builds one itself when ``fit`` is given a Dask
array (after checking the chunks, persisting ``X`` and scanning it for NaN);
pass the Dask array there rather than the operator. The operator is public
for timing products and for other solvers of the protocol.

Import it from this module (``from bayeslin.operators.dask import
DaskFeatures``): :mod:`bayeslin.operators` does not import it, so neither
``import bayeslin`` nor ``import bayeslin.operators`` imports Dask or this
module. Like the other operators it imports only ``features`` of its package.
"""

import numpy as np

from .._backend import get_namespace, is_sparse, to_numpy
from .features import FeatureOperator, as_features

__all__ = ["DaskFeatures"]


class _ClientNamespace:
    """The chunks' array namespace, computing reductions of Dask arrays on the spot.

    The solvers and the evidence loop keep ``d``-sized and ``d x k`` state
    in the namespace of the features, and reach it from ``n``-sized arrays
    (targets, weights, products ``Phi @ V``) only through reductions
    (``xp.sum(..., axis=0)``, ``xp.max``) and gathers (``xp.take``). With
    the chunks' namespace, elementwise work on Dask arrays stays lazy and
    distributed, while those calls return computed arrays of the
    namespace: no Dask array enters the client's state. A reduction of an
    unchanged Dask expression (same Dask name) is computed once.

    A 2-d array of ``n`` rows given to ``asarray`` (the posterior samples'
    data noise, drawn on the host from the fit's seed as for in-memory
    input, so the same seed gives the same numbers) is sent to the workers
    in ``X``'s row chunks once and kept there. (When ``n``, or the number
    of columns, equals ``d`` it stays on the client: correct, and sent with
    each computation that uses it.)
    """

    _REDUCTIONS = frozenset({"sum", "max", "min", "mean", "prod", "all", "any", "take"})
    _CACHE_SIZE = 16

    def __init__(self, base, row_chunks, n_features):
        self._base = base
        self.__name__ = base.__name__
        self._row_chunks = row_chunks
        self._n_features = n_features
        self._cache = {}

    def __reduce__(self):
        # Modules do not pickle: the chunks' namespace is re-imported by name.
        return _client_namespace, (self.__name__, self._row_chunks, self._n_features)

    def __getattr__(self, name):
        attr = getattr(self._base, name)
        if name in self._REDUCTIONS:
            return _Computed(self, name, attr)
        return attr

    def asarray(self, a, *args, **kwargs):
        out = self._base.asarray(a, *args, **kwargs)
        n = sum(self._row_chunks)
        d = self._n_features
        # (n, k) with n != d and k != d: the data noise, never a (d, k) or (k, d) iterate.
        if getattr(out, "ndim", 0) == 2 and out.shape[0] == n and d not in (n, out.shape[1]):
            import dask.array as da

            out = da.from_array(out, chunks=(self._row_chunks, -1)).persist()
        return out


def _client_namespace(name, row_chunks, n_features):
    import importlib

    return _ClientNamespace(importlib.import_module(name), row_chunks, n_features)


class _Computed:
    """``xp.<name>`` that computes its result when an argument is a Dask array."""

    def __init__(self, namespace, name, func):
        self.namespace, self.name, self.func = namespace, name, func

    def __call__(self, *args, **kwargs):
        if not any(_is_dask(a) for a in args):
            return self.func(*args, **kwargs)
        cacheable = self.name != "take" and all(_is_dask(a) or np.isscalar(a) for a in args)
        key = None
        if cacheable:
            key = (self.name, tuple(a.name if _is_dask(a) else a for a in args), repr(sorted(kwargs.items())))
            if key in self.namespace._cache:
                return self.namespace._cache[key]
        out = self.func(*args, **kwargs)
        out = out.compute() if _is_dask(out) else out
        out = self.namespace._base.asarray(out)
        if key is not None:
            cache = self.namespace._cache
            if len(cache) >= self.namespace._CACHE_SIZE:
                cache.pop(next(iter(cache)))
            cache[key] = out
        return out


def _is_dask(a):
    return type(a).__module__.startswith("dask.array")


class DaskFeatures(FeatureOperator):
    """A Dask array chunked along rows as a feature operator.

    ``matmat`` returns a lazy Dask array of ``n`` rows (chunked like ``X``);
    ``rmatmat``, ``gram_times``, ``col_sq_norms`` and ``gram`` map over the
    chunks and sum the ``d x k`` (or ``d x d``) blocks with Dask's tree
    reduction, returning a computed array of the chunks' namespace: one Dask
    computation each. ``take_rows`` gathers the rows to the client (an
    in-memory operator): minibatches are small.

    Parameters
    ----------
    X : dask.array.Array of shape (n, d)
        Chunked along rows only, with known chunk sizes; chunks are NumPy
        arrays, scipy.sparse matrices or CuPy arrays. Persist it first when
        it is read more than once.
    """

    def __init__(self, X):
        self.X = X
        self.shape = tuple(int(s) for s in X.shape)
        self.dtype = X.dtype
        self._row_chunks = tuple(int(c) for c in X.chunks[0])
        meta = X._meta
        self._xp = _ClientNamespace(get_namespace(meta.data if is_sparse(meta) else meta), self._row_chunks, self.shape[1])
        self._products = {}

    @property
    def xp(self):
        return self._xp

    def __getstate__(self):
        return dict(self.__dict__)

    def __setstate__(self, state):
        self.__dict__.update(state)

    def _rows_like(self, U):
        """``U`` (n rows, 2-d) as a Dask array in ``X``'s row chunks, one chunk across columns."""
        import dask.array as da

        if not _is_dask(U):
            return da.from_array(U, chunks=(self._row_chunks, -1))
        if tuple(U.chunks[0]) != self._row_chunks or U.numblocks[1] != 1:
            U = U.rechunk((self._row_chunks, -1))
        return U

    def _reduce(self, block_func, shape, *rows, **constants):
        """Sum over the row chunks of ``block_func(X_chunk, *row_chunks, **constants)`` (a ``shape`` block)."""
        rows = [self._rows_like(U) for U in rows]
        parts = self.X.map_blocks(
            _stacked(block_func),
            *rows,
            **constants,
            new_axis=[2] if len(shape) == 2 else [],
            chunks=((1,) * len(self._row_chunks),) + tuple((s,) for s in shape),
            dtype=self.dtype,
            meta=np.empty((0,) * (len(shape) + 1), dtype=self.dtype),
        )
        return self._xp._base.asarray(parts.sum(axis=0).compute())

    def matmat(self, V):
        return self.X.map_blocks(
            _block_matmat, V, chunks=(self._row_chunks, (V.shape[1],)), dtype=self.dtype, meta=np.empty((0, 0), self.dtype)
        )

    def rmatmat(self, U):
        if not _is_dask(U):
            return self._reduce(_block_rmatmat, (self.shape[1], U.shape[1]), U)
        # The centred operator asks for X^T w again at every product: the
        # same Dask expression has the same name, so it is computed once.
        cached = self._products.get(U.name)
        if cached is None:
            cached = self._reduce(_block_rmatmat, (self.shape[1], U.shape[1]), U)
            if len(self._products) >= 8:
                self._products.pop(next(iter(self._products)))
            self._products[U.name] = cached
        return cached

    def gram_times(self, V, weights=None):
        # One pass: each chunk forms X_c^T (w_c * (X_c V)).
        if weights is None:
            return self._reduce(_block_gram_times, (self.shape[1], V.shape[1]), V=V)
        return self._reduce(_block_weighted_gram_times, (self.shape[1], V.shape[1]), weights[:, None], V=V)

    def take_rows(self, rows):
        # A minibatch is gathered to the client and multiplied there.
        rows = to_numpy(rows)
        block = self.X[np.sort(rows)].compute()
        order = np.argsort(np.argsort(rows))
        return as_features(block[order] if not is_sparse(block) else block.tocsr()[order])

    def dense(self):
        raise ValueError(
            f"Refusing to gather a {self.shape[0]} x {self.shape[1]} Dask array into one process; "
            "take_rows(...).dense() gathers a few rows."
        )

    def row_sq_norms(self):
        return self.X.map_blocks(
            _block_row_sq_norms, drop_axis=1, dtype=self.dtype, meta=np.empty((0,), self.dtype)
        )

    def col_sq_norms(self, weights=None):
        d = self.shape[1]
        w = self._ones_like_rows() if weights is None else weights
        return self._reduce(_block_col_sq_norms, (d,), w[:, None])

    def _ones_like_rows(self):
        import dask.array as da

        return da.ones(self.shape[0], chunks=(self._row_chunks,), dtype=self.dtype)

    def gram(self, sqrt_weights=None):
        d = self.shape[1]
        w = self._ones_like_rows() if sqrt_weights is None else sqrt_weights
        return self._reduce(_block_gram, (d, d), w[:, None])

    def kernel(self, sqrt_weights=None):
        raise NotImplementedError(
            "DaskFeatures gives no n x n kernel: Dask input is for tall data; use the Gram (solver='exact' "
            "with n_samples >= n_features) or solver='cg'."
        )


def _stacked(block_func):
    return _Stacked(block_func)


class _Stacked:
    """``block_func``'s result with a leading axis of length 1 (one slot per chunk, summed after)."""

    def __init__(self, block_func):
        self.block_func = block_func

    def __call__(self, *args, **kwargs):
        out = self.block_func(*args, **kwargs)
        return out[None, ...]


def _block_matmat(X, V):
    return X @ V


def _block_rmatmat(X, U):
    return X.T @ U


def _block_gram_times(X, V):
    return X.T @ (X @ V)


def _block_weighted_gram_times(X, w, V):
    return X.T @ ((X @ V) * w)


def _block_row_sq_norms(X):
    if is_sparse(X):
        return np.asarray(X.multiply(X).sum(axis=1)).reshape(-1)
    return (X * X).sum(axis=1)


def _block_col_sq_norms(X, w):
    if is_sparse(X):
        return np.asarray(X.multiply(X).T @ w).reshape(-1)
    return ((X * X) * w).sum(axis=0)


def _block_gram(X, sqrt_w):
    return as_features(X).gram(sqrt_w[:, 0])
