"""The fit and predict of ``bench_fit.py`` on CuPy arrays (skipped without CuPy and a CUDA device).

Besides time, ``track_gpu_peak_bytes`` reports the bytes CuPy's memory pool
holds after a fit from an emptied pool: asv's ``peakmem_`` measures host
memory only.

CuPy input needs no configuration: the estimator validates it on the device.
"""

import warnings

from sklearn.exceptions import ConvergenceWarning

from bayeslin import BayesianLinearRegressor

from .bench_fit import SOLVERS, _fitted, _shape
from .datasets import make_data

warnings.filterwarnings("ignore", category=ConvergenceWarning)


def _cupy():
    """Return the cupy module; raise NotImplementedError (asv: skipped) without CuPy or a device."""
    try:
        import cupy
    except ImportError as exc:
        raise NotImplementedError("CuPy is not installed") from exc
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            raise NotImplementedError("no CUDA device")
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise NotImplementedError("no CUDA device") from exc
    return cupy


class FitGPU:
    """The same fit on CuPy arrays; skipped when CuPy or a CUDA device is unavailable."""

    params = (SOLVERS, ["20000x2000", "2000x20000"])
    param_names = ["solver", "n x d"]
    timeout = 300

    def setup(self, solver, size):
        self.cupy = cupy = _cupy()
        X, y = make_data(*_shape(size))
        self.X, self.y = cupy.asarray(X), cupy.asarray(y)
        _fitted(solver, self.X[:50, :20], self.y[:50])  # warm-up; skip early if not implemented
        self.model = BayesianLinearRegressor(solver=solver, random_state=0)

    def time_fit(self, solver, size):
        self.model.fit(self.X, self.y)
        self.cupy.cuda.Device().synchronize()

    def track_gpu_peak_bytes(self, solver, size):
        pool = self.cupy.get_default_memory_pool()
        pool.free_all_blocks()
        before = pool.total_bytes()
        self.model.fit(self.X, self.y)
        self.cupy.cuda.Device().synchronize()
        return pool.total_bytes() - before

    track_gpu_peak_bytes.unit = "bytes"


class PredictGPU:
    """``predict(return_std=True)`` on CuPy arrays after a CuPy fit."""

    params = (SOLVERS, ["20000x2000"])
    param_names = ["solver", "n x d"]
    timeout = 300

    def setup(self, solver, size):
        self.cupy = cupy = _cupy()
        X, y = make_data(*_shape(size))
        self.model = _fitted(solver, cupy.asarray(X), cupy.asarray(y))
        self.X_test = cupy.asarray(make_data(20000, X.shape[1], seed=1)[0])

    def time_predict_std(self, solver, size):
        self.model.predict(self.X_test, return_std=True)
        self.cupy.cuda.Device().synchronize()
