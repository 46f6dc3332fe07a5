"""Array namespace, device, dtype and random-number helpers shared by every module.

Everything above this module manipulates arrays through the namespace returned
by :func:`get_namespace`, so the same code runs on NumPy, on CuPy and on any
other array-API library. Nothing else in the package imports CuPy: the few
places that must name it (moving NumPy input to a GPU, recognising
``cupyx.scipy.sparse``) live here and import it lazily.
"""

import sys

import numpy as np
from array_api_compat import array_namespace, device, is_cupy_array, is_numpy_array, is_torch_array, to_device

__all__ = [
    "get_namespace",
    "device",
    "to_device",
    "is_cupy_array",
    "is_numpy_namespace",
    "is_sparse",
    "to_numpy",
    "asarray_on",
    "create",
    "resolve_device",
    "keeps_float32",
    "standard_normal",
    "scalar",
    "is_out_of_memory",
]


def get_namespace(*arrays):
    """Return the array-API namespace of ``arrays`` (NumPy when none is given).

    Parameters
    ----------
    *arrays : array-like
        Arrays whose namespace is wanted. ``None`` entries are ignored;
        scipy.sparse matrices count as NumPy and cupyx.scipy.sparse matrices
        as CuPy.

    Returns
    -------
    xp : module
        The array-API compatible namespace (``array_api_compat.numpy``,
        ``array_api_compat.cupy``, ...).
    """
    dense = []
    for a in arrays:
        if a is None:
            continue
        if _is_scipy_sparse(a):
            continue
        if _is_cupyx_sparse(a):
            a = a.data
        dense.append(a)
    if not dense:
        return array_namespace(np.empty(0))
    return array_namespace(*dense)


def is_numpy_namespace(xp):
    """Whether ``xp`` is NumPy (plain or array-api-compat's wrapper)."""
    return xp.__name__ in {"numpy", "array_api_compat.numpy"}


def _is_scipy_sparse(a):
    import scipy.sparse as sp

    return sp.issparse(a)


def _is_cupyx_sparse(a):
    # Only look if CuPy is already loaded: an object cannot be a CuPy matrix otherwise.
    if "cupyx" not in sys.modules:
        return False
    import cupyx.scipy.sparse

    return cupyx.scipy.sparse.issparse(a)


def is_sparse(a):
    """Whether ``a`` is a scipy.sparse or cupyx.scipy.sparse matrix or array."""
    return _is_scipy_sparse(a) or _is_cupyx_sparse(a)


def to_numpy(a):
    """Copy an array of any supported namespace to a NumPy array on the host."""
    if is_numpy_array(a) or np.isscalar(a):
        return np.asarray(a)
    if is_cupy_array(a):
        return a.get()
    if is_torch_array(a):
        # Asking torch's namespace for its device list probes (and warns
        # about) every backend; a tensor knows how to reach the host.
        return a.detach().cpu().numpy()
    return np.asarray(_to_host_device(a, array_namespace(a)))


def _to_host_device(a, xp):
    """Move ``a`` to the namespace's CPU device, if it names one."""
    try:
        info = xp.__array_namespace_info__()
        cpu = info.default_device()
        for dev in info.devices():
            if "cpu" in str(dev).lower():
                cpu = dev
                break
        return to_device(a, cpu)
    except Exception:  # pragma: no cover - namespaces without inspection
        return a


def asarray_on(a, xp, device_=None, dtype=None):
    """Return ``a`` as an array of namespace ``xp`` on ``device_``.

    Crosses namespaces through the host when needed (NumPy input for a CuPy
    model, a CuPy target for a NumPy model); within one namespace only the
    device and dtype change. Sparse matrices move between scipy.sparse and
    cupyx.scipy.sparse (their dtype is kept). Used at the boundaries of ``fit`` and
    ``predict``, never inside a solver iteration.
    """
    if a is None:
        return None
    if is_sparse(a):
        return _sparse_on(a, xp, device_)
    src = get_namespace(a)
    if src.__name__ != xp.__name__:
        a = to_numpy(a)
    out = xp.asarray(a, dtype=dtype) if device_ is None else xp.asarray(a, dtype=dtype, device=device_)
    if device_ is not None and device(out) != device_:
        out = to_device(out, device_)
    return out


def create(xp, func, *args, device_=None, **kwargs):
    """Call the array constructor ``xp.<func>`` on ``device_`` (the default device when None).

    Constructors (``zeros``, ``ones``, ``eye``, ``arange`` ...) place their
    result on the namespace's default device unless told otherwise, which on a
    second GPU, or in array-api-strict's device checks, is the wrong one.
    """
    if device_ is not None:
        kwargs["device"] = device_
    return getattr(xp, func)(*args, **kwargs)


def _sparse_on(X, xp, device_):
    """A scipy.sparse or cupyx.scipy.sparse matrix moved to ``xp`` (host: scipy, GPU: cupyx)."""
    if get_namespace(X).__name__ == xp.__name__:
        return X
    if is_numpy_namespace(xp):
        return X.get()
    import cupyx.scipy.sparse

    with device_:
        return cupyx.scipy.sparse.csr_matrix(X)


def resolve_device(name):
    """Return ``(xp, device)`` for a ``device`` parameter given as a string.

    ``'cpu'`` is NumPy; ``'cuda'`` or ``'cuda:N'`` is CuPy on GPU ``N``.

    Raises
    ------
    ImportError
        If a GPU is asked for and CuPy is not installed.
    ValueError
        For any other string.
    """
    name = str(name).lower()
    if name == "cpu":
        return array_namespace(np.empty(0)), "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        try:
            import cupy
        except ImportError as exc:
            raise ImportError(
                f"device={name!r} needs CuPy: install it with `pip install bayeslin[cuda12]` "
                "(or [cuda13]) to match your CUDA driver."
            ) from exc
        index = int(name.split(":", 1)[1]) if ":" in name else cupy.cuda.runtime.getDevice()
        return array_namespace(cupy.empty(0)), cupy.cuda.Device(index)
    raise ValueError(f"device must be None, 'cpu', 'cuda' or 'cuda:N', got {name!r}.")


def keeps_float32(xp, device_):
    """Whether float32 input is computed in float32: on a GPU, yes; elsewhere float64.

    A GPU's float32 throughput and memory are worth the rounding (about
    ``1e-7 cond(H)`` relative, see the user guide); on a CPU they are not.
    """
    return xp.__name__.endswith("cupy") or "cuda" in str(device_).lower()


def scalar(a):
    """Return a 0-d array (or Python number) as a Python float on the host.

    Only used outside solver iterations, or once per many of them: it
    synchronises a GPU.
    """
    return float(a)


def standard_normal(rng, shape, xp, dtype, device_=None):
    """Draw standard normal numbers with a NumPy generator, placed on ``device_``.

    The draws are made on the host so that a fixed ``random_state`` gives the
    same numbers on every backend; they are made once per fit, outside any
    solver iteration, then moved to the device.

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
    device_ : device, optional
        Target device (the namespace's default when None).

    Returns
    -------
    draws : array of shape ``shape``
    """
    return asarray_on(rng.standard_normal(size=shape), xp, device_, dtype)


def is_out_of_memory(exc):
    """Whether ``exc`` reports an exhausted host or device memory.

    CuPy's ``OutOfMemoryError`` subclasses ``MemoryError``; cuBLAS and
    cuSOLVER report failed workspace allocations as errors that name it.
    PyTorch raises ``torch.OutOfMemoryError`` (a RuntimeError) on a GPU and
    a RuntimeError saying "not enough memory" from its CPU allocator.
    """
    if isinstance(exc, MemoryError):
        return True
    text = f"{type(exc).__name__} {exc}".upper()
    return (
        "OUT_OF_MEMORY" in text
        or "OUTOFMEMORY" in text
        or "OUT OF MEMORY" in text
        or "ALLOC_FAILED" in text
        or "NOT ENOUGH MEMORY" in text
    )
