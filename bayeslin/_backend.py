"""Array namespace, dtype and random-number helpers shared by every module.

Everything above this module manipulates arrays through the namespace returned
by :func:`get_namespace`, so the same code runs on NumPy and on CuPy arrays.
Nothing else in the package imports CuPy directly.
"""

import numpy as np
from array_api_compat import array_namespace, device, is_cupy_array, to_device

__all__ = [
    "get_namespace",
    "device",
    "to_device",
    "is_cupy_array",
    "to_numpy",
    "standard_normal",
    "scalar",
]


def get_namespace(*arrays):
    """Return the array-API namespace of ``arrays`` (NumPy when none is given).

    Parameters
    ----------
    *arrays : array-like
        Arrays whose namespace is wanted. ``None`` entries and scipy.sparse
        matrices are ignored (sparse matrices are handled by NumPy).

    Returns
    -------
    xp : module
        The array-API compatible namespace (``array_api_compat.numpy`` or
        ``array_api_compat.cupy``).
    """
    dense = [a for a in arrays if a is not None and not _is_scipy_sparse(a)]
    if not dense:
        return array_namespace(np.empty(0))
    return array_namespace(*dense)


def _is_scipy_sparse(a):
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a hard dependency
        return False
    return sp.issparse(a)


def to_numpy(a):
    """Copy an array of any supported namespace to a NumPy array on the host."""
    if is_cupy_array(a):
        return a.get()
    return np.asarray(a)


def scalar(a):
    """Return a 0-d array (or Python number) as a Python float on the host.

    Only used outside solver iterations: it synchronises a GPU.
    """
    return float(to_numpy(a))


def standard_normal(rng, shape, xp, dtype, like=None):
    """Draw standard normal numbers with a NumPy generator, placed like ``like``.

    The draws are made on the host so that a fixed ``random_state`` gives the
    same numbers on every backend; they are made once per fit, outside any
    solver iteration, then moved to the device of ``like``.

    Parameters
    ----------
    rng : numpy.random.RandomState
        Source of randomness (from ``sklearn.utils.check_random_state``).
    shape : tuple of int
        Shape of the draw.
    xp : module
        Target array namespace.
    dtype : dtype
        Target floating dtype.
    like : array, optional
        An array on the target device.

    Returns
    -------
    draws : array of shape ``shape``
    """
    z = rng.standard_normal(size=shape)
    out = xp.asarray(z, dtype=dtype)
    if like is not None and is_cupy_array(like):
        out = to_device(out, device(like))
    return out
