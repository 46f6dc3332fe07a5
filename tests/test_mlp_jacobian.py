"""MLPJacobian against an explicitly built Jacobian.

The reference Jacobian is built column by column by central finite
differences of a forward pass written here in plain NumPy (float64), for every
hidden activation and for binary, multi-class and multi-output networks. The
operator's products, row and column norms, row selection and whitening
transform are all checked against it (or against the operator's own JVPs of
unit vectors) to rtol 1e-6.
"""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor

from bayeslin.operators.mlp_jacobian import (
    MLPJacobian,
    flatten_params,
    param_groups,
    unflatten_params,
)

ACTIVATIONS = ["identity", "logistic", "tanh", "relu"]
KINDS = ["binary", "multiclass", "multioutput"]
RTOL = 1e-6


def _act(name, z):
    return {
        "identity": lambda z: z,
        "logistic": lambda z: 1 / (1 + np.exp(-z)),
        "tanh": np.tanh,
        "relu": lambda z: np.maximum(z, 0),
    }[name](z)


def _network_output(mlp, theta, X):
    """Last pre-activation of the network with flat parameters ``theta`` (independent forward pass)."""
    shapes = [c.shape for c in mlp.coefs_]
    a, pos = X, 0
    for layer, (n_in, n_out) in enumerate(shapes):
        W = theta[pos : pos + n_in * n_out].reshape(n_in, n_out)
        pos += n_in * n_out
        b = theta[pos : pos + n_out]
        pos += n_out
        z = a @ W + b
        a = _act(mlp.activation, z) if layer < len(shapes) - 1 else z
    return a


def make_network(activation, kind, seed=0, hidden=(4, 3), n=9):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if kind == "multioutput":
            mlp = MLPRegressor(hidden_layer_sizes=hidden, activation=activation, max_iter=30, random_state=seed)
            mlp.fit(X, rng.randn(n, 2))
        else:
            y = np.arange(n) % (2 if kind == "binary" else 3)
            mlp = MLPClassifier(hidden_layer_sizes=hidden, activation=activation, max_iter=30, random_state=seed)
            mlp.fit(X, y)
    return mlp, X


def fd_jacobian(mlp, X, h=1e-6):
    """(n * m, d) Jacobian by central differences, rows stacked (observation, output)."""
    theta = flatten_params(mlp)
    cols = []
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = h
        cols.append(((_network_output(mlp, theta + e, X) - _network_output(mlp, theta - e, X)) / (2 * h)).ravel())
    return np.stack(cols, axis=1)


def _close(actual, desired):
    assert_allclose(actual, desired, rtol=RTOL, atol=RTOL * np.max(np.abs(desired)))


@pytest.fixture(params=[(a, k) for a in ACTIVATIONS for k in KINDS], ids=lambda p: f"{p[0]}-{p[1]}")
def network(request):
    activation, kind = request.param
    mlp, X = make_network(activation, kind)
    return mlp, X, fd_jacobian(mlp, X)


def test_shape_and_outputs(network):
    mlp, X, J_fd = network
    jac = MLPJacobian(mlp, X)
    m = 1 if isinstance(mlp, MLPClassifier) and len(mlp.classes_) == 2 else mlp.n_outputs_
    assert jac.shape == (X.shape[0] * m, flatten_params(mlp).size) == J_fd.shape
    _close(jac.outputs, _network_output(mlp, flatten_params(mlp), X))


def test_jvp_matches_finite_differences(network):
    mlp, X, J_fd = network
    jac = MLPJacobian(mlp, X)
    d = jac.shape[1]
    # JVP of every unit vector at once, i.e. the explicit Jacobian.
    _close(jac.matmat(np.eye(d)), J_fd)
    V = np.random.RandomState(1).randn(d, 3)
    _close(jac.matmat(V), J_fd @ V)


def test_vjp_matches_finite_differences(network):
    mlp, X, J_fd = network
    jac = MLPJacobian(mlp, X)
    _close(jac.rmatmat(np.eye(jac.shape[0])).T, J_fd)
    U = np.random.RandomState(2).randn(jac.shape[0], 4)
    _close(jac.rmatmat(U), J_fd.T @ U)


def test_jvp_and_vjp_are_adjoint(network):
    mlp, X, _ = network
    jac = MLPJacobian(mlp, X)
    rng = np.random.RandomState(3)
    V, U = rng.randn(jac.shape[1], 2), rng.randn(jac.shape[0], 2)
    _close(np.sum(U * jac.matmat(V)), np.sum(V * jac.rmatmat(U)))


def test_norms_rows_and_transform(network):
    mlp, X, J_fd = network
    rng = np.random.RandomState(4)
    jac = MLPJacobian(mlp, X)
    n, m = jac.n_obs, jac.n_outputs
    w = rng.uniform(0.5, 2, size=jac.shape[0])
    _close(jac.row_sq_norms(), np.sum(J_fd**2, axis=1))
    _close(jac.col_sq_norms(), np.sum(J_fd**2, axis=0))
    _close(jac.col_sq_norms(w), np.sum(w[:, None] * J_fd**2, axis=0))
    rows = rng.randint(0, jac.shape[0], size=7)
    _close(jac.take_rows(rows).dense(), J_fd[rows])
    _close(jac.gram(), J_fd.T @ J_fd)

    # Rows T_i J_i with a per-observation (r x m) transform, r != m.
    T = rng.randn(n, 2, m)
    F_ref = np.einsum("nrm,nmd->nrd", T, J_fd.reshape(n, m, -1)).reshape(n * 2, -1)
    F = jac.with_transform(T)
    assert F.shape == F_ref.shape
    _close(F.dense(), F_ref)
    _close(F.rmatmat(np.eye(F.shape[0])).T, F_ref)
    _close(F.row_sq_norms(), np.sum(F_ref**2, axis=1))
    _close(F.col_sq_norms(), np.sum(F_ref**2, axis=0))
    rows = rng.randint(0, F.shape[0], size=5)
    _close(F.take_rows(rows).dense(), F_ref[rows])
    obs = np.array([2, 0, 2])
    _close(F.take_observations(obs).dense(), F_ref.reshape(n, 2, -1)[obs].reshape(6, -1))


def test_flatten_unflatten_roundtrip():
    mlp, _ = make_network("tanh", "multiclass")
    theta = flatten_params(mlp)
    coefs, intercepts = unflatten_params(mlp, theta)
    for c, c2, b, b2 in zip(mlp.coefs_, coefs, mlp.intercepts_, intercepts):
        assert_allclose(c, c2)
        assert_allclose(b, b2)
    groups = param_groups(mlp)
    assert groups[0][0] == 0 and groups[-1][1] == theta.size
    assert all(a[1] == b[0] for a, b in zip(groups[:-1], groups[1:]))
    with pytest.raises(ValueError, match="parameters"):
        unflatten_params(mlp, theta[:-1])


def test_float32_products():
    mlp, X = make_network("relu", "multiclass")
    J64 = MLPJacobian(mlp, X)
    J32 = MLPJacobian(mlp, X.astype(np.float32))
    V = np.random.RandomState(0).randn(J64.shape[1], 2)
    P = J32.matmat(V.astype(np.float32))
    assert P.dtype == np.float32
    assert_allclose(P, J64.matmat(V), rtol=1e-4, atol=1e-4 * np.abs(P).max())


def test_unsupported_activation():
    mlp, X = make_network("tanh", "binary")
    mlp.activation = "softplus"
    with pytest.raises(ValueError, match="Unsupported activation"):
        MLPJacobian(mlp, X)


def test_array_api_strict_namespace():
    """Written once over the array namespace: the same numbers under array_api_strict (as on CuPy)."""
    xs = pytest.importorskip("array_api_strict")
    from bayeslin.likelihoods import SoftmaxLikelihood

    from bayeslin._backend import to_numpy

    mlp, X = make_network("tanh", "multiclass")
    rng = np.random.RandomState(0)
    dev = xs.Device("device1")  # refuses to mix devices, as a second GPU would
    Jn, Js = MLPJacobian(mlp, X), MLPJacobian(mlp, xs.asarray(X, device=dev))
    Tn = np.asarray(SoftmaxLikelihood(Jn.outputs).whitening_transform())
    Fs = Js.with_transform(SoftmaxLikelihood(Js.outputs).whitening_transform())
    Fn = Jn.with_transform(Tn)
    V, U = rng.randn(Jn.shape[1], 2), rng.randn(Jn.shape[0], 2)
    _close(to_numpy(Fs.matmat(xs.asarray(V, device=dev))), Fn.matmat(V))
    _close(to_numpy(Fs.rmatmat(xs.asarray(U, device=dev))), Fn.rmatmat(U))
    _close(to_numpy(Fs.row_sq_norms()), Fn.row_sq_norms())
    _close(to_numpy(Fs.col_sq_norms()), Fn.col_sq_norms())
    rows = np.array([1, 4, 4])
    _close(to_numpy(Fs.take_rows(xs.asarray(rows, device=dev)).dense()), Fn.take_rows(rows).dense())
