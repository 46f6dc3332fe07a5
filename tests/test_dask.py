"""Dask input: fits equal the in-memory fits, predictions are lazy, bad input fails clearly, faults.

Every fit on a Dask array is compared with the fit of the same data in
memory (itself checked against dense references in the other modules) and,
for ``exact``, with scikit-learn's BayesianRidge. The distributed cases run
on a LocalCluster of 2 worker processes (1 thread each), started once for
the module and closed at its end; the others on Dask's threaded scheduler.
"""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import scipy.sparse as sp

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

from sklearn.linear_model import BayesianRidge  # noqa: E402

from bayeslin import BayesianLinearRegressor  # noqa: E402
from bayeslin.operators.dask import DaskFeatures  # noqa: E402

pytestmark = pytest.mark.dask

CHUNK = 70  # rows per chunk: 3 chunks for 200 rows, the last one short


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(params=["threads", "distributed"])
def scheduler(request):
    """Dask's threaded scheduler, or the module's 2-process LocalCluster."""
    if request.param == "threads":
        with dask.config.set(scheduler="threads"):
            yield request.param
    else:
        # The module's client is Dask's default scheduler while it lives. (Not
        # through dask.config: a nanny restarting a worker pickles the config.)
        request.getfixturevalue("client")
        yield request.param


def make_data(n=200, d=8, sparse=False, seed=0):
    rng = np.random.RandomState(seed)
    if sparse:
        X = sp.random(n, d, density=0.4, format="csr", random_state=rng, data_rvs=lambda k: rng.randn(k) + 2.0)
        y = np.asarray(X @ rng.randn(d)).ravel() + 0.5 + rng.randn(n)
    else:
        X = rng.randn(n, d) * rng.uniform(0.5, 2.0, size=d) + rng.uniform(-1, 1, size=d)
        y = X @ (0.5 * rng.randn(d)) + 3.0 + rng.randn(n)
    w = rng.uniform(0.2, 3.0, size=n)
    return X, y, w


def to_dask(a):
    if sp.issparse(a):
        return da.from_array(a, chunks=(CHUNK, a.shape[1]), asarray=False)
    return da.from_array(a, chunks=(CHUNK,) + a.shape[1:])


def assert_same_fit(ref, got, rtol):
    scale = np.max(np.abs(ref.coef_))
    np.testing.assert_allclose(got.coef_, ref.coef_, rtol=0, atol=rtol * scale)
    np.testing.assert_allclose(got.intercept_, ref.intercept_, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(got.alpha_, ref.alpha_, rtol=rtol)
    np.testing.assert_allclose(got.lambda_, ref.lambda_, rtol=rtol)
    np.testing.assert_allclose(got.effective_dim_, ref.effective_dim_, rtol=rtol)
    assert got.n_iter_ == ref.n_iter_
    assert got.solver_ == ref.solver_


# The iterative fits draw the same numbers as in memory (the data noise is
# drawn on the host from the same seed and sent in X's row chunks), so they
# agree far below their solver tolerances; the bounds are those tolerances.
SOLVER_RTOL = {"exact": 1e-8, "cg": 1e-6, "sgd": 1e-4}
SOLVER_KW = {"exact": {}, "cg": {}, "sgd": {"batch_size": 64, "solver_max_iter": 20000}}


@pytest.mark.parametrize("solver", ["exact", "cg", "sgd"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_fit_equals_in_memory_fit(scheduler, solver, sparse, weighted):
    if solver == "sgd" and scheduler == "distributed" and (weighted or sparse):
        pytest.skip("the threaded cases cover sgd's weights and sparse chunks: each minibatch is a cluster round trip")
    X, y, w = make_data(sparse=sparse)
    sw = w if weighted else None
    kw = dict(solver=solver, random_state=0, **SOLVER_KW[solver])
    ref = BayesianLinearRegressor(**kw).fit(X, y, sample_weight=sw)
    got = BayesianLinearRegressor(**kw).fit(to_dask(X), to_dask(y), sample_weight=None if sw is None else to_dask(sw))
    assert_same_fit(ref, got, SOLVER_RTOL[solver])
    assert isinstance(got.coef_, np.ndarray)


def test_exact_equals_bayesian_ridge(scheduler):
    X, y, w = make_data()
    ref = BayesianRidge().fit(X, y, sample_weight=w)
    got = BayesianLinearRegressor(solver="exact").fit(to_dask(X), to_dask(y), sample_weight=to_dask(w))
    np.testing.assert_allclose(got.coef_, ref.coef_, rtol=1e-6)
    np.testing.assert_allclose(got.alpha_, ref.alpha_, rtol=1e-6)
    np.testing.assert_allclose(got.lambda_, ref.lambda_, rtol=1e-6)


def test_exact_without_intercept_and_with_a_large_mean(scheduler):
    """Columns with a mean 1e4 times their spread: the moments are taken about the first row.

    Here centring costs the in-memory path about 1e-7 of the coefficients
    too (its Gram is expanded about 0), so both are held to BayesianRidge,
    which centres explicitly, at that accuracy.
    """
    X, y, _ = make_data()
    X = X + 1e4
    for fit_intercept in (False, True):
        kw = dict(solver="exact", fit_intercept=fit_intercept)
        ref = BayesianRidge(fit_intercept=fit_intercept).fit(X, y)
        in_memory = BayesianLinearRegressor(**kw).fit(X, y)
        got = BayesianLinearRegressor(**kw).fit(to_dask(X), to_dask(y))
        for reg in (in_memory, got):
            np.testing.assert_allclose(reg.coef_, ref.coef_, rtol=0, atol=1e-6 * np.max(np.abs(ref.coef_)))
            np.testing.assert_allclose(reg.alpha_, ref.alpha_, rtol=1e-6)
            np.testing.assert_allclose(reg.lambda_, ref.lambda_, rtol=1e-6)


def test_auto_takes_exact_for_tall_dask_input():
    X, y, _ = make_data()
    with dask.config.set(scheduler="sync"):
        reg = BayesianLinearRegressor().fit(to_dask(X), to_dask(y))
    assert reg.solver_ == "exact"


@pytest.mark.parametrize("solver", ["exact", "cg"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_predict_and_sample_y_are_lazy_and_equal_in_memory(scheduler, solver, sparse):
    X, y, _ = make_data(sparse=sparse)
    reg = BayesianLinearRegressor(solver=solver, random_state=0).fit(X, y)
    Xq = X[:150]
    Xd = to_dask(Xq)
    mean = reg.predict(Xd)
    mean_std = reg.predict(Xd, return_std=True)
    draws = reg.sample_y(Xd, n_samples=3, random_state=5)
    assert all(isinstance(a, da.Array) for a in (mean, *mean_std, draws))
    assert mean.chunks[0] == Xd.chunks[0]
    np.testing.assert_allclose(mean.compute(), reg.predict(Xq), rtol=1e-12, atol=1e-12)
    ref_mean, ref_std = reg.predict(Xq, return_std=True)
    np.testing.assert_allclose(mean_std[0].compute(), ref_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mean_std[1].compute(), ref_std, rtol=1e-10)
    # The noise continues the generator's stream chunk after chunk: the same numbers as in memory.
    np.testing.assert_allclose(draws.compute(), reg.sample_y(Xq, n_samples=3, random_state=5), rtol=1e-10)
    # NumPy in, NumPy out, as before.
    assert isinstance(reg.predict(Xq), np.ndarray)


def test_model_fitted_on_dask_predicts_numpy_and_dask():
    X, y, _ = make_data()
    with dask.config.set(scheduler="threads"):
        reg = BayesianLinearRegressor(solver="cg", random_state=0).fit(to_dask(X), to_dask(y))
        ref = BayesianLinearRegressor(solver="cg", random_state=0).fit(X, y)
        m, s = reg.predict(X, return_std=True)
        m0, s0 = ref.predict(X, return_std=True)
        np.testing.assert_allclose(m, m0, rtol=1e-8)
        np.testing.assert_allclose(s, s0, rtol=1e-8)
        np.testing.assert_allclose(reg.predict(to_dask(X), return_std=True)[1].compute(), s0, rtol=1e-8)
        # The iterative posterior samples re-solve with the (persisted) training chunks.
        np.testing.assert_allclose(
            reg.sample_posterior(4, random_state=3), ref.sample_posterior(4, random_state=3), rtol=1e-6, atol=1e-8
        )


def test_xarray_dataarray_through_its_dask_data():
    xr = pytest.importorskip("xarray")
    X, y, _ = make_data()
    Xa = xr.DataArray(X, dims=("time", "feature")).chunk({"time": CHUNK})
    ya = xr.DataArray(y, dims=("time",)).chunk({"time": CHUNK})
    ref = BayesianLinearRegressor(solver="exact").fit(X, y)
    with dask.config.set(scheduler="threads"):
        for Xin, yin in ((Xa.data, ya.data), (Xa, ya)):
            got = BayesianLinearRegressor(solver="exact").fit(Xin, yin)
            assert_same_fit(ref, got, 1e-8)
            pred = got.predict(Xin)
            assert isinstance(pred, da.Array)
            np.testing.assert_allclose(pred.compute(), ref.predict(X), rtol=1e-8)


# --------------------------------------------------------------------------
# Bad input: clear errors, nothing gathered, previous fit untouched
# --------------------------------------------------------------------------


@pytest.fixture
def fitted():
    X, y, _ = make_data()
    reg = BayesianLinearRegressor(solver="exact").fit(X, y)
    return reg, reg.coef_.copy(), reg.alpha_


def _bad_inputs():
    X, y, w = make_data()
    Xd, yd, wd = to_dask(X), to_dask(y), to_dask(w)
    X_nan = X.copy()
    X_nan[150, 3] = np.nan
    y_inf = y.copy()
    y_inf[5] = np.inf
    return {
        "unknown-chunks": (dict(X=Xd[Xd[:, 0] > -100], y=yd), "unknown chunk sizes"),
        "column-chunks": (dict(X=Xd.rechunk((CHUNK, 4)), y=yd), "chunked across its columns"),
        "y-chunks": (dict(X=Xd, y=yd.rechunk(50)), "y is chunked differently"),
        "weight-chunks": (dict(X=Xd, y=yd, sample_weight=wd.rechunk(50)), "sample_weight is chunked differently"),
        "nan-in-chunk": (dict(X=to_dask(X_nan), y=yd), "X contains NaN"),
        "inf-in-y": (dict(X=Xd, y=to_dask(y_inf)), "y contains NaN or infinity"),
        "negative-weight": (dict(X=Xd, y=yd, sample_weight=to_dask(np.where(np.arange(200) == 199, -1.0, w))), "Negative"),
        "zero-weights": (dict(X=Xd, y=yd, sample_weight=to_dask(np.zeros(200))), "at least one non-zero"),
        "length": (dict(X=Xd, y=to_dask(y[:150])), "inconsistent numbers of samples"),
    }


@pytest.mark.parametrize("solver", ["exact", "cg"])
@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_input_clear_error_previous_fit_untouched(fitted, case, solver):
    reg, coef, alpha = fitted
    reg.set_params(solver=solver)
    kwargs, message = _bad_inputs()[case]
    with dask.config.set(scheduler="sync"), pytest.raises(ValueError, match=message):
        reg.fit(**kwargs)
    np.testing.assert_array_equal(reg.coef_, coef)
    assert reg.alpha_ == alpha
    assert reg.solver_ == "exact"


def test_bad_input_is_not_gathered(monkeypatch):
    """The chunk and shape checks compute nothing; the finite check reduces chunk by chunk."""
    X, y, _ = make_data()
    Xd = to_dask(X)
    computed = []
    original = da.Array.compute

    def spy(self, *args, **kwargs):
        computed.append(self.shape)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(da.Array, "compute", spy)
    with pytest.raises(ValueError, match="y is chunked differently"):
        BayesianLinearRegressor().fit(Xd, to_dask(y).rechunk(50))
    with pytest.raises(ValueError, match="chunked across"):
        BayesianLinearRegressor().fit(Xd.rechunk((CHUNK, 4)), to_dask(y))
    assert computed == []
    X[10, 0] = np.nan
    with dask.config.set(scheduler="sync"), pytest.raises(ValueError, match="X contains NaN"):
        BayesianLinearRegressor().fit(to_dask(X), to_dask(y))
    # Only reductions came back: the first row (the moments' shift) and the summed moments with the flags.
    assert all(np.prod(s) <= (X.shape[1] + 3) * (X.shape[1] + 2) for s in computed), computed


def test_predict_checks_features_and_finiteness():
    X, y, _ = make_data()
    reg = BayesianLinearRegressor(solver="exact").fit(X, y)
    with pytest.raises(ValueError, match="features"):
        reg.predict(to_dask(X[:, :5]))
    with pytest.raises(ValueError, match="chunked across"):
        reg.predict(to_dask(X).rechunk((CHUNK, 4)))
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with dask.config.set(scheduler="sync"), pytest.raises(ValueError, match="NaN"):
        reg.predict(to_dask(Xn)).compute()


def test_dask_is_not_imported_with_the_package():
    code = (
        "import sys, bayeslin, bayeslin.operators; bayeslin.BayesianLinearRegressor(); "
        "print(any(m.startswith('dask') for m in sys.modules), 'bayeslin.operators.dask' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=os.getcwd())
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------


def test_killed_worker_mid_fit_same_answer_or_clear_error(client, monkeypatch):
    """A worker process dies between two cg iterations; its nanny restarts it.

    The persisted chunks it held are lost; Dask recomputes them from the
    graph, and the fit must then end with the in-memory answer. Should it
    stop instead, the error must be raised and the previous fit kept.
    """
    X, y, w = make_data(n=400)
    kw = dict(solver="cg", random_state=0)
    ref = BayesianLinearRegressor(**kw).fit(X, y, sample_weight=w)
    reg = BayesianLinearRegressor(**kw).fit(X[:, :8], y)
    previous = reg.coef_.copy()
    killed = []
    original = DaskFeatures.gram_times

    def gram_times_then_kill(self, V, weights=None):
        if len(killed) == 0 and gram_times_then_kill.calls == 3:
            victim = next(iter(client.has_what()))
            killed.append(victim)
            try:
                client.run(os._exit, 1, workers=[victim])
            except Exception:
                pass  # the worker dies before it can answer
        gram_times_then_kill.calls += 1
        return original(self, V, weights)

    gram_times_then_kill.calls = 0
    monkeypatch.setattr(DaskFeatures, "gram_times", gram_times_then_kill)
    try:
        reg.fit(to_dask(X), to_dask(y), sample_weight=to_dask(w))
    except Exception as exc:  # a clear error, and the previous fit untouched
        print(f"killed-worker fit stopped: {type(exc).__name__}: {exc}")
        assert str(exc)
        np.testing.assert_array_equal(reg.coef_, previous)
    else:
        print(f"killed-worker fit finished after killing {killed}")
        assert killed, "no worker was killed"
        assert_same_fit(ref, reg, SOLVER_RTOL["cg"])
    client.wait_for_workers(2, timeout=60)


def test_estimator_is_usable_from_threads_while_cluster_runs(client):
    """Two fits at once on one client (e.g. a grid search's threads) do not mix their state."""
    X, y, _ = make_data()
    X2, y2, _ = make_data(seed=1)
    results = {}

    def fit(name, X, y):
        results[name] = BayesianLinearRegressor(solver="exact").fit(to_dask(X), to_dask(y))

    threads = [threading.Thread(target=fit, args=a) for a in (("a", X, y), ("b", X2, y2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert_same_fit(BayesianLinearRegressor(solver="exact").fit(X, y), results["a"], 1e-8)
    assert_same_fit(BayesianLinearRegressor(solver="exact").fit(X2, y2), results["b"], 1e-8)


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_predict_std_se_is_lazy_and_equal_in_memory(scheduler, solver):
    X, y, _ = make_data(n=300, d=200)
    # n_samples=2: the cg fit's variances are sampled (min(n, d) > 64 (n_samples + 1)), its errors non-zero.
    reg = BayesianLinearRegressor(solver=solver, n_samples=2, max_iter=5, random_state=0).fit(X, y)
    Xq = X[:150]
    out = reg.predict(to_dask(Xq), return_std=True, return_std_se=True)
    assert all(isinstance(a, da.Array) for a in out)
    ref = reg.predict(Xq, return_std=True, return_std_se=True)
    assert np.all(ref[2] == 0) == (solver == "exact")
    for lazy, expected in zip(out, ref):
        np.testing.assert_allclose(lazy.compute(), expected, rtol=1e-10, atol=1e-14)
