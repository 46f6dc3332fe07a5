"""The CPU correctness checks repeated on CuPy input (skipped without CuPy and a GPU).

Dense and cupyx.scipy.sparse input, float64 and float32, and NumPy input
moved to the GPU by ``device='cuda'``: each fit is compared with the same fit
on the host, and every result must stay on the GPU (or come back to the host
for host input).
"""

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose

from bayeslin import BayesianLinearRegressor
from bayeslin.operators import RandomFourierFeatures

cp = pytest.importorskip("cupy")
try:
    _HAS_GPU = cp.cuda.runtime.getDeviceCount() > 0
except cp.cuda.runtime.CUDARuntimeError:  # pragma: no cover - driver without devices
    _HAS_GPU = False

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _HAS_GPU, reason="no CUDA device")]

SOLVERS = ["exact", "cg", "sgd"]


def _problem(kind, seed=0):
    from conftest import get_problem, get_sparse_problem

    return get_sparse_problem("tall", weighted=True) if kind == "sparse" else get_problem("tall", weighted=True)


def _to_gpu(X, dtype):
    if sp.issparse(X):
        import cupyx.scipy.sparse

        return cupyx.scipy.sparse.csr_matrix(sp.csr_matrix(X, dtype=dtype))
    return cp.asarray(X, dtype=dtype)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_cupy_fit_matches_host_fit_float64(solver, kind):
    prob = _problem(kind)
    kw = dict(solver=solver, random_state=0)
    ref = BayesianLinearRegressor(**kw).fit(prob.X, prob.y, sample_weight=prob.sample_weight)
    est = BayesianLinearRegressor(**kw).fit(
        _to_gpu(prob.X, np.float64), cp.asarray(prob.y), sample_weight=cp.asarray(prob.sample_weight)
    )
    assert isinstance(est.coef_, cp.ndarray) and est.coef_.dtype == cp.float64
    # cuBLAS sums in another order than the host BLAS: agreement to rounding
    # for exact, to the solver tolerance times cond(H) for the iterative ones.
    rtol = 1e-8 if solver == "exact" else 1e-4
    assert_allclose(est.coef_.get(), ref.coef_, rtol=rtol, atol=rtol * np.abs(ref.coef_).max())
    assert_allclose([est.alpha_, est.lambda_], [ref.alpha_, ref.lambda_], rtol=rtol)
    Xq = _to_gpu(prob.X[:9], np.float64)
    mean, std = est.predict(Xq, return_std=True)
    assert isinstance(mean, cp.ndarray) and isinstance(std, cp.ndarray)
    ref_mean, ref_std = ref.predict(prob.X[:9], return_std=True)
    assert_allclose(mean.get(), ref_mean, rtol=rtol, atol=rtol)
    assert_allclose(std.get(), ref_std, rtol=max(rtol, 0.05 if solver != "exact" else 0))
    assert isinstance(est.sample_posterior(2, random_state=0), cp.ndarray)
    assert isinstance(est.sample_y(Xq, 2, random_state=0), cp.ndarray)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_cupy_float32_stays_float32(solver, kind, dense):
    prob = _problem(kind)
    ref = dense(prob.X, prob.y, prob.sample_weight)
    est = BayesianLinearRegressor(solver=solver, random_state=0).fit(
        _to_gpu(prob.X, np.float32), cp.asarray(prob.y, dtype=cp.float32), sample_weight=cp.asarray(prob.sample_weight)
    )
    assert est.coef_.dtype == cp.float32
    H = ref.precision(est.alpha_, est.lambda_)
    bound = np.linalg.cond(H) * {"exact": 10 * np.finfo(np.float32).eps, "cg": 1e-4, "sgd": 1e-3}[solver]
    exact = ref.mean(est.alpha_, est.lambda_)
    assert np.linalg.norm(est.coef_.get() - exact) / np.linalg.norm(exact) < bound


@pytest.mark.parametrize("solver", SOLVERS)
def test_device_cuda_moves_numpy_input_and_returns_numpy(solver):
    prob = _problem("dense")
    ref = BayesianLinearRegressor(solver=solver, random_state=0).fit(prob.X, prob.y)
    est = BayesianLinearRegressor(solver=solver, random_state=0, device="cuda").fit(prob.X, prob.y)
    assert isinstance(est.coef_, np.ndarray)
    assert isinstance(est._fit_mean.coef, cp.ndarray)
    mean = est.predict(prob.X[:5])
    assert isinstance(mean, np.ndarray)
    rtol = 1e-8 if solver == "exact" else 1e-4
    assert_allclose(mean, ref.predict(prob.X[:5]), rtol=rtol, atol=rtol)


def test_random_fourier_features_on_gpu():
    rng = np.random.RandomState(0)
    Xin = rng.uniform(-2, 2, size=(300, 2))
    y = np.sin(Xin[:, 0]) * np.cos(Xin[:, 1]) + 0.1 * rng.randn(300)
    host = RandomFourierFeatures(Xin, 500, gamma=0.5, random_state=0)
    gpu = RandomFourierFeatures(cp.asarray(Xin), 500, gamma=0.5, random_state=0)
    kw = dict(solver="cg", random_state=0, solver_tol=1e-10)
    ref = BayesianLinearRegressor(**kw).fit(host, y)
    est = BayesianLinearRegressor(**kw).fit(gpu, cp.asarray(y))
    assert isinstance(est.coef_, cp.ndarray)
    assert_allclose(est.coef_.get(), ref.coef_, rtol=1e-6, atol=1e-8)


def test_out_of_memory_becomes_advice():
    # Ask for a dense d x d factorisation that cannot fit on any current GPU.
    free, _ = cp.cuda.runtime.memGetInfo()
    side = int(np.sqrt(free / 8)) + 4096
    from bayeslin.operators import FeatureOperator

    class Huge(FeatureOperator):
        shape = (side, side)
        dtype = cp.float64
        xp = None

        def matmat(self, V):
            return cp.zeros((side, V.shape[1]))

        def rmatmat(self, U):
            return cp.zeros((side, U.shape[1]))

    import array_api_compat

    op = Huge()
    op.xp = array_api_compat.array_namespace(cp.empty(0))
    with pytest.raises(MemoryError, match="solver='cg' or 'sgd'"):
        BayesianLinearRegressor(solver="exact").fit(op, cp.zeros(side))
