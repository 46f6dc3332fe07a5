"""The Jacobian of a scikit-learn MLP with respect to all its weights and biases, matrix-free.

For a fitted :class:`~sklearn.neural_network.MLPClassifier` or
:class:`~sklearn.neural_network.MLPRegressor` with layers
``z_l = a_{l-1} W_l + b_l``, ``a_l = act(z_l)`` (``a_0 = x``) the network
output is the last pre-activation ``f = z_L``: the logits of a classifier (the
output activation, softmax or logistic, belongs to the likelihood) and the
prediction of a regressor (identity output).

Parameter order
---------------
The parameter vector is scikit-learn's own layout, layer by layer::

    coefs_[0].ravel(), intercepts_[0], coefs_[1].ravel(), intercepts_[1], ...

(``coefs_[l]`` has shape ``(n_in, n_out)`` and is raveled row-major).
:func:`flatten_params` and :func:`unflatten_params` convert.

Rows
----
``Phi`` has ``n * r`` rows stacked row-major over (observation, output): row
``i * r + o`` is output ``o`` of observation ``i``. Without a transform
``r = m`` (the network's outputs) and row ``(i, o)`` is ``d f_o(x_i) / dw``.
With a per-observation transform ``T_i`` of shape ``(r, m)`` the rows of
observation ``i`` are ``T_i J_i``: this is how the likelihood's square-root
factor whitens the Jacobian (``T_i = L_i^T`` with ``L_i L_i^T = B_i`` gives
``Phi^T Phi = J^T B J``).

Products are exact forward-mode (``Phi @ V``) and reverse-mode
(``Phi.T @ U``) passes over the layers, batched over the columns of ``V`` or
``U``; ``Phi`` itself is never formed. Everything goes through the array
namespace of ``X``, so the operator runs on NumPy and CuPy alike.
"""

import numpy as np

from .._backend import asarray_on, create, device, get_namespace
from .features import _ArrayBacked

__all__ = ["MLPJacobian", "flatten_params", "mlp_forward", "param_groups", "unflatten_params"]

_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")

# Observations handled at once when a product needs an (n, width, columns)
# temporary per layer (row and column norms): bounds memory on big data.
_CHUNK_ELEMENTS = 2**25


def _layer_shapes(mlp):
    return [tuple(c.shape) for c in mlp.coefs_]


def param_groups(mlp):
    """Return the ``(start, stop)`` slice of every layer (weights and bias) in the parameter vector.

    Parameters
    ----------
    mlp : fitted MLPClassifier or MLPRegressor

    Returns
    -------
    list of tuple of int
        One ``(start, stop)`` pair per layer.
    """
    out, start = [], 0
    for n_in, n_out in _layer_shapes(mlp):
        stop = start + n_in * n_out + n_out
        out.append((start, stop))
        start = stop
    return out


def flatten_params(mlp):
    """Return the network's parameters as one vector, in the documented order.

    Parameters
    ----------
    mlp : fitted MLPClassifier or MLPRegressor

    Returns
    -------
    ndarray of shape (n_params,)
        ``coefs_[0].ravel(), intercepts_[0], coefs_[1].ravel(), ...``
    """
    parts = []
    for W, b in zip(mlp.coefs_, mlp.intercepts_):
        parts.append(np.asarray(W, dtype=np.float64).ravel())
        parts.append(np.asarray(b, dtype=np.float64).ravel())
    return np.concatenate(parts)


def unflatten_params(mlp, theta):
    """Split a parameter vector into ``(coefs, intercepts)`` lists shaped like the network's.

    Parameters
    ----------
    mlp : fitted MLPClassifier or MLPRegressor
        Gives the layer shapes.
    theta : ndarray of shape (n_params,)

    Returns
    -------
    coefs : list of ndarray
    intercepts : list of ndarray
    """
    theta = np.asarray(theta)
    coefs, intercepts = [], []
    start = 0
    for n_in, n_out in _layer_shapes(mlp):
        coefs.append(theta[start : start + n_in * n_out].reshape(n_in, n_out))
        start += n_in * n_out
        intercepts.append(theta[start : start + n_out])
        start += n_out
    if start != theta.shape[0]:
        raise ValueError(f"theta has {theta.shape[0]} entries; the network has {start} parameters.")
    return coefs, intercepts


def _act(name, z, xp):
    if name == "identity":
        return z
    if name == "logistic":
        return 1.0 / (1.0 + xp.exp(-z))
    if name == "tanh":
        return xp.tanh(z)
    if name == "relu":
        return xp.maximum(z, 0.0)
    raise ValueError(f"Unsupported activation {name!r}; the Jacobian supports {_ACTIVATIONS}.")


def _act_grad(name, a, xp):
    """Derivative of the activation, from its OUTPUT ``a`` (so only outputs are cached)."""
    if name == "identity":
        return xp.ones_like(a)
    if name == "logistic":
        return a * (1.0 - a)
    if name == "tanh":
        return 1.0 - a * a
    if name == "relu":
        return xp.astype(a > 0, a.dtype)
    raise ValueError(f"Unsupported activation {name!r}; the Jacobian supports {_ACTIVATIONS}.")


def mlp_forward(weights, biases, activation, X, xp):
    """Forward pass; return the hidden activations ``[a_0 = X, a_1, ..., a_{L-1}]`` and the output ``z_L``."""
    acts = [X]
    a = X
    L = len(weights)
    for layer in range(L):
        z = a @ weights[layer] + biases[layer][None, :]
        if layer < L - 1:
            a = _act(activation, z, xp)
            acts.append(a)
        else:
            return acts, z
    raise ValueError("The network has no layers.")  # pragma: no cover


class MLPJacobian(_ArrayBacked):
    """Jacobian ``Phi`` of a fitted scikit-learn MLP's outputs w.r.t. all its parameters.

    Parameters
    ----------
    mlp : fitted MLPClassifier or MLPRegressor
        The network, at the weights where it is linearised. Its hidden
        activation must be one of 'identity', 'logistic', 'tanh', 'relu'.
    X : array of shape (n, n_features)
        Inputs (NumPy or CuPy; the products live in the same namespace and on
        the same device).
    transform : array of shape (n, r, m), optional
        Per-observation matrices ``T_i``; the rows of observation ``i`` are
        ``T_i J_i``. ``None`` means the identity (``r = m``).
    dtype : dtype, optional
        Floating dtype of the products (default: that of ``X`` when floating,
        else float64).

    Attributes
    ----------
    shape : tuple of int
        ``(n * r, n_params)``.
    n_obs : int
        Number of observations ``n``.
    n_outputs : int
        Outputs ``m`` of the network.
    n_rows_per_obs : int
        ``r``.
    outputs : array of shape (n, m)
        The network's outputs ``f(x_i)`` (logits for a classifier).
    X : array
        The inputs (also tells where draws must be placed).

    Notes
    -----
    :meth:`take_rows` takes indices of ROWS of ``Phi`` (pairs
    (observation, output) in the row-major order above), which is what the
    stochastic solvers draw; the result is an operator with one row per
    index. :meth:`row_sq_norms` and :meth:`col_sq_norms` are exact: a row of
    the Jacobian factorises per layer as ``a_{l-1} (x) g_l`` (input
    activation times back-propagated output sensitivity), so both cost one
    backward pass of ``r`` vectors per observation and no Jacobian.
    """

    def __init__(self, mlp, X, transform=None, dtype=None, _cache=None):
        if _cache is None:
            activation = mlp.activation
            if activation not in _ACTIVATIONS:
                raise ValueError(f"Unsupported activation {activation!r}; the Jacobian supports {_ACTIVATIONS}.")
            xp = get_namespace(X)
            if dtype is None:
                dtype = X.dtype if xp.isdtype(X.dtype, "real floating") else xp.float64
            X = xp.asarray(X, dtype=dtype)
            like = X
            weights = [_to_like(xp, w, dtype, like) for w in mlp.coefs_]
            biases = [_to_like(xp, b, dtype, like) for b in mlp.intercepts_]
            acts, out = mlp_forward(weights, biases, activation, X, xp)
            _cache = {
                "activation": activation,
                "weights": weights,
                "biases": biases,
                "acts": acts,
                "outputs": out,
                "groups": param_groups(mlp),
                "mlp": mlp,
            }
        self._c = _cache
        self.X = _cache["acts"][0]
        self.dtype = self.X.dtype
        self.outputs = _cache["outputs"]
        self.n_obs, self.n_outputs = self.outputs.shape
        self.transform = transform
        self.n_rows_per_obs = self.n_outputs if transform is None else transform.shape[1]
        self.n_params = _cache["groups"][-1][1]
        self.shape = (self.n_obs * self.n_rows_per_obs, self.n_params)

    @property
    def groups(self):
        """``(start, stop)`` of every layer's parameters."""
        return self._c["groups"]

    def with_transform(self, transform):
        """Return the operator with rows ``T_i J_i``, sharing the cached forward pass."""
        return MLPJacobian(None, None, transform=transform, _cache=self._c)

    # -- products --------------------------------------------------------

    def _jvp(self, V, acts, grads):
        """``J V`` for the observations of ``acts``: shape (n, m, k)."""
        xp = self.xp
        weights = self._c["weights"]
        k = V.shape[1]
        dz = None
        for layer, (start, stop) in enumerate(self.groups):
            W = weights[layer]
            n_in, n_out = W.shape
            dW = V[start : start + n_in * n_out, :]
            db = V[start + n_in * n_out : stop, :]
            a = acts[layer]
            # a_{l-1} dW_l: (n, n_in) @ (n_in, n_out * k) keeps the column index last.
            term = xp.reshape(a @ xp.reshape(dW, (n_in, n_out * k)), (a.shape[0], n_out, k)) + db[None, :, :]
            if dz is not None:
                da = dz * grads[layer - 1][:, :, None]
                term = term + xp.matmul(W.T, da)
            dz = term
        return dz

    def _vjp(self, G, acts, grads):
        """``J^T G`` summed over observations for ``G`` of shape (n, m, k): shape (d, k)."""
        xp = self.xp
        weights = self._c["weights"]
        k = G.shape[2]
        blocks = [None] * len(self.groups)
        for layer in range(len(self.groups) - 1, -1, -1):
            W = weights[layer]
            n_in, n_out = W.shape
            a = acts[layer]
            dW = a.T @ xp.reshape(G, (a.shape[0], n_out * k))
            blocks[layer] = (xp.reshape(dW, (n_in * n_out, k)), xp.sum(G, axis=0))
            if layer > 0:
                G = xp.matmul(W, G) * grads[layer - 1][:, :, None]
        return xp.concat([part for pair in blocks for part in pair], axis=0)

    def _hidden_grads(self, acts):
        xp = self.xp
        return [_act_grad(self._c["activation"], a, xp) for a in acts[1:]]

    def _apply_transform(self, P, transform):
        """``T_i P_i`` for ``P`` of shape (n, m, k)."""
        return P if transform is None else self.xp.matmul(transform, P)

    def _apply_transform_t(self, U, transform):
        """``T_i^T U_i`` for ``U`` of shape (n, r, k)."""
        return U if transform is None else self.xp.matmul(self.xp.permute_dims(transform, (0, 2, 1)), U)

    def matmat(self, V):
        """Return ``Phi @ V`` (forward mode), shape ``(n * r, k)``."""
        xp = self.xp
        acts = self._c["acts"]
        P = self._apply_transform(self._jvp(V, acts, self._hidden_grads(acts)), self.transform)
        return xp.reshape(P, (self.shape[0], V.shape[1]))

    def rmatmat(self, U):
        """Return ``Phi.T @ U`` (reverse mode), shape ``(n_params, k)``."""
        xp = self.xp
        acts = self._c["acts"]
        U = xp.reshape(U, (self.n_obs, self.n_rows_per_obs, U.shape[1]))
        return self._vjp(self._apply_transform_t(U, self.transform), acts, self._hidden_grads(acts))

    def jvp_outputs(self, V):
        """Return ``J V`` without the transform, shape (n, m, k)."""
        acts = self._c["acts"]
        return self._jvp(V, acts, self._hidden_grads(acts))

    def vjp_outputs(self, G):
        """Return ``sum_i J_i^T G_i`` without the transform, for ``G`` of shape (n, m, k)."""
        acts = self._c["acts"]
        return self._vjp(G, acts, self._hidden_grads(acts))

    def take_rows(self, rows):
        """Restrict to rows of ``Phi`` (indices into the ``n * r`` stacked rows).

        Returns an operator over the observations ``rows // r`` (repeated
        when several of their rows are taken) with one row each, the
        selected row of its transform (a unit vector without a transform).
        """
        xp = self.xp
        r = self.n_rows_per_obs
        rows = asarray_on(rows, xp, self.device)
        obs = rows // r
        out = rows % r
        c = self._c
        acts = [xp.take(a, obs, axis=0) for a in c["acts"]]
        if self.transform is None:
            eye = create(xp, "eye", self.n_outputs, dtype=self.dtype, device_=self.device)
            T = xp.take(eye, out, axis=0)[:, None, :]
        else:
            flat = xp.reshape(self.transform, (self.n_obs * r, self.n_outputs))
            T = xp.take(flat, rows, axis=0)[:, None, :]
        sub = dict(c)
        sub["acts"] = acts
        sub["outputs"] = xp.take(c["outputs"], obs, axis=0)
        return MLPJacobian(None, None, transform=T, _cache=sub)

    def take_observations(self, obs):
        """Restrict to whole observations (all their rows), e.g. for a held-out batch."""
        xp = self.xp
        obs = asarray_on(obs, xp, self.device)
        c = self._c
        sub = dict(c)
        sub["acts"] = [xp.take(a, obs, axis=0) for a in c["acts"]]
        sub["outputs"] = xp.take(c["outputs"], obs, axis=0)
        T = None if self.transform is None else xp.take(self.transform, obs, axis=0)
        return MLPJacobian(None, None, transform=T, _cache=sub)

    # -- norms (exact, chunked over observations) -------------------------

    def _sensitivities(self, start, stop):
        """Yield ``(layer, a_{l-1}, g_l)`` for observations ``start:stop``.

        ``g_l`` (shape (b, n_out, r)) is the back-propagated sensitivity of
        the ``r`` rows of each observation to ``z_l``; a row's gradient
        w.r.t. ``W_l`` is ``a_{l-1} g_l^T`` and w.r.t. ``b_l`` is ``g_l``.
        """
        xp = self.xp
        acts = [a[start:stop, ...] for a in self._c["acts"]]
        grads = self._hidden_grads(acts)
        b = stop - start
        if self.transform is None:
            eye = create(xp, "eye", self.n_outputs, dtype=self.dtype, device_=self.device)
            G = xp.broadcast_to(eye[None, :, :], (b, self.n_outputs, self.n_outputs))
        else:
            G = xp.permute_dims(self.transform[start:stop, ...], (0, 2, 1))
        weights = self._c["weights"]
        for layer in range(len(weights) - 1, -1, -1):
            yield layer, acts[layer], G
            if layer > 0:
                G = xp.matmul(weights[layer], G) * grads[layer - 1][:, :, None]

    def _chunks(self):
        widths = sum(W.shape[0] + W.shape[1] for W in self._c["weights"])
        step = max(1, _CHUNK_ELEMENTS // max(1, widths * self.n_rows_per_obs))
        for start in range(0, self.n_obs, step):
            yield start, min(self.n_obs, start + step)

    def row_sq_norms(self):
        """Squared norms of the rows of ``Phi``, exactly, shape ``(n * r,)``."""
        xp = self.xp
        out = []
        for start, stop in self._chunks():
            total = 0.0
            for _, a, G in self._sensitivities(start, stop):
                # ||a g^T||_F^2 + ||g||^2 = (||a||^2 + 1) ||g||^2 for every row.
                total = total + (xp.sum(a * a, axis=1) + 1.0)[:, None] * xp.sum(G * G, axis=1)
            out.append(xp.reshape(total, (-1,)))
        return xp.concat(out)

    def col_sq_norms(self, weights=None):
        """``sum_rows w_row Phi_row,j^2`` for every parameter ``j``, exactly, shape ``(n_params,)``."""
        xp = self.xp
        r = self.n_rows_per_obs
        W_rows = None if weights is None else xp.reshape(weights, (self.n_obs, r))
        acc = [None] * len(self.groups)
        for start, stop in self._chunks():
            for layer, a, G in self._sensitivities(start, stop):
                G2 = G * G if W_rows is None else G * G * W_rows[start:stop, None, :]
                s = xp.sum(G2, axis=2)  # (b, n_out)
                part = xp.concat([xp.reshape((a * a).T @ s, (-1,)), xp.sum(s, axis=0)])
                acc[layer] = part if acc[layer] is None else acc[layer] + part
        return xp.concat(acc)

    def gram(self, sqrt_weights=None):
        """Dense ``Phi^T W Phi`` by blocks of unit vectors (small ``n_params`` only)."""
        xp = self.xp
        d = self.n_params
        eye = create(xp, "eye", d, dtype=self.dtype, device_=self.device)
        cols = []
        for start in range(0, d, 256):
            P = self.matmat(eye[:, start : min(d, start + 256)])
            if sqrt_weights is not None:
                P = P * (sqrt_weights**2)[:, None]
            cols.append(self.rmatmat(P))
        return xp.concat(cols, axis=1)

    def dense(self):
        """``Phi`` as a dense ``(n * r, n_params)`` array (small problems only)."""
        return self.matmat(create(self.xp, "eye", self.n_params, dtype=self.dtype, device_=self.device))


def _to_like(xp, a, dtype, like):
    """A host array (the network's weights) in ``xp`` on the device of ``like``."""
    return asarray_on(np.asarray(a), xp, device(like), dtype)
