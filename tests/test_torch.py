"""Linearised Laplace for PyTorch networks, against dense references.

The Jacobian operator is checked against ``torch.func.jacrev`` (float64,
rtol 1e-6) for a small CNN with a residual connection and BatchNorm in eval
mode, an MLP and a multi-output regressor; the estimators' predictive
variances at a fixed prior against the dense GGN posterior
``(J^T B J + A)^-1`` (exact solver to 1e-6, cg within the Monte Carlo error
of its samples); the skorch path against the scikit-learn path on the same
weights.
"""

import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.exceptions import ConvergenceWarning

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
from torch import nn  # noqa: E402
from torch.func import functional_call, jacrev, vmap  # noqa: E402

from bayeslin import LinearisedLaplaceClassifier, LinearisedLaplaceRegressor  # noqa: E402
from bayeslin.networks import TorchJacobian, TorchModule  # noqa: E402

RTOL = 1e-6


class ResidualCNN(nn.Module):
    """8x8 images (flattened): conv, BatchNorm, a residual conv block, pooling, linear."""

    def __init__(self, n_out=3, channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.fc = nn.Linear(channels * 16, n_out)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv1(x.view(-1, 1, 8, 8))))
        h = h + torch.tanh(self.conv2(h))
        return self.fc(nn.functional.avg_pool2d(h, 2).flatten(1))


def _mlp(n_in, n_out, hidden=6):
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


def _cnn():
    torch.manual_seed(0)
    net = ResidualCNN().double()
    # Non-trivial running statistics, so that eval-mode BatchNorm is not the identity.
    net.bn.running_mean.uniform_(-0.5, 0.5)
    net.bn.running_var.uniform_(0.5, 2.0)
    return net.eval(), torch.randn(7, 64, dtype=torch.float64)


def _networks():
    torch.manual_seed(1)
    mlp = _mlp(4, 3).double().eval()
    torch.manual_seed(2)
    reg = _mlp(5, 2).double().eval()
    return {
        "cnn": _cnn(),
        "mlp": (mlp, torch.randn(9, 4, dtype=torch.float64)),
        "multioutput": (reg, torch.randn(8, 5, dtype=torch.float64)),
    }


def dense_jacobian(module, X, names):
    """(n * m, d) Jacobian from torch.func.jacrev, rows (observation, output) row-major."""
    params = dict(module.named_parameters())
    fixed = {k: v.detach() for k, v in {**params, **dict(module.named_buffers())}.items() if k not in names}

    def f(*ps):
        return functional_call(module, {**fixed, **dict(zip(names, ps))}, (X,))

    jac = jacrev(f, argnums=tuple(range(len(names))))(*[params[k].detach() for k in names])
    n, m = f(*[params[k].detach() for k in names]).shape
    return torch.cat([j.reshape(n, m, -1) for j in jac], dim=2).reshape(n * m, -1)


@pytest.mark.parametrize("kind", ["cnn", "mlp", "multioutput"])
@pytest.mark.parametrize("subset", [False, True])
def test_products_match_jacrev(kind, subset):
    module, X = _networks()[kind]
    names = [n for n, _ in module.named_parameters()]
    if subset:
        names = names[-2:]
    J = dense_jacobian(module, X, names)
    op = TorchJacobian(module, X, names, batch_size=3)
    n, m = X.shape[0], J.shape[0] // X.shape[0]
    assert op.shape == tuple(J.shape)
    gen = torch.Generator().manual_seed(0)
    V = torch.randn(J.shape[1], 5, dtype=torch.float64, generator=gen)
    U = torch.randn(J.shape[0], 5, dtype=torch.float64, generator=gen)
    assert_allclose(op.matmat(V), J @ V, rtol=RTOL, atol=1e-12)
    # Many columns: J V from dense per-row gradients instead of tangents.
    wide = torch.randn(J.shape[1], 8 * m + 1, dtype=torch.float64, generator=gen)
    assert_allclose(op.matmat(wide), J @ wide, rtol=RTOL, atol=1e-12)
    assert_allclose(op.rmatmat(U), J.T @ U, rtol=RTOL, atol=1e-12)
    assert_allclose(op.row_sq_norms(), (J * J).sum(1), rtol=RTOL)
    assert_allclose(op.col_sq_norms(), (J * J).sum(0), rtol=RTOL, atol=1e-14)
    assert_allclose(op.gram(), J.T @ J, rtol=RTOL, atol=1e-12)
    # A whitening transform with fewer rows than outputs, weights, row selection.
    T = torch.randn(n, 2, m, dtype=torch.float64, generator=gen)
    JT = torch.einsum("nrm,nmd->nrd", T, J.reshape(n, m, -1)).reshape(2 * n, -1)
    opT = op.with_transform(T)
    w = torch.rand(2 * n, dtype=torch.float64, generator=gen)
    assert_allclose(opT.dense(), JT, rtol=RTOL, atol=1e-12)
    assert_allclose(opT.rmatmat(U[: 2 * n]), JT.T @ U[: 2 * n], rtol=RTOL, atol=1e-12)
    assert_allclose(opT.col_sq_norms(w), (w[:, None] * JT * JT).sum(0), rtol=RTOL, atol=1e-14)
    rows = torch.tensor([0, 2 * n - 1, 3, 3])
    assert_allclose(opT.take_rows(rows).dense(), JT[rows], rtol=RTOL, atol=1e-12)
    obs = torch.tensor([1, n - 1])
    sub = op.take_observations(obs).jvp_outputs(V)
    assert_allclose(sub, (J @ V).reshape(n, m, 5)[obs], rtol=RTOL, atol=1e-12)


def test_row_norms_block_bound(monkeypatch):
    """Per-row gradients split over rows and observations when one observation exceeds the bound."""
    import bayeslin.operators.torch_jacobian as tj

    module, X = _networks()["cnn"]
    names = [n for n, _ in module.named_parameters()]
    J = dense_jacobian(module, X, names)
    # Room for one row of gradients at a time.
    monkeypatch.setattr(tj, "_BLOCK_BYTES", J.shape[1] * 8 + 1)
    op = TorchJacobian(module, X, names)
    assert_allclose(op.row_sq_norms(), (J * J).sum(1), rtol=RTOL)
    assert_allclose(op.col_sq_norms(), (J * J).sum(0), rtol=RTOL, atol=1e-14)


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
@pytest.mark.parametrize("columns_at_once", [1, 3])
def test_products_in_column_chunks(kind, columns_at_once, monkeypatch):
    """Small tensor bounds: reverse mode pulls back one column at a time, or chunks of 3 of the 5."""
    import bayeslin.operators.torch_jacobian as tj

    module, X = _networks()[kind]
    names = [n for n, _ in module.named_parameters()]
    J = dense_jacobian(module, X, names)
    # The operator's measure of one observation's largest activation: the
    # largest output of any submodule.
    sizes = []
    handles = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out[0].numel())) for m in module.modules()]
    with torch.no_grad():
        module(X[:1])
    for h in handles:
        h.remove()
    largest, n = max(sizes) * 8, X.shape[0]
    # One block of all n rows in reverse mode, `columns_at_once` columns per pass.
    monkeypatch.setattr(tj, "_TENSOR_BYTES", largest * n * (columns_at_once + 1))
    calls = []
    monkeypatch.setattr(tj, "vmap", lambda f, *a, **kw: calls.append(1) or vmap(f, *a, **kw))
    op = TorchJacobian(module, X, names)
    gen = torch.Generator().manual_seed(0)
    V = torch.randn(J.shape[1], 5, dtype=torch.float64, generator=gen)
    U = torch.randn(J.shape[0], 5, dtype=torch.float64, generator=gen)
    assert_allclose(op.rmatmat(U), J.T @ U, rtol=RTOL, atol=1e-12)
    assert len(calls) == (0 if columns_at_once == 1 else 2)
    # Forward mode in blocks of fewer rows under the same bound.
    assert_allclose(op.matmat(V), J @ V, rtol=RTOL, atol=1e-12)
    w = torch.rand(J.shape[0], dtype=torch.float64, generator=gen)
    assert_allclose(op.gram_times(V, w), J.T @ (w[:, None] * (J @ V)), rtol=RTOL, atol=1e-12)


# ---------------------------------------------------------------------------
# Estimators against the dense GGN posterior
# ---------------------------------------------------------------------------


def _classification_data(seed=0, n=40):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, 4)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 0.8)
    return X, y


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _dense_classifier_reference(module, X, Xt, lam):
    """Probit class probabilities from the dense GGN posterior (J^T B J + lam I)^-1."""
    names = [n for n, _ in module.named_parameters()]
    Xd, Xtd = torch.as_tensor(X), torch.as_tensor(Xt)
    J = dense_jacobian(module, Xd, names).numpy()
    with torch.no_grad():
        f = module(Xd).numpy()
        ft = module(Xtd).numpy()
    n, m = f.shape
    p = _softmax(f)
    B = np.stack([np.diag(pi) - np.outer(pi, pi) for pi in p])
    Jn = J.reshape(n, m, -1)
    H = np.einsum("nad,nab,nbe->de", Jn, B, Jn) + lam * np.eye(J.shape[1])
    cov = np.linalg.inv(H)
    Jt = dense_jacobian(module, Xtd, names).numpy().reshape(len(Xt), m, -1)
    Jt = Jt - Jt.mean(axis=1, keepdims=True)  # the logits' variance centred over the classes
    var = np.einsum("nad,de,nae->na", Jt, cov, Jt)
    kappa = 1 / np.sqrt(1 + np.pi * var / 8)
    return _softmax(kappa * ft), var, cov


def _fitted_mlp(n_in=4, n_out=3, seed=0):
    torch.manual_seed(seed)
    return _mlp(n_in, n_out).double().eval()


def test_classifier_exact_matches_dense_ggn():
    X, y = _classification_data()
    Xt = np.random.RandomState(5).randn(6, 4)
    module = _fitted_mlp()
    lam = 2.5
    ref, _, _ = _dense_classifier_reference(module, X, Xt, lam)
    clf = LinearisedLaplaceClassifier(TorchModule(module), prior_precision=lam, solver="exact", random_state=0)
    clf.fit(X, y)
    assert clf.solver_ == "exact" and clf.n_params_ == sum(p.numel() for p in module.parameters())
    assert_allclose(clf.predict_proba(Xt), ref, rtol=1e-6)


def test_classifier_cg_within_sampling_error():
    X, y = _classification_data()
    Xt = np.random.RandomState(5).randn(20, 4)
    module = _fitted_mlp()
    lam = 2.5
    _, var_ref, _ = _dense_classifier_reference(module, X, Xt, lam)
    k = 64
    clf = LinearisedLaplaceClassifier(
        TorchModule(module), prior_precision=lam, solver="cg", solver_tol=1e-10, n_samples=k, random_state=0
    ).fit(X, y)
    names = [n for n, _ in module.named_parameters()]
    Jt = dense_jacobian(module, torch.as_tensor(Xt), names).numpy().reshape(len(Xt), 3, -1)
    Jt = Jt - Jt.mean(axis=1, keepdims=True)
    P = np.einsum("nad,kd->nak", Jt, clf.posterior_samples_)
    ratio = np.mean(P * P, axis=2) / var_ref
    # Each ratio is chi2_k / k (sd sqrt(2/k)); their mean cannot be noisier.
    assert abs(np.mean(ratio) - 1) < 4 * np.sqrt(2 / k)


def _dense_regression_reference(module, X, Xt, lam, alpha):
    names = [n for n, _ in module.named_parameters()]
    J = dense_jacobian(module, torch.as_tensor(X), names).numpy()
    H = alpha * J.T @ J + lam * np.eye(J.shape[1])
    cov = np.linalg.inv(H)
    Jt = dense_jacobian(module, torch.as_tensor(Xt), names).numpy()
    with torch.no_grad():
        ft = module(torch.as_tensor(Xt)).numpy()
    var = np.einsum("rd,de,re->r", Jt, cov, Jt).reshape(ft.shape)
    return ft, np.sqrt(var + 1 / alpha)


@pytest.mark.parametrize("solver", ["exact", "cg", "sgd"])
def test_regressor_matches_dense_ggn(solver):
    rng = np.random.RandomState(0)
    X = rng.randn(30, 5)
    Y = np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]], axis=1)
    Xt = rng.randn(10, 5)
    module = _fitted_mlp(5, 2, seed=3)
    lam, alpha = 3.0, 20.0
    mean_ref, std_ref = _dense_regression_reference(module, X, Xt, lam, alpha)
    k = 200 if solver != "exact" else 16
    options = {"solver_tol": 1e-10} if solver == "cg" else {"solver_tol": 1e-5, "solver_max_iter": 100000}
    reg = LinearisedLaplaceRegressor(
        TorchModule(module), prior_precision=lam, noise_precision=alpha, solver=solver, n_samples=k,
        random_state=0, **({} if solver == "exact" else options),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(X, Y)
    mean, std = reg.predict(Xt, return_std=True)
    assert_allclose(mean, mean_ref, rtol=1e-10)
    if solver == "exact":
        assert_allclose(std, std_ref, rtol=1e-6)
    else:
        # Model part of the variance from k samples: relative sd sqrt(2/k) each.
        var_model = std**2 - 1 / alpha
        ratio = var_model / (std_ref**2 - 1 / alpha)
        tol = 4 * np.sqrt(2 / k) + (0.05 if solver == "sgd" else 0.0)
        assert abs(np.mean(ratio) - 1) < tol


# ---------------------------------------------------------------------------
# The skorch path and the scikit-learn path on the same weights
# ---------------------------------------------------------------------------


def _sklearn_and_skorch(n_classes=3):
    from skorch import NeuralNetClassifier
    from sklearn.neural_network import MLPClassifier

    X, y = _classification_data(n=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier(hidden_layer_sizes=(6,), activation="tanh", max_iter=300, random_state=0).fit(X, y)
    # float32 weights, so that both paths linearise exactly the same network.
    mlp.coefs_ = [np.asarray(c, dtype=np.float32).astype(np.float64) for c in mlp.coefs_]
    mlp.intercepts_ = [np.asarray(b, dtype=np.float32).astype(np.float64) for b in mlp.intercepts_]
    net = NeuralNetClassifier(
        nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, n_classes)),
        criterion=nn.CrossEntropyLoss,
        classes=list(range(n_classes)),
        verbose=0,
    ).initialize()
    with torch.no_grad():
        for layer, W, b in zip([net.module_[0], net.module_[2]], mlp.coefs_, mlp.intercepts_):
            layer.weight.copy_(torch.as_tensor(W.T))
            layer.bias.copy_(torch.as_tensor(b))
    return X, y, mlp, net


@pytest.mark.parametrize("solver", ["exact"])
def test_skorch_path_equals_sklearn_path(solver):
    """Same weights, same numbers (evidence-tuned prior, exact posterior).

    With an iterative solver the two paths agree only in distribution: the
    posterior draws are made in parameter order, and scikit-learn stores a
    layer's weights as (in, out) where torch stores (out, in), so the same
    seed gives differently permuted noise.
    """
    from sklearn.frozen import FrozenEstimator

    X, y, mlp, net = _sklearn_and_skorch()
    Xt = np.random.RandomState(9).randn(7, 4)
    kwargs = dict(solver=solver, n_samples=8, random_state=0, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = LinearisedLaplaceClassifier(FrozenEstimator(mlp), **kwargs).fit(X, y)
        b = LinearisedLaplaceClassifier(FrozenEstimator(net), **kwargs).fit(X, y)
    # Same parameters in a different order (sklearn: W row-major (in, out); torch: W (out, in)).
    assert a.n_params_ == b.n_params_
    assert_allclose(a.lambda_, b.lambda_, rtol=1e-6)
    assert_allclose(a.effective_dim_, b.effective_dim_, rtol=1e-6)
    assert_allclose(b.predict_proba(Xt), a.predict_proba(Xt), rtol=1e-6)
    assert_array_equal = np.testing.assert_array_equal
    assert_array_equal(b.classes_, a.classes_)


def test_skorch_fit_and_layerwise_subset():
    from skorch import NeuralNetClassifier

    X, y = _classification_data(n=60)
    y = np.array(["a", "b", "c"])[y]
    net = NeuralNetClassifier(
        nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)),
        criterion=nn.CrossEntropyLoss, max_epochs=5, lr=0.1, verbose=0,
    )
    clf = LinearisedLaplaceClassifier(net, prior_structure="layerwise", max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    assert clf.lambda_.shape == (2,)
    assert set(clf.predict(X)) <= {"a", "b", "c"}
    assert clf.estimator_ is not net  # a clone was fitted
    last = LinearisedLaplaceClassifier(
        net, parameters=["2"], prior_structure="layerwise", prior_precision=1.0, random_state=0
    ).fit(X, y)
    assert last.n_params_ == 6 * 3 + 3 and last.lambda_.shape == (1,)
    per_tensor = LinearisedLaplaceClassifier(
        net, parameters=["0.weight", "0.bias", "2"], prior_structure="layerwise", prior_precision=[1.0, 2.0, 3.0]
    ).fit(X, y)
    assert per_tensor.n_params_ == 4 * 6 + 6 + 6 * 3 + 3
    with pytest.raises(ValueError, match="names no parameter or module"):
        LinearisedLaplaceClassifier(net, parameters=["head"]).fit(X, y)


def test_torch_tensors_in_torch_tensors_out_and_pickle():
    X, y = _classification_data()
    module = _fitted_mlp()
    clf = LinearisedLaplaceClassifier(TorchModule(module), solver="cg", n_samples=4, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(torch.as_tensor(X), torch.as_tensor(y))
    proba = clf.predict_proba(torch.as_tensor(X[:5]))
    assert isinstance(proba, torch.Tensor) and proba.shape == (5, 3)
    assert isinstance(clf.predict(torch.as_tensor(X[:5])), torch.Tensor)
    assert isinstance(clf.predict_proba(X[:5]), np.ndarray)
    assert_allclose(proba.numpy(), clf.predict_proba(X[:5]), rtol=1e-12)
    blob = pickle.dumps(clf)
    again = pickle.loads(blob)
    assert_allclose(again.predict_proba(X), clf.predict_proba(X), rtol=1e-12)
    assert_allclose(again.sample_posterior(2, random_state=0), clf.sample_posterior(2, random_state=0), rtol=1e-10)


def test_pickle_size_does_not_grow_with_samples_times_rows():
    X, y = _classification_data(n=400)
    module = _fitted_mlp()
    sizes = {}
    for k in (2, 34):
        clf = LinearisedLaplaceClassifier(TorchModule(module), solver="cg", n_samples=k, max_iter=2, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)
        sizes[k] = len(pickle.dumps(clf))
    d, rows = clf.n_params_, 3 * len(X)
    # Samples are d-vectors (kept, twice: posterior_samples_ and the fit's);
    # nothing of size n_rows per sample may be.
    grown = sizes[34] - sizes[2]
    assert grown < 32 * 8 * (3 * d + rows) / 2, (sizes, d, rows)


def test_regressor_checks_outputs_and_memory_advice(monkeypatch):
    X = np.random.RandomState(0).randn(20, 5)
    module = _fitted_mlp(5, 2)
    with pytest.raises(ValueError, match="1 target"):
        LinearisedLaplaceRegressor(TorchModule(module)).fit(X, X[:, 0])
    import bayeslin.operators.torch_jacobian as tj

    def oom(self, V):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: not enough memory")

    monkeypatch.setattr(tj.TorchJacobian, "_jvp", oom)
    with pytest.raises(MemoryError, match="jacobian_batch_size"):
        LinearisedLaplaceRegressor(TorchModule(module), solver="cg").fit(X, X[:, :2])


def test_classifier_rejects_regression_module_and_wrong_device():
    X, y = _classification_data()
    with pytest.raises(ValueError, match="regression"):
        LinearisedLaplaceClassifier(TorchModule(_fitted_mlp(), output="regression")).fit(X, y)
    with pytest.raises(ValueError, match="lives on"):
        LinearisedLaplaceClassifier(TorchModule(_fitted_mlp()), device="cuda").fit(X, y)
    with pytest.raises(ValueError, match="output"):
        LinearisedLaplaceClassifier(TorchModule(_fitted_mlp(), output="scores")).fit(X, y)


def test_float32_products_on_request():
    X, y = _classification_data()
    module = _fitted_mlp()
    ref = LinearisedLaplaceClassifier(TorchModule(module), prior_precision=2.5, solver="exact").fit(X, y)
    clf = LinearisedLaplaceClassifier(
        TorchModule(module, dtype=torch.float32), prior_precision=2.5, solver="exact"
    ).fit(X, y)
    assert clf.posterior_samples_.dtype == np.float32 and ref.posterior_samples_.dtype == np.float64
    # float32 rounding of a well-conditioned 3-class problem.
    assert_allclose(clf.predict_proba(X), ref.predict_proba(X), atol=1e-4)
