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
    ``X``, ``y`` and the weights are persisted once;
    :class:`~bayeslin.operators.dask.DaskFeatures`
    gives the solvers every product with ``Phi`` as a map over the chunks
    followed by a tree reduction of ``d x k`` blocks, so one cg iteration is
    one Dask computation. ``'sgd'`` gathers each minibatch's rows to the
    client (one computation per step).

Predictions on Dask input are lazy Dask arrays, computed chunk by chunk from
the fitted ``d``-sized state (as dask-ml's ``ParallelPostFit`` does).
"""

import numpy as np

from ._backend import get_namespace, is_sparse, to_numpy
from ._validation import check_consistent_length
from .operators import CenteredFeatures, DenseFeatures, as_features

__all__ = ["as_dask_array", "fit_inputs", "predict", "sample_y", "check_solver"]

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
            check_consistent_length(n, v.shape[0])
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
        moments; otherwise a :class:`~bayeslin.operators.dask.DaskFeatures`
        of the persisted ``X``.
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

    # Imported here, as Dask itself: `import bayeslin` loads neither.
    from .operators.dask import DaskFeatures

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
        _stacked_first_pass,
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


def _stacked_first_pass(*args, **kwargs):
    """One chunk's :func:`_block_first_pass` with a leading axis of length 1 (summed over chunks)."""
    return _block_first_pass(*args, **kwargs)[None]


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
            # (In the chunk's namespace: NumPy, or CuPy on its device.)
            xp = get_namespace(X)
            A = xp.empty((X.shape[0], m), dtype=xp.float64)
            A[:, 0] = 1.0
            A[:, 1 : d + 1] = X - xp.asarray(shift[0])[None, :]
            A[:, d + 1] = y - shift[1]
            if weighted:
                A *= xp.sqrt(w)[:, None]
            out[:m, :m] = to_numpy(_syrk(A))
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
        shift = (to_numpy(x0).astype(np.float64), float(y0))
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
