"""Input validation and placement: where the input lives, where the model computes, checks on a device.

Every estimator validates and places its input through this module.

``sklearn.utils.validation.validate_data`` validates NumPy, lists, pandas
and scipy.sparse input, and the estimators call it for those. A CuPy array, a
cupyx.scipy.sparse matrix, another array-API array or a feature operator would
be copied to the host by it (or refused when array-API dispatch is off), so
for them ``validate_data`` only records ``n_features_in_`` and the checks
below do the rest, on the device, with scikit-learn's error messages.
"""

import functools
import math
import warnings
from contextlib import contextmanager

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import DataConversionWarning

from ._backend import asarray_on, device, get_namespace, is_numpy_namespace, is_sparse, resolve_device

__all__ = [
    "Placement",
    "as_array",
    "check_consistent_length",
    "check_device_array",
    "check_device_vector",
    "check_return_std_se",
    "check_same_placement",
    "device_mover",
    "is_host_input",
    "keep_state_on_failure",
    "keeps_state_on_failure",
    "matrix_device",
]


@contextmanager
def keep_state_on_failure(estimator):
    """Restore ``estimator``'s attributes if the block raises: a failed fit leaves the previous fit intact.

    ``validate_data(reset=True)`` sets ``n_features_in_`` and
    ``feature_names_in_`` before the fit can fail, so the fitted state is
    snapshot (shallowly: fits replace attributes, they never modify them in
    place) and put back on any exception, MemoryError and KeyboardInterrupt
    included.
    """
    state = dict(estimator.__dict__)
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(state)
        raise


def keeps_state_on_failure(fit):
    """Decorate a ``fit`` method with :func:`keep_state_on_failure`."""

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        with keep_state_on_failure(self):
            return fit(self, *args, **kwargs)

    return wrapper


def _float_dtype(X, xp, keep_float32):
    if X.dtype == xp.float64 or (keep_float32 and X.dtype == xp.float32):
        return X.dtype
    return xp.float64


def check_device_array(X, *, name="X", keep_float32=True):
    """Check a 2-d array (dense or cupyx sparse) without leaving its device.

    Parameters
    ----------
    X : array or sparse matrix of shape (n, d)
    name : str, default='X'
        Used in error messages.
    keep_float32 : bool, default=True
        Keep float32 input as float32 (other dtypes become float64).

    Returns
    -------
    X : array or sparse matrix
        Floating point, finite.
    """
    shape = tuple(X.shape)
    if len(shape) != 2:
        raise ValueError(f"Expected 2D array, got array of shape {shape} instead.")
    if shape[0] < 1:
        raise ValueError(f"Found array with 0 sample(s) (shape={shape}) while a minimum of 1 is required.")
    if shape[1] < 1:
        raise ValueError(f"Found array with 0 feature(s) (shape={shape}) while a minimum of 1 is required.")
    values = X.data if is_sparse(X) else X
    xp = get_namespace(values)
    _refuse_complex(values)
    dtype = _float_dtype(values, xp, keep_float32)
    if dtype != values.dtype:
        X = X.astype(dtype) if is_sparse(X) else xp.astype(X, dtype)
        values = X.data if is_sparse(X) else X
    _check_finite(values, xp, name)
    return X


def check_device_vector(y, xp, dtype, *, name="y", n=None):
    """Check a 1-d target or weight vector already in the model's namespace.

    A column vector is flattened with scikit-learn's DataConversionWarning.
    """
    shape = tuple(y.shape)
    if len(shape) == 2 and shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected. Please change the shape of y to "
            "(n_samples, ), for example using ravel().",
            DataConversionWarning,
            stacklevel=3,
        )
        y = xp.reshape(y, (-1,))
    elif len(shape) != 1:
        raise ValueError(f"{name} should be a 1d array, got an array of shape {shape} instead.")
    if n is not None and name == "y":
        check_consistent_length(n, y.shape[0])
    elif n is not None and y.shape[0] != n:
        raise ValueError(f"{name}.shape == {tuple(y.shape)}, expected ({n},)!")
    _refuse_complex(y)
    y = xp.astype(y, dtype) if y.dtype != dtype else y
    _check_finite(y, xp, name)
    return y


def check_return_std_se(return_std, return_std_se):
    """Refuse ``predict(return_std_se=True)`` without ``return_std``: it is the standard error of ``y_std``."""
    if return_std_se and not return_std:
        raise ValueError("return_std_se=True needs return_std=True: it is the standard error of y_std.")


def check_consistent_length(n_X, n_y):
    """Raise scikit-learn's message when X and y disagree on the number of samples."""
    if int(n_X) != int(n_y):
        raise ValueError(f"Found input variables with inconsistent numbers of samples: [{int(n_X)}, {int(n_y)}]")


def _refuse_complex(values):
    # scikit-learn's check_array message; a cast would drop the imaginary part.
    if "complex" in str(values.dtype):
        raise ValueError("Complex data not supported")


def _check_finite(values, xp, name):
    # A sum is finite only if every term is: one reduction and one read-back
    # for the common case, and no mask the size of X (a boolean mask of a
    # 1,000,000 x 4,096 X was a 4 GiB peak on a GPU). A sum that overflows
    # from finite terms falls through to the entrywise test, in row blocks.
    if math.isfinite(float(xp.sum(values))):
        return
    rows = values.shape[0]
    step = max(1, _FINITE_CHECK_ENTRIES // max(1, math.prod(values.shape[1:])))
    for start in range(0, rows, step):
        block = values[start : min(rows, start + step), ...]
        if not bool(xp.all(xp.isfinite(block))):
            if bool(xp.any(xp.isnan(block))):
                raise ValueError(f"Input {name} contains NaN.")
            raise ValueError(f"Input {name} contains infinity or a value too large for dtype({values.dtype!r}).")


# Entries tested at once when a sum is not finite: bounds the mask's memory.
_FINITE_CHECK_ENTRIES = 2**24


class Placement:
    """Where arrays live: a namespace, a device and (optionally) a float dtype; moves results there.

    Parameters
    ----------
    xp : module
        Array namespace.
    device_ : object
        Device in that namespace.
    dtype : dtype, optional
        Float dtype of the outputs (as BayesianRidge's, outputs keep the
        input's ``float32`` or ``float64``); other dtypes and None leave the
        computed dtype as it is.
    """

    def __init__(self, xp, device_, dtype=None):
        self.xp = xp
        self.device = device_
        # Kept by name ('float32'): dtypes of some namespaces do not pickle.
        name = None if dtype is None else str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1]
        self.dtype = name if name in ("float32", "float64") else None

    def __getstate__(self):
        # Modules do not pickle: keep the namespace by name.
        return {"xp": self.xp.__name__, "device": self.device, "dtype": self.dtype}

    def __setstate__(self, state):
        import importlib

        self.xp = importlib.import_module(state["xp"])
        self.device = state["device"]
        self.dtype = state.get("dtype")

    def to_output(self, a):
        """``a`` in this namespace, on this device and in this float dtype (a no-op when it already is)."""
        if not (get_namespace(a).__name__ == self.xp.__name__ and (self.device is None or device(a) == self.device)):
            a = asarray_on(a, self.xp, self.device)
        if self.dtype is not None and a.dtype != getattr(self.xp, self.dtype):
            a = self.xp.astype(a, getattr(self.xp, self.dtype))
        return a

    def to_output_scalar(self, value):
        """A NumPy scalar of this dtype for NumPy output (as BayesianRidge's ``intercept_``), else a float."""
        if self.dtype is not None and is_numpy_namespace(self.xp):
            return np.dtype(self.dtype).type(value)
        return float(value)


def is_host_input(X):
    """NumPy, lists, pandas and scipy.sparse: what sklearn's validate_data takes as it is."""
    if is_sparse(X):
        return sp.issparse(X)
    if hasattr(X, "__array_namespace__") or hasattr(X, "__cuda_array_interface__") or hasattr(X, "__dlpack__"):
        return isinstance(X, np.ndarray)
    return True


def as_array(v):
    """Array-API arrays as they are; lists, pandas and other host containers as NumPy."""
    if hasattr(v, "__array_namespace__") or hasattr(v, "__cuda_array_interface__"):
        return v
    v = np.asarray(v)
    _refuse_complex(v)
    if v.dtype.kind not in "biuf":
        # Object or string targets: numeric strings convert, others fail here (y_numeric).
        v = v.astype(np.float64)
    return v


def matrix_device(X):
    """The device of a dense or sparse matrix."""
    return device(X.data) if is_sparse(X) else device(X)


def check_same_placement(fitted, placement, estimator_name):
    """Raise unless ``placement`` is ``fitted``'s: predictions take input from where the fit's came from.

    This is scikit-learn's array API rule.
    """
    same = fitted.xp.__name__ == placement.xp.__name__ and (
        is_numpy_namespace(fitted.xp) or str(fitted.device) == str(placement.device)
    )
    if not same:
        raise ValueError(
            f"Inputs passed to {estimator_name}.predict() must use the same namespace and the same "
            f"device as those passed to fit(): fit got {fitted.xp.__name__} arrays on {fitted.device}, "
            f"this call {placement.xp.__name__} on {placement.device}. Move the input, or set "
            f"device='cuda' to fit NumPy input on a GPU."
        )


def device_mover(device_name):
    """A function moving host arrays to ``device_name`` ('cpu': NumPy, 'cuda': CuPy), resolved once."""
    if device_name == "cpu":
        return np.asarray
    xp, dev = resolve_device(device_name)
    return lambda a: asarray_on(np.asarray(a), xp, dev)
