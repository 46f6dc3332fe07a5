"""Array-API input end to end, with array-api-strict standing in for a GPU.

array-api-strict's second device (``device1``) refuses to mix with arrays on
its CPU device and to be converted to NumPy implicitly, exactly the
mistakes that would put a host copy inside a solver loop or return a GPU
fit's attributes on the wrong device. Every fit below is compared with the
same fit on NumPy input: the random draws are made on the host from the same
seed, so the results agree to rounding. The float32 path (kept on GPUs) is
run here by declaring the strict device a GPU.
"""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.exceptions import ConvergenceWarning

import bayeslin.linear_model as linear_model
from bayeslin import BayesianLinearRegressor
from bayeslin._backend import get_namespace, to_numpy

xps = pytest.importorskip("array_api_strict")
DEVICE = xps.Device("device1")

SOLVERS = ["exact", "cg", "sgd"]


def on_device(a, dtype=None):
    return xps.asarray(np.asarray(a), dtype=dtype, device=DEVICE)


def assert_on_device(a):
    assert get_namespace(a).__name__ == "array_api_strict"
    assert a.device == DEVICE


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", ["tall", "wide"])
def test_fit_predict_on_device_matches_numpy(solver, name, dense, gaussian_check):
    from conftest import get_problem

    prob = get_problem(name, weighted=True)
    kw = dict(solver=solver, random_state=0)
    ref = BayesianLinearRegressor(**kw).fit(prob.X, prob.y, sample_weight=prob.sample_weight)
    est = BayesianLinearRegressor(**kw).fit(on_device(prob.X), on_device(prob.y), sample_weight=on_device(prob.sample_weight))

    for attr in ["coef_", "X_offset_"]:
        assert_on_device(getattr(est, attr))
        assert_allclose(to_numpy(getattr(est, attr)), getattr(ref, attr), rtol=1e-9, atol=1e-12)
    for attr in ["alpha_", "lambda_", "intercept_", "effective_dim_"]:
        assert_allclose(getattr(est, attr), getattr(ref, attr), rtol=1e-9)
    assert est.n_iter_ == ref.n_iter_

    Xq = prob.X[:7]
    mean, std = est.predict(on_device(Xq), return_std=True)
    ref_mean, ref_std = ref.predict(Xq, return_std=True)
    assert_on_device(mean)
    assert_on_device(std)
    assert_allclose(to_numpy(mean), ref_mean, rtol=1e-9, atol=1e-9)
    assert_allclose(to_numpy(std), ref_std, rtol=1e-9)

    ys = est.sample_y(on_device(Xq), 2, random_state=2)
    assert_on_device(ys)
    if solver == "exact":
        # NumPy factorises by LAPACK tridiagonalisation, other namespaces by
        # eigh: different square roots of H^-1, so the same noise gives
        # different (equally exact) draws. Check the distribution instead.
        draws = est.sample_posterior(4000, random_state=1)
        assert_on_device(draws)
        D = dense(prob.X, prob.y, prob.sample_weight)
        gaussian_check.draws(to_numpy(draws), D.mean(est.alpha_, est.lambda_), D.covariance(est.alpha_, est.lambda_))
    else:
        draws = est.sample_posterior(3, random_state=1)
        assert_on_device(draws)
        assert_allclose(to_numpy(draws), ref.sample_posterior(3, random_state=1), rtol=1e-7, atol=1e-9)
        assert_allclose(to_numpy(ys), ref.sample_y(Xq, 2, random_state=2), rtol=1e-7, atol=1e-9)
        assert_on_device(est.posterior_samples_)


def test_targets_and_weights_follow_X(tall):
    # y and sample_weight from the host are moved to X's device.
    X, y = tall.X, tall.y
    est = BayesianLinearRegressor(solver="exact").fit(on_device(X), y, sample_weight=np.ones(len(y)))
    ref = BayesianLinearRegressor(solver="exact").fit(X, y)
    assert_on_device(est.coef_)
    assert_allclose(to_numpy(est.coef_), ref.coef_, rtol=1e-9)


def test_predict_refuses_another_namespace(tall):
    X, y = tall.X, tall.y
    est = BayesianLinearRegressor(solver="exact").fit(on_device(X), on_device(y))
    with pytest.raises(ValueError, match="same namespace and the same device"):
        est.predict(X[:3])
    host = BayesianLinearRegressor(solver="exact").fit(X, y)
    with pytest.raises(ValueError, match="same namespace and the same device"):
        host.predict(on_device(X[:3]))


@pytest.mark.parametrize("bad, match", [(np.nan, "contains NaN"), (np.inf, "contains infinity")])
def test_device_input_checks(tall, bad, match):
    X, y = tall.X, tall.y
    Xb = X.copy()
    Xb[3, 2] = bad
    with pytest.raises(ValueError, match=match):
        BayesianLinearRegressor().fit(on_device(Xb), on_device(y))
    yb = y.copy()
    yb[5] = bad
    with pytest.raises(ValueError, match=match.replace("contains", "y contains") if bad is np.nan else "y contains"):
        BayesianLinearRegressor().fit(on_device(X), on_device(yb))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        BayesianLinearRegressor().fit(on_device(X), on_device(y[:-1]))
    with pytest.raises(ValueError, match="0 sample"):
        BayesianLinearRegressor().fit(on_device(X[:0]), on_device(y[:0]))
    with pytest.raises(ValueError, match="Expected 2D array"):
        BayesianLinearRegressor().fit(on_device(X[:, 0]), on_device(y))
    with pytest.raises(ValueError, match="Negative values"):
        BayesianLinearRegressor().fit(on_device(X), on_device(y), sample_weight=on_device(-np.ones(len(y))))
    est = BayesianLinearRegressor().fit(on_device(X), on_device(y))
    with pytest.raises(ValueError, match="features"):
        est.predict(on_device(X[:, :3]))


# --------------------------------------------------------------------------
# float32, as kept on a GPU
# --------------------------------------------------------------------------


@pytest.fixture
def strict_device_is_gpu(monkeypatch):
    monkeypatch.setattr(linear_model, "keeps_float32", lambda xp, device: True)


def _relative_error(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_device_finite_check_needs_no_mask_of_x_and_tests_entries_when_the_sum_overflows(monkeypatch):
    """The device check sums X (a mask the size of X was a 4 GiB GPU peak); an
    overflowing sum of finite entries is then tested entry by entry, in blocks."""
    from bayeslin import _validation

    monkeypatch.setattr(_validation, "_FINITE_CHECK_ENTRIES", 6)  # several blocks of 2 rows
    X = np.full((7, 3), 1e308)
    _validation._check_finite(on_device(X), xps, "X")  # finite entries, infinite sum: accepted
    for bad, match in [(np.nan, "contains NaN"), (np.inf, "contains infinity")]:
        Xb = X.copy()
        Xb[6, 1] = bad  # in the last block
        with pytest.raises(ValueError, match=match):
            _validation._check_finite(on_device(Xb), xps, "X")


@pytest.mark.parametrize("solver", SOLVERS)
def test_float32_stays_float32_and_is_accurate(strict_device_is_gpu, solver, dense):
    from conftest import get_problem

    prob = get_problem("tall")
    ref = dense(prob.X, prob.y)
    alpha, lam = ref.fixed_point()
    est = BayesianLinearRegressor(solver=solver, random_state=0).fit(on_device(prob.X, xps.float32), on_device(prob.y))
    assert est.coef_.dtype == xps.float32
    mean, std = est.predict(on_device(prob.X[:5], xps.float32), return_std=True)
    assert mean.dtype == xps.float32 and std.dtype == xps.float32
    # The exact fit rounds once per entry of the Gram matrix: cond(H) eps32
    # bounds its error. The iterative ones stop at their float32 solver_tol
    # (cg 1e-4, sgd 1e-3), which bounds the error of the mean by cond(H)
    # times that, and sample-estimate gamma (checked in test_linear_model).
    H = ref.precision(est.alpha_, est.lambda_)
    cond = np.linalg.cond(H)
    bound = {"exact": 10 * cond * np.finfo(np.float32).eps, "cg": cond * 1e-4, "sgd": cond * 1e-3}[solver]
    exact_mean = ref.mean(est.alpha_, est.lambda_)
    assert _relative_error(to_numpy(est.coef_).astype(np.float64), exact_mean) < bound
    if solver == "exact":
        assert_allclose([est.alpha_, est.lambda_], [alpha, lam], rtol=1e-4)


def test_float64_everywhere_but_a_gpu(tall):
    # Off a GPU float32 input is computed in float64; the outputs keep the
    # input's dtype (as BayesianRidge's, issue 9), so the float32 fit is the
    # float64 fit of the same numbers, rounded once at the end.
    X, y = tall.X.astype(np.float32), tall.y
    ref = BayesianLinearRegressor().fit(X.astype(np.float64), y).coef_
    est = BayesianLinearRegressor().fit(on_device(X, xps.float32), on_device(y))
    assert est.coef_.dtype == xps.float32
    assert_allclose(to_numpy(est.coef_), ref.astype(np.float32), rtol=0, atol=0)
    host = BayesianLinearRegressor().fit(X, y).coef_
    assert host.dtype == np.float32
    assert_allclose(host, ref.astype(np.float32), rtol=0, atol=0)


# --------------------------------------------------------------------------
# device= and memory errors
# --------------------------------------------------------------------------


def test_device_parameter_errors(tall):
    X, y = tall.X, tall.y
    with pytest.raises(ValueError, match="device must be"):
        BayesianLinearRegressor(device="tpu").fit(X, y)
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs CuPy"):
            BayesianLinearRegressor(device="cuda").fit(X, y)


def test_device_cpu_is_numpy(tall):
    X, y = tall.X, tall.y
    est = BayesianLinearRegressor(device="cpu", solver="exact").fit(X, y)
    ref = BayesianLinearRegressor(solver="exact").fit(X, y)
    assert isinstance(est.coef_, np.ndarray)
    assert_allclose(est.coef_, ref.coef_)


@pytest.mark.parametrize("solver, advice", [("exact", "solver='cg' or 'sgd'"), ("cg", "lower n_samples"), ("sgd", "batch_size")])
def test_out_of_memory_names_the_size_to_lower(monkeypatch, tall, solver, advice):
    X, y = tall.X, tall.y

    def exhausted(*args, **kwargs):
        raise MemoryError("Out of memory allocating 1,234,567 bytes")

    import bayeslin.evidence as evidence

    if solver == "exact":
        monkeypatch.setattr(evidence, "ExactFactorization", exhausted)
    else:
        monkeypatch.setitem(evidence.SOLVERS, solver, exhausted)
    with pytest.raises(MemoryError, match=advice) as info:
        BayesianLinearRegressor(solver=solver).fit(X, y)
    assert isinstance(info.value.__cause__, MemoryError)


def test_out_of_memory_recognises_gpu_errors():
    from bayeslin._backend import is_out_of_memory

    class OutOfMemoryError(Exception):
        pass

    class CUBLASError(Exception):
        pass

    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(OutOfMemoryError("Out of memory allocating 8 bytes"))
    assert is_out_of_memory(CUBLASError("CUBLAS_STATUS_ALLOC_FAILED"))
    assert not is_out_of_memory(ValueError("bad shape"))


def test_no_convergence_warning_from_float32_defaults(strict_device_is_gpu, tall):
    # The float32 solver_tol defaults are reachable in float32 arithmetic.
    X, y = tall.X, tall.y
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        BayesianLinearRegressor(solver="cg", random_state=0).fit(on_device(X, xps.float32), on_device(y))
