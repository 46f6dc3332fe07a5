"""Dask input: fit, predict and sample on Dask arrays chunked along rows.

``BayesianLinearRegressor`` hands Dask input (a ``dask.array.Array``, or an
``xarray.DataArray`` backed by one) to this module; Dask is imported only
then, so it stays an optional extra. The conventions are dask-ml's: ``X`` is
chunked along its rows only (one chunk across the columns, known chunk
sizes), ``y`` and ``sample_weight`` have the same row chunks, and each chunk
is a NumPy array, a scipy.sparse matrix or a CuPy array. The work runs on
the active ``dask.distributed`` client, or on Dask's default scheduler
without one; ``X`` is never gathered into one process, and only
``d``-sized and ``d x k`` state lives on the client.

How each solver uses the cluster:

``'exact'``
    One pass over the data: the weighted moments of ``[1, X, y]`` (a
    ``(d + 2) x (d + 2)`` matrix) are summed over the chunks by Dask's tree
    reduction, together with a check that every chunk is finite. On the
    client they are turned into ``d + 2`` weighted rows with exactly those
    moments, and the in-memory exact path runs on them: the same spectral
    factorisation, evidence loop and centring as for NumPy input, with no
    further pass over the data (the weighted residual of every evidence
    step is a function of the moments).
``'cg'`` and ``'sgd'``
    ``X``, ``y`` and the weights are persisted once; :class:`DaskFeatures`
    gives the solvers every product with ``Phi`` as a map over the chunks
    followed by a tree reduction of ``d x k`` blocks, so one cg iteration is
    one Dask computation. ``'sgd'`` gathers each minibatch's rows to the
    client (one computation per step).

Predictions on Dask input are lazy Dask arrays, computed chunk by chunk from
the fitted ``d``-sized state (as dask-ml's ``ParallelPostFit`` does).
"""

import numpy as np

from ._backend import get_namespace, is_sparse, to_numpy
from .operators import CenteredFeatures, DenseFeatures, FeatureOperator, as_features

__all__ = ["as_dask_array", "fit_inputs", "DaskFeatures", "predict", "sample_y", "check_solver"]

# solver='auto' on Dask input takes 'exact' up to this many features: its one
# pass then costs about d / (4 k) cg passes of arithmetic (k = n_samples + 1
# columns), and a cg fit takes hundreds of passes; the d x d moments must
# also fit on the client. The in-memory rule (smaller side <= 8192) agrees.
_EXACT_MAX_FEATURES = 8192


def as_dask_array(X):
    """The Dask array behind ``X`` (a Dask array or a Dask-backed xarray DataArray), else None.

    Checked by type name, so Dask is not imported for other input.
    """
    module = type(X).__module__
    if module.startswith("dask.array"):
        return X
    if module.startswith("xarray.") and type(getattr(X, "data", None)).__module__.startswith("dask.array"):
        return X.data
    return None


def check_solver(solver, n, d):
    """The solver a fit on Dask input of shape ``(n, d)`` uses (``'auto'`` resolved).

    ``'auto'`` takes ``'exact'`` when ``d <= 8192`` (one pass over the data
    and a ``d x d`` factorisation on the client), else ``'cg'``.
    """
    if solver != "auto":
        return solver
    solver = "exact" if d <= _EXACT_MAX_FEATURES else "cg"
    if solver != "exact" and n <= _EXACT_MAX_FEATURES:
        # The estimator's own rule would take the exact dual here (an n x n
        # kernel of the rows), which Dask input does not provide.
        raise ValueError(
            f"Dask input with n_samples={n} <= 8192 < n_features={d}: its exact (kernel) route is not "
            f"available on Dask arrays: set solver='cg', or compute X into memory (X.compute())."
        )
    return solver


# --------------------------------------------------------------------------
# The client's namespace
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# The operator
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Fit inputs
# --------------------------------------------------------------------------


def _check_X(X):
    """Shape, chunks and dtype of ``X`` (lazy: nothing is computed)."""
    import dask.array as da

    if X.ndim != 2:
        raise ValueError(f"Expected 2D array, got array of shape {X.shape} instead.")
    if any(np.isnan(c) for c in X.chunks[0]) or any(np.isnan(c) for c in X.chunks[1]):
        raise ValueError(
            "X has unknown chunk sizes (NaN in X.chunks), e.g. from boolean indexing or a DataFrame's "
            "to_dask_array(); call X.compute_chunk_sizes() (or to_dask_array(lengths=True)) first."
        )
    if X.numblocks[1] != 1:
        raise ValueError(
            f"X is chunked across its columns (chunks {X.chunks[1]} along axis 1): chunk it along rows only, "
            f"with one chunk across the columns: X.rechunk({{1: -1}})."
        )
    n, d = X.shape
    if n < 1:
        raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required.")
    if d < 1:
        raise ValueError(f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
    if X.dtype != np.float64:
        if X.dtype.kind not in "biuf":
            raise ValueError(f"X must hold numbers, got dtype {X.dtype}.")
        X = X.astype(np.float64)
    return X if isinstance(X, da.Array) else da.asarray(X)


def _check_rows(v, X, name):
    """A target or weight vector as a Dask array in ``X``'s row chunks (lazy)."""
    import dask.array as da

    n = X.shape[0]
    source = as_dask_array(v)
    if source is None:
        v = np.asarray(v)
        if v.dtype.kind not in "biuf":
            v = v.astype(np.float64)
    else:
        v = source
    if v.ndim == 2 and v.shape[1] == 1:
        if name == "y":
            import warnings

            from sklearn.exceptions import DataConversionWarning

            warnings.warn(
                "A column-vector y was passed when a 1d array was expected. Please change the shape of y to "
                "(n_samples, ), for example using ravel().",
                DataConversionWarning,
                stacklevel=4,
            )
        v = v.reshape(-1) if source is None else v.reshape((v.shape[0],), merge_chunks=False)
    elif v.ndim != 1:
        raise ValueError(f"{name} should be a 1d array, got an array of shape {v.shape} instead.")
    if v.shape[0] != n:
        if name == "y":
            raise ValueError(f"Found input variables with inconsistent numbers of samples: [{n}, {v.shape[0]}]")
        raise ValueError(f"{name}.shape == {tuple(v.shape)}, expected ({n},)!")
    if source is None:
        return da.from_array(v.astype(np.float64, copy=False), chunks=(X.chunks[0],))
    if tuple(v.chunks[0]) != tuple(X.chunks[0]):
        raise ValueError(
            f"{name} is chunked differently from the rows of X ({name}: {_describe(v.chunks[0])}, X: "
            f"{_describe(X.chunks[0])}): each chunk of {name} must hold the targets of the same chunk of X. "
            f"Rechunk it: {name}.rechunk((X.chunks[0],))."
        )
    return v.astype(np.float64) if v.dtype != np.float64 else v


def _describe(chunks):
    chunks = tuple(chunks)
    if any(np.isnan(c) for c in chunks):
        return "unknown chunk sizes"
    if len(chunks) > 4:
        return f"{len(chunks)} chunks of {chunks[0]}, {chunks[1]}, ... rows"
    return f"chunks {chunks}"


def fit_inputs(solver, X, y, sample_weight):
    """Check Dask input and give the estimator what it fits.

    Parameters
    ----------
    solver : {'exact', 'cg', 'sgd'}
        As resolved by :func:`check_solver`.
    X : dask.array.Array of shape (n, d)
    y : array-like or Dask array of shape (n,)
    sample_weight : array-like, Dask array, float or None

    Returns
    -------
    features : FeatureOperator
        ``'exact'``: ``d + 2`` in-memory rows with the data's weighted
        moments; otherwise a :class:`DaskFeatures` of the persisted ``X``.
    y : array
        In-memory (``'exact'``) or persisted Dask targets.
    weights : array or None
        Same.

    Raises
    ------
    ValueError
        For unknown chunk sizes, chunks across columns, ``y`` or weights
        chunked differently from ``X`` (checked without computing), and for
        NaN or infinity in ``X``, ``y`` or the weights, or negative or all-zero
        weights (found in the first pass over the data).
    """
    import dask

    X = _check_X(X)
    y = _check_rows(y, X, "y")
    if sample_weight is not None and np.isscalar(sample_weight):
        sample_weight = np.full(X.shape[0], float(sample_weight))
    w = None if sample_weight is None else _check_rows(sample_weight, X, "sample_weight")
    if solver == "exact":
        return _equivalent_rows(X, y, w)
    X, y, w = dask.persist(X, y, w)
    _raise_for_flags(_first_pass(X, y, w, moments=False))
    return DaskFeatures(X), y, w


# Layout of the check flags computed alongside the first pass.
_FLAGS = ("X is not finite", "y is not finite", "sample_weight is not finite", "negative weights", "positive weights")


def _first_pass(X, y, w, moments, shift=None):
    """One pass over the data: finiteness flags (and the weighted moments of ``[1, X - x0, y - y0]``)."""
    d = X.shape[1]
    m = d + 2 if moments else 0
    import dask.array as da

    ones = da.ones((X.shape[0], 1), chunks=(X.chunks[0], 1)) if w is None else w[:, None]
    parts = X.map_blocks(
        _Stacked(_block_first_pass),
        y[:, None],
        ones,
        moments=moments,
        shift=shift,
        weighted=w is not None,
        new_axis=[2],
        chunks=((1,) * X.numblocks[0], (max(m, 1) + 1,), (max(m, len(_FLAGS)),)),
        dtype=np.float64,
        meta=np.empty((0, 0, 0)),
    )
    return parts.sum(axis=0).compute()


def _block_first_pass(X, y, w, moments, shift, weighted):
    """Per chunk: the flags in the last row; with ``moments``, ``A^T W A`` for ``A = [1, X - x0, y - y0]`` above."""
    y, w = y[:, 0], w[:, 0]
    values = X.data if is_sparse(X) else X
    d = X.shape[1]
    m = d + 2 if moments else 0
    out = np.zeros((max(m, 1) + 1, max(m, len(_FLAGS))))
    flags = out[-1]
    flags[0] = not np.all(np.isfinite(values))
    flags[1] = not np.all(np.isfinite(y))
    flags[2] = not np.all(np.isfinite(w))
    flags[3] = np.sum(w < 0)
    flags[4] = np.sum(w > 0)
    if moments and not flags[:4].any():
        if is_sparse(X):
            F = as_features(X)
            out[0, 0] = np.sum(w)
            cross = F.rmatmat(np.stack([w, w * y], axis=1))
            out[0, 1 : d + 1] = out[1 : d + 1, 0] = cross[:, 0]
            out[d + 1, 1 : d + 1] = out[1 : d + 1, d + 1] = cross[:, 1]
            out[0, d + 1] = out[d + 1, 0] = np.sum(w * y)
            out[d + 1, d + 1] = np.sum(w * y * y)
            out[1 : d + 1, 1 : d + 1] = F.gram(np.sqrt(w))
        else:
            # One copy of the chunk, A = W^1/2 [1, X - x0, y - y0], and one
            # symmetric rank-k update.
            A = np.empty((X.shape[0], m))
            A[:, 0] = 1.0
            np.subtract(X, shift[0][None, :], out=A[:, 1 : d + 1])
            A[:, d + 1] = y - shift[1]
            if weighted:
                A *= np.sqrt(w)[:, None]
            out[:m, :m] = _syrk(A)
    return out


def _syrk(A):
    """``A.T @ A`` for a C-ordered ``A``, by BLAS ``dsyrk`` for NumPy float64.

    ``dsyrk`` does half of ``gemm``'s arithmetic, and on ``A.T`` (Fortran
    order, no copy) it reads ``A`` as it lies. NumPy's own ``A.T @ A`` was
    up to 50 times slower on a tall chunk on this loaded 2-core machine
    (0.2 s against 1.4 to 11 s for 250,000 x 102).
    """
    if isinstance(A, np.ndarray) and A.dtype == np.float64 and A.flags.c_contiguous:
        from scipy.linalg import blas

        upper = blas.dsyrk(1.0, A.T)
        return np.triu(upper) + np.triu(upper, 1).T
    return A.T @ A


def _raise_for_flags(summed):
    flags = summed[-1]
    if flags[0]:
        raise ValueError(f"Input X contains NaN or infinity (in {int(flags[0])} chunk(s)).")
    if flags[1]:
        raise ValueError(f"Input y contains NaN or infinity (in {int(flags[1])} chunk(s)).")
    if flags[2]:
        raise ValueError(f"Input sample_weight contains NaN or infinity (in {int(flags[2])} chunk(s)).")
    if flags[3]:
        raise ValueError("Negative values in data passed to `sample_weight`")
    if not flags[4]:
        raise ValueError("Sample weights must contain at least one non-zero number.")


def _equivalent_rows(X, y, w):
    """``d + 2`` weighted rows with the same weighted moments of ``[1, X, y]`` as the data (one pass).

    The exact fit depends on the data only through the sum of the weights,
    the weighted means of ``X`` and ``y`` and their centred second moments
    ``C`` (``(d + 1) x (d + 1)``). With ``C = Z^T Z`` (``Z`` square, from
    ``eigh``), a zero row appended and a Householder reflection ``Q`` that
    maps the appended row's unit vector to ``1 / sqrt(d + 2)``, the rows of
    ``Q Z`` sum to zero; scaled by ``1 / sqrt(v)`` with equal weights
    ``v = sum(w) / (d + 2)`` and shifted by the means, they have exactly the
    data's moments, with or without an intercept.
    """
    import dask

    d = X.shape[1]
    shift = None
    if not is_sparse(X._meta):
        # Moments about the first row, not about 0: a large mean then costs no digits.
        x0, y0 = dask.compute(X[0], y[0])
        shift = (np.asarray(x0, dtype=np.float64), float(y0))
    summed = _first_pass(X, y, w, moments=True, shift=shift)
    _raise_for_flags(summed)
    M = summed[:-1, : d + 2]
    n_eff = M[0, 0]
    s = M[0, 1:]
    mean = s / n_eff
    C = M[1:, 1:] - np.outer(s, mean)
    C = 0.5 * (C + C.T)
    values, vectors = np.linalg.eigh(C)
    Z = np.sqrt(np.clip(values, 0.0, None))[:, None] * vectors.T
    rows = d + 2
    Z = np.vstack([Z, np.zeros((1, d + 1))])
    v = -np.full(rows, 1.0 / np.sqrt(rows))
    v[-1] += 1.0
    QZ = Z - (2.0 / (v @ v)) * np.outer(v, v @ Z)
    weight = n_eff / rows
    if shift is not None:
        mean = mean + np.append(shift[0], shift[1])
    A = QZ / np.sqrt(weight) + mean[None, :]
    return DenseFeatures(np.ascontiguousarray(A[:, :d])), np.ascontiguousarray(A[:, d]), np.full(rows, weight)


# --------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------


def _check_predict_X(estimator, X):
    from sklearn.utils.validation import validate_data

    X = _check_X(X)
    validate_data(estimator, X, reset=False, skip_check_array=True)
    return X


def predict(estimator, X, return_std=False, factor=None):
    """Lazy predictions on a Dask array, chunk by chunk.

    Parameters
    ----------
    estimator : BayesianLinearRegressor
        Fitted; its public ``coef_``, ``intercept_``, ``X_offset_`` and
        ``alpha_`` are sent to the workers.
    X : dask.array.Array of shape (m, d)
    return_std : bool, default=False
    factor : ndarray of shape (d, r), optional
        ``C`` with ``C C^T`` the posterior covariance of the weights (needed
        with ``return_std``).

    Returns
    -------
    y_mean : dask.array.Array of shape (m,)
    y_std : dask.array.Array of shape (m,)
        Only with ``return_std``.
    """
    X = _check_predict_X(estimator, X)
    state = _state(estimator)
    width = 2 if return_std else 1
    out = X.map_blocks(
        _block_predict,
        state=state,
        factor=factor if return_std else None,
        chunks=(X.chunks[0], (width,)),
        dtype=np.float64,
        meta=np.empty((0, 0)),
    )
    if not return_std:
        return out[:, 0]
    return out[:, 0], out[:, 1]


def sample_y(estimator, X, draw, rng):
    """Lazy draws from the predictive distribution on a Dask array.

    Parameters
    ----------
    estimator : BayesianLinearRegressor
    X : dask.array.Array of shape (m, d)
    draw : callable
        Returns zero-mean posterior draws of the weights, shape ``(d, k)``
        (made on the client, after ``X`` is checked).
    rng : numpy.random.RandomState
        The noise of chunk ``i`` continues the stream where chunk ``i - 1``
        stopped, so the numbers are those of the in-memory path; ``rng`` is
        advanced past them.

    Returns
    -------
    y_samples : dask.array.Array of shape (m, k)
    """
    X = _check_predict_X(estimator, X)
    draws = to_numpy(draw())
    k = draws.shape[1]
    noise = chained_standard_normal(rng, X.chunks[0], k)
    return X.map_blocks(
        _block_sample_y,
        noise,
        state=_state(estimator),
        draws=draws,
        chunks=(X.chunks[0], (k,)),
        dtype=np.float64,
        meta=np.empty((0, 0)),
    )


def _state(estimator):
    """The fitted ``d``-sized state the chunks need (NumPy)."""
    return {
        "coef": to_numpy(estimator.coef_),
        "intercept": float(estimator.intercept_),
        "offset": to_numpy(estimator.X_offset_),
        "alpha": float(estimator.alpha_),
    }


def _chunk_features(X):
    if not is_sparse(X):
        X = np.asarray(X, dtype=np.float64)
        if not np.all(np.isfinite(X)):
            raise ValueError("Input X contains NaN or infinity.")
    elif not np.all(np.isfinite(X.data)):
        raise ValueError("Input X contains NaN or infinity.")
    return as_features(X.astype(np.float64) if is_sparse(X) else X)


def _block_predict(X, state, factor):
    F = _chunk_features(X)
    mean = F.matmat(state["coef"][:, None])[:, 0] + state["intercept"]
    if factor is None:
        return mean[:, None]
    P = CenteredFeatures(F, state["offset"]).matmat(factor)
    std = np.sqrt(np.clip(np.sum(P * P, axis=1), 0.0, None) + 1.0 / state["alpha"])
    return np.stack([mean, std], axis=1)


def _block_sample_y(X, noise, state, draws):
    F = _chunk_features(X)
    mean = F.matmat(state["coef"][:, None]) + state["intercept"]
    f = mean + CenteredFeatures(F, state["offset"]).matmat(draws)
    return f + noise / state["alpha"] ** 0.5


def chained_standard_normal(rng, row_chunks, k):
    """Standard normal ``(n, k)`` draws as a Dask array, the same numbers as ``rng.standard_normal((n, k))``.

    Chunk ``i`` is drawn on a worker from the generator state chunk ``i - 1``
    ended in (a chain of small tasks), so no ``n``-sized array passes
    through the client. ``rng`` (a legacy ``RandomState``) is advanced past
    the draws on the client, one chunk at a time.
    """
    import dask
    import dask.array as da

    state = rng.get_state()
    parts = []
    for rows in row_chunks:
        step = dask.delayed(_draw_chunk, nout=2, pure=True)(state, int(rows), int(k))
        parts.append(da.from_delayed(step[0], shape=(int(rows), int(k)), dtype=np.float64))
        state = step[1]
    for rows in row_chunks:
        rng.standard_normal((int(rows), int(k)))
    return da.concatenate(parts, axis=0) if parts else da.zeros((0, k))


def _draw_chunk(state, rows, k):
    rs = np.random.RandomState()
    rs.set_state(state)
    out = rs.standard_normal((rows, k))
    return out, rs.get_state()
