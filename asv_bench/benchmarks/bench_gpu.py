"""The fit of ``bench_fit.py`` on CuPy arrays (skipped without CuPy and a CUDA device).

CuPy input goes through scikit-learn's array API dispatch; ``__init__.py``
sets the ``SCIPY_ARRAY_API=1`` that this needs before SciPy is imported.
"""

import warnings

from sklearn.exceptions import ConvergenceWarning

from bayeslin import BayesianLinearRegressor

from .bench_fit import SOLVERS, _fitted, _shape
from .datasets import make_data

warnings.filterwarnings("ignore", category=ConvergenceWarning)


class FitGPU:
    """The same fit on CuPy arrays; skipped when CuPy or a CUDA device is unavailable."""

    params = (SOLVERS, ["20000x2000", "2000x20000"])
    param_names = ["solver", "n x d"]
    timeout = 300

    def setup(self, solver, size):
        try:
            import cupy
        except ImportError as exc:
            raise NotImplementedError("CuPy is not installed") from exc
        try:
            if cupy.cuda.runtime.getDeviceCount() == 0:
                raise NotImplementedError("no CUDA device")
        except cupy.cuda.runtime.CUDARuntimeError as exc:
            raise NotImplementedError("no CUDA device") from exc
        import sklearn

        self.cupy = cupy
        X, y = make_data(*_shape(size))
        self.X, self.y = cupy.asarray(X), cupy.asarray(y)
        self.config = sklearn.config_context(array_api_dispatch=True)
        self.config.__enter__()
        try:
            _fitted(solver, self.X[:50, :20], self.y[:50])  # warm-up; skip early if not implemented
        except NotImplementedError:
            self.teardown(solver, size)
            raise
        self.model = BayesianLinearRegressor(solver=solver, random_state=0)

    def teardown(self, solver, size):
        # asv calls teardown after a skipped setup too.
        config, self.config = getattr(self, "config", None), None
        if config is not None:
            config.__exit__(None, None, None)

    def time_fit(self, solver, size):
        self.model.fit(self.X, self.y)
        self.cupy.cuda.Device().synchronize()
