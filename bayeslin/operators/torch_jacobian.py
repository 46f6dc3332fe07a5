"""The Jacobian of a PyTorch module with respect to (a subset of) its parameters, matrix-free.

For a module ``f(w, x)`` with outputs of shape ``(b, m)`` for a batch of
``b`` inputs, ``Phi`` has ``n * r`` rows stacked row-major over
(observation, output), exactly as :class:`~bayeslin.operators.MLPJacobian`:
row ``i * r + o`` is ``(T_i J_i)_o`` with ``J_i = d f(x_i) / d theta`` and an
optional per-observation transform ``T_i`` of shape ``(r, m)`` (the
likelihood's whitening); ``r = m`` without one.

``theta`` is the concatenation, in the order of ``names``, of the raveled
parameter tensors ``module.get_parameter(name)``; the other parameters and
the buffers (BatchNorm running statistics) are held fixed. The module is
evaluated through :func:`torch.func.functional_call`, so any architecture
works (convolutions, residual connections, normalisation layers in eval mode);
nothing is assumed about ``nn.Sequential``.

This module imports torch at load time; nothing in the package imports it
eagerly (``bayeslin.networks.TorchJacobian``, the public path, loads it on
first access), so ``import bayeslin`` works without PyTorch.

Products are forward-mode (``Phi @ V``: :func:`torch.func.jvp`) and
reverse-mode (``Phi.T @ U``: :func:`torch.func.vjp`) passes, vectorised over
the block of columns with :func:`torch.func.vmap` and taken over blocks of
observations sized so that one block's activations stay under a memory
bound, and so that no single activation tensor of a block (the largest
layer's output times the columns vectorised together) exceeds
``_TENSOR_BYTES``; reverse mode pulls back a block's columns in chunks that
respect the same bound, one forward pass per block of observations. Neither
the Jacobian nor the curvature is ever formed. Row and column
norms come from per-row gradients (``vmap`` of ``vjp`` over observations),
in blocks of at most ``_BLOCK_BYTES``. Everything stays on the module's
device: inputs, transforms and products are torch tensors.
"""

import math

import torch
from torch.func import functional_call, jvp, vjp, vmap

from .._backend import get_namespace
from .features import FeatureOperator

__all__ = ["TorchJacobian"]

# Bytes one block of observations may use for its activations (and per-row
# gradients for the norms): bounds memory whatever n and the block of columns.
_BLOCK_BYTES = 512 * 2**20
# Beyond this many columns per network output, J V is taken from dense
# per-row gradients (m reverse passes) instead of k forward-mode tangents.
_DENSE_ROWS_FACTOR = 8
# A product holds about this many copies of the activations per column
# (the tangent or cotangent and one layer's temporaries): measured peaks of
# vmapped jvp and vjp over 17 columns were 1.9 to 2.1 times k + 1 copies.
# Blocks are not made as large as this bound allows: _TENSOR_BYTES below
# usually binds first, for speed.
_ACTIVATION_COPIES = 2
# Bytes one activation tensor of a block may take: the largest submodule
# output of one observation times the rows and the columns vectorised
# together. Tensors of hundreds of MB (a CNN's vmapped convolution over 17
# tangents and 86 rows: 290 MB) run elementwise work at memory bandwidth and
# are mmap'd and unmapped on every allocation (glibc serves blocks above at
# most 32 MB that way): a 256-row CNN product took 600,000 to 870,000 minor
# page faults per call. Measured on a 256-row, 255,050-parameter CNN with 17
# columns, one thread, CPU seconds of Phi @ V + Phi.T @ U: 4.9 in the
# previous 86-row blocks, 3.2 / 3.1 / 3.0 under bounds of 8 / 16 / 32 MiB;
# with two threads on a loaded machine (per-pass synchronisation dominates
# there, so fewer, larger blocks gain) 16 MiB did best of the three.
# Reverse mode pulls back one column at a time when the bound leaves room
# for no more (vmap's batching rule for convolution weight gradients copies
# the cotangents into another layout; one thread: 1.17 s one at a time in
# 64-row blocks against 1.60 s vmapped in 8-row ones).
_TENSOR_BYTES = 16 * 2**20


def _output_rows(out):
    """Outputs as (b, m): a module returning (b,) has one output."""
    return out[:, None] if out.ndim == 1 else out


class TorchJacobian(FeatureOperator):
    """Jacobian ``Phi`` of a torch module's outputs w.r.t. the parameters named in ``names``.

    Parameters
    ----------
    module : torch.nn.Module
        The network at the weights where it is linearised. It is evaluated
        as it is (call ``module.eval()`` first: dropout off, normalisation
        layers on their running statistics).
    X : torch.Tensor of shape (n, ...)
        Inputs; the products run on its device.
    names : sequence of str
        Parameter names (as in ``module.named_parameters()``), in the order
        of ``theta``.
    output_map : callable, optional
        Applied to the module's output (e.g. ``torch.log`` for a module that
        outputs probabilities); must be differentiable.
    transform : torch.Tensor of shape (n, r, m), optional
        Per-observation matrices ``T_i``; ``None`` means the identity.
    groups : list of (int, int), optional
        ``(start, stop)`` slices of ``theta`` sharing a prior precision
        (default: one per parameter tensor).
    dtype : torch.dtype, optional
        Floating dtype of the products (default: that of ``X``). Parameters
        and floating buffers are cast to it for the products only.
    batch_size : int, optional
        Observations per block of products (default: sized to keep a
        block's activations under 512 MiB).

    Attributes
    ----------
    shape : tuple of int
        ``(n * r, n_params)``.
    n_obs, n_outputs, n_rows_per_obs, n_params : int
    outputs : torch.Tensor of shape (n, m)
        ``output_map(module(X))``.
    X : torch.Tensor
    groups : list of (int, int)
    """

    def __init__(self, module, X, names, *, output_map=None, transform=None, groups=None, dtype=None,
                 batch_size=None, _cache=None):
        if _cache is None:
            _cache = _build_cache(module, X, names, output_map, groups, dtype, batch_size)
        self._c = _cache
        self.X = _cache["X"]
        self.dtype = self.X.dtype
        self.outputs = _cache["outputs"]
        self.n_obs, self.n_outputs = self.outputs.shape
        self.transform = transform
        self.n_rows_per_obs = self.n_outputs if transform is None else transform.shape[1]
        self.n_params = _cache["n_params"]
        self.shape = (self.n_obs * self.n_rows_per_obs, self.n_params)

    # -- protocol extras ----------------------------------------------------

    @property
    def xp(self):
        return get_namespace(self.X)

    @property
    def device(self):
        return self.X.device

    @property
    def groups(self):
        """``(start, stop)`` of every prior group in ``theta``."""
        return self._c["groups"]

    def parameter_vector(self):
        """``theta``: the named parameters, raveled and concatenated (in the products' dtype)."""
        return torch.cat([p.reshape(-1) for p in self._c["primals"]])

    def with_transform(self, transform):
        """Return the operator with rows ``T_i J_i``, sharing the cached forward pass."""
        return TorchJacobian(None, None, None, transform=transform, _cache=self._c)

    def _sub(self, obs, transform):
        c = dict(self._c)
        c["X"] = self.X[obs]
        c["outputs"] = self.outputs[obs]
        return TorchJacobian(None, None, None, transform=transform, _cache=c)

    def take_rows(self, rows):
        """Restrict to rows of ``Phi`` (indices into the ``n * r`` stacked rows), one row each."""
        rows = torch.as_tensor(rows, device=self.device, dtype=torch.int64)
        r = self.n_rows_per_obs
        obs = torch.div(rows, r, rounding_mode="floor")
        if self.transform is None:
            eye = torch.eye(self.n_outputs, dtype=self.dtype, device=self.device)
            T = eye[rows % r][:, None, :]
        else:
            T = self.transform.reshape(self.n_obs * r, self.n_outputs)[rows][:, None, :]
        return self._sub(obs, T)

    def take_observations(self, obs):
        """Restrict to whole observations (all their rows)."""
        obs = torch.as_tensor(obs, device=self.device, dtype=torch.int64)
        return self._sub(obs, None if self.transform is None else self.transform[obs])

    # -- the functional network ---------------------------------------------

    def _f(self, Xb):
        """``theta -> output_map(module(Xb))`` as a function of the parameter tensors."""
        c = self._c
        names, fixed, module, output_map = c["names"], c["fixed"], c["module"], c["output_map"]

        def f(*params):
            state = dict(fixed)
            state.update(zip(names, params))
            out = _output_rows(functional_call(module, state, (Xb,)))
            return out if output_map is None else output_map(out)

        return f

    def _split(self, V):
        """(d, k) columns as one contiguous (k, *shape) tensor per parameter.

        Contiguous, so that every tangent has its parameter's strides: forward
        mode copies a tangent laid out otherwise into fresh zeros on every
        ``jvp`` call, i.e. once per block of observations (37 copies of all
        ``d * k`` numbers for a 256-row CNN product in 7-row blocks).
        """
        k = V.shape[1]
        Vt = V.T.contiguous()
        return tuple(
            Vt[:, a:b].reshape((k, *shape)) for (a, b), shape in zip(self._c["slices"], self._c["shapes"])
        )

    def _blocks(self, k):
        """``(start, stop)`` observation blocks for products vectorised over ``k`` columns."""
        size = self._c["batch_size"]
        if size is None:
            per_obs = self._c["activation_bytes"] * _ACTIVATION_COPIES * (k + 1)
            size = max(1, min(_BLOCK_BYTES // max(1, per_obs),
                              _TENSOR_BYTES // max(1, self._c["largest_bytes"] * (k + 1))))
            # Blocks of equal size under the bound: a small last block runs
            # the per-block passes at a fraction of their throughput.
            size = -(-self.n_obs // max(1, -(-self.n_obs // size)))
        for start in range(0, self.n_obs, size):
            yield start, min(self.n_obs, start + size)

    def _columns_at_once(self, rows):
        """Columns one vectorised pass over ``rows`` observations may take under both bounds (at least 1)."""
        c = self._c
        return max(1, min(_BLOCK_BYTES // max(1, c["activation_bytes"] * _ACTIVATION_COPIES * rows),
                          _TENSOR_BYTES // max(1, c["largest_bytes"] * rows)) - 1)

    # -- products -------------------------------------------------------------

    def _jvp(self, V):
        """``J V`` per observation, shape (n, m, k)."""
        if V.shape[1] > _DENSE_ROWS_FACTOR * self.n_outputs:
            # Many columns (a covariance factor in predictions): m reverse
            # passes per observation and one matrix product beat k forward ones.
            out = V.new_empty((self.n_obs, self.n_outputs, V.shape[1]))
            for start, stop, r0, r1, g in self._row_gradients(whiten=False):
                out[start:stop, r0:r1] = g @ V
            return out
        if self.n_obs == 0:
            return V.new_zeros((0, self.n_outputs, V.shape[1]))
        blocks = list(self._blocks(V.shape[1]))

        def outputs(*params):
            # All blocks inside one jvp: the tangents are attached to the
            # parameters once (forward mode under vmap copies every tangent
            # into fresh zeros per jvp call: d * k numbers per block), and a
            # block's activations are freed before the next block runs.
            return torch.cat([self._f(self.X[start:stop])(*params) for start, stop in blocks])

        primals = self._c["primals"]
        push = vmap(lambda *t: jvp(outputs, primals, t)[1])
        return push(*self._split(V)).permute(1, 2, 0)

    def _vjp(self, G):
        """``sum_i J_i^T G_i`` for ``G`` of shape (n, m, k): shape (d, k)."""
        primals = self._c["primals"]
        k = G.shape[2]
        total = G.new_zeros((k, self.n_params))
        Gt = G.permute(2, 0, 1)
        # One forward pass per block of observations serves all k columns,
        # pulled back `chunk` at a time: vectorised while the block's
        # tensors stay small, else one plain reverse pass per column (the
        # blocks are sized for one column at a time).
        for start, stop in self._blocks(1):
            chunk = self._columns_at_once(stop - start)
            _, pull = vjp(self._f(self.X[start:stop]), *primals)
            for c0 in range(0, k, chunk):
                c1 = min(k, c0 + chunk)
                cot = Gt[c0:c1, start:stop]
                if c1 - c0 == 1:
                    grads = [g[None] for g in pull(cot[0])]
                else:
                    grads = vmap(pull)(cot.contiguous())
                for (a, b), g in zip(self._c["slices"], grads):
                    total[c0:c1, a:b] += g.reshape(c1 - c0, -1)
        return total.T

    def matmat(self, V):
        """Return ``Phi @ V`` (forward mode), shape ``(n * r, k)``."""
        P = self._jvp(V)
        if self.transform is not None:
            P = torch.matmul(self.transform, P)
        return P.reshape(self.shape[0], V.shape[1])

    def rmatmat(self, U):
        """Return ``Phi.T @ U`` (reverse mode), shape ``(n_params, k)``."""
        U = U.reshape(self.n_obs, self.n_rows_per_obs, U.shape[1])
        if self.transform is not None:
            U = torch.matmul(self.transform.transpose(1, 2), U)
        return self._vjp(U)

    def jvp_outputs(self, V):
        """Return ``J V`` without the transform, shape (n, m, k)."""
        return self._jvp(V)

    def vjp_outputs(self, G):
        """Return ``sum_i J_i^T G_i`` without the transform, for ``G`` of shape (n, m, k)."""
        return self._vjp(G)

    # -- norms, from per-row gradients in bounded blocks --------------------

    def _row_gradients(self, whiten=True):
        """Yield ``(start, stop, r0, r1, g)``: the gradients of rows ``r0:r1`` of observations ``start:stop``.

        ``g`` has shape (stop - start, r1 - r0, d); the rows are those of
        ``Phi`` (``T_i J_i``), or of ``J`` without ``whiten``.
        """
        c = self._c
        names, fixed, module, output_map, primals = c["names"], c["fixed"], c["module"], c["output_map"], c["primals"]
        transform = self.transform if whiten else None
        m, d = self.n_outputs, self.n_params
        r = m if transform is None else transform.shape[1]
        itemsize = self.X.element_size()
        # Rows of one observation taken together, and observations per block,
        # so that a block's (rows x d) gradients fit the bound.
        rows_at_once = max(1, min(r, _BLOCK_BYTES // max(1, d * itemsize)))
        obs_at_once = max(1, _BLOCK_BYTES // max(1, rows_at_once * (d * itemsize + c["activation_bytes"])))
        if rows_at_once < r:
            obs_at_once = 1
        eye = torch.eye(m, dtype=self.dtype, device=self.device)

        def one(x, T):
            def f(*params):
                state = dict(fixed)
                state.update(zip(names, params))
                out = _output_rows(functional_call(module, state, (x[None],)))[0]
                return out if output_map is None else output_map(out)

            _, pull = vjp(f, *primals)
            grads = vmap(pull)(T)
            return torch.cat([g.reshape(T.shape[0], -1) for g in grads], dim=1)

        per_obs = vmap(one)
        for start in range(0, self.n_obs, obs_at_once):
            stop = min(self.n_obs, start + obs_at_once)
            T = eye.expand(stop - start, m, m) if transform is None else transform[start:stop]
            for r0 in range(0, r, rows_at_once):
                r1 = min(r, r0 + rows_at_once)
                g = per_obs(self.X[start:stop], T[:, r0:r1, :])  # (b, r1 - r0, d)
                yield start, stop, r0, r1, g

    def row_sq_norms(self):
        """Squared norms of the rows of ``Phi``, exactly, shape ``(n * r,)``."""
        out = torch.zeros(self.n_obs, self.n_rows_per_obs, dtype=self.dtype, device=self.device)
        for start, stop, r0, r1, g in self._row_gradients():
            out[start:stop, r0:r1] = (g * g).sum(dim=2)
        return out.reshape(-1)

    def col_sq_norms(self, weights=None):
        """``sum_rows w_row Phi_row,j^2`` for every parameter ``j``, exactly, shape ``(n_params,)``."""
        if weights is None and getattr(self, "_col_sq", None) is not None:
            return self._col_sq
        W = None if weights is None else weights.reshape(self.n_obs, self.n_rows_per_obs)
        acc = torch.zeros(self.n_params, dtype=self.dtype, device=self.device)
        for start, stop, r0, r1, g in self._row_gradients():
            sq = g * g
            if W is not None:
                sq = sq * W[start:stop, r0:r1, None]
            acc += sq.sum(dim=(0, 1))
        if weights is None:
            # Deterministic and a full pass over the per-row gradients: kept
            # for the next caller (the evidence loop's curvature scale, Jacobi).
            self._col_sq = acc
        return acc

    def gram(self, sqrt_weights=None):
        """Dense ``Phi^T W Phi`` from per-row gradients in bounded blocks (small ``n_params`` only).

        ``n * r`` reverse passes of one row each cost far less than ``d``
        forward passes over all ``n`` observations whenever ``r < d``.
        """
        G = torch.zeros(self.n_params, self.n_params, dtype=self.dtype, device=self.device)
        W = None if sqrt_weights is None else (sqrt_weights**2).reshape(self.n_obs, self.n_rows_per_obs)
        for start, stop, r0, r1, g in self._row_gradients():
            g = g.reshape(-1, self.n_params)
            if W is not None:
                G += g.T @ (g * W[start:stop, r0:r1].reshape(-1, 1))
            else:
                G += g.T @ g
        if sqrt_weights is None:
            self._col_sq = torch.diagonal(G).clone()
        return G

    def dense(self):
        """``Phi`` as a dense ``(n * r, n_params)`` array (small problems only)."""
        out = torch.zeros(self.n_obs, self.n_rows_per_obs, self.n_params, dtype=self.dtype, device=self.device)
        for start, stop, r0, r1, g in self._row_gradients():
            out[start:stop, r0:r1] = g
        return out.reshape(self.shape)


def _build_cache(module, X, names, output_map, groups, dtype, batch_size):
    names = list(names)
    if not names:
        raise ValueError("The Jacobian needs at least one parameter; names is empty.")
    params = dict(module.named_parameters())
    missing = [name for name in names if name not in params]
    if missing:
        raise ValueError(f"The module has no parameters named {missing}; it has {list(params)}.")
    if dtype is None:
        dtype = X.dtype if X.is_floating_point() else torch.float64
    X = X.to(dtype=dtype) if X.is_floating_point() or X.dtype != dtype else X

    def cast(t):
        t = t.detach()
        return t.to(dtype) if t.is_floating_point() else t

    chosen = set(names)
    fixed = {name: cast(p) for name, p in params.items() if name not in chosen}
    fixed.update({name: cast(b) for name, b in module.named_buffers()})
    primals = tuple(cast(params[name]) for name in names)
    shapes = [tuple(p.shape) for p in primals]
    sizes = [math.prod(s) for s in shapes]
    slices, start = [], 0
    for size in sizes:
        slices.append((start, start + size))
        start += size
    cache = {
        "module": module,
        "names": names,
        "fixed": fixed,
        "primals": primals,
        "shapes": shapes,
        "slices": slices,
        "groups": list(groups) if groups is not None else list(slices),
        "n_params": start,
        "output_map": output_map,
        "batch_size": batch_size,
        "X": X,
    }
    sizes = _activation_bytes(module, fixed, names, primals, X[:1], dtype) if X.shape[0] else (1, 1)
    cache["activation_bytes"], cache["largest_bytes"] = sizes
    probe = TorchJacobian(None, None, None, _cache={**cache, "outputs": X.new_zeros((0, 1))})
    with torch.no_grad():
        step = batch_size or max(1, _BLOCK_BYTES // max(1, cache["activation_bytes"]))
        out = [probe._f(X[a : a + step])(*primals) for a in range(0, X.shape[0], step)]
    cache["outputs"] = torch.cat(out) if out else X.new_zeros((0, 1))
    return cache


def _activation_bytes(module, fixed, names, primals, x, dtype):
    """Bytes of every submodule's output for one observation (what a product keeps per column), and of the largest."""
    total = [x.numel(), 1]

    def hook(_mod, _inp, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel()
            total[1] = max(total[1], out.numel())

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.no_grad():
            state = dict(fixed)
            state.update(zip(names, primals))
            functional_call(module, state, (x,))
    finally:
        for h in handles:
            h.remove()
    itemsize = torch.finfo(dtype).bits // 8
    return total[0] * itemsize, total[1] * itemsize
