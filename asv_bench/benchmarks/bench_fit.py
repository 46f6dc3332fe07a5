"""Fit and predict timings and peak memory of BayesianLinearRegressor, per solver.

The data are those of ``asv_bench/bench_vs_bayesianridge.py`` (drawn from the
model itself, moderate noise), at sizes small enough that one fit takes at
most a few seconds on a 2-core CPU: two tall problems (n > d) and one wide
(n < d), plus a sparse one. A solver that raises NotImplementedError is
reported as skipped. The CuPy variants are in ``bench_gpu.py``.
"""

import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

from bayeslin import BayesianLinearRegressor

from .datasets import make_data

warnings.filterwarnings("ignore", category=ConvergenceWarning)

SOLVERS = ["exact", "cg", "sgd"]
SIZES = ["4000x400", "10000x1000", "500x2000"]


def _shape(size):
    n, d = map(int, size.split("x"))
    return n, d


def _fitted(solver, X, y):
    """Fit once; raise NotImplementedError (asv: skipped) if the solver is unavailable."""
    return BayesianLinearRegressor(solver=solver, random_state=0).fit(X, y)


class Fit:
    params = (SOLVERS, SIZES)
    param_names = ["solver", "n x d"]
    timeout = 120

    def setup(self, solver, size):
        self.X, self.y = make_data(*_shape(size))
        _fitted(solver, self.X[:50, :20], self.y[:50])  # skip early if not implemented
        self.model = BayesianLinearRegressor(solver=solver, random_state=0)

    def time_fit(self, solver, size):
        self.model.fit(self.X, self.y)

    def peakmem_fit(self, solver, size):
        self.model.fit(self.X, self.y)

    def track_n_iter(self, solver, size):
        return self.model.fit(self.X, self.y).n_iter_

    track_n_iter.unit = "evidence iterations"


class Predict:
    params = (SOLVERS, SIZES)
    param_names = ["solver", "n x d"]
    timeout = 120

    def setup(self, solver, size):
        X, y = make_data(*_shape(size))
        self.model = _fitted(solver, X, y)
        self.X_test = make_data(2000, X.shape[1], seed=1)[0]

    def time_predict(self, solver, size):
        self.model.predict(self.X_test)

    def time_predict_std(self, solver, size):
        self.model.predict(self.X_test, return_std=True)

    def peakmem_predict_std(self, solver, size):
        self.model.predict(self.X_test, return_std=True)


class SparseFit:
    """Fit on a scipy.sparse CSR matrix (1% non-zeros): centring stays implicit."""

    params = (SOLVERS, ["20000x2000"])
    param_names = ["solver", "n x d"]
    timeout = 120

    def setup(self, solver, size):
        n, d = _shape(size)
        rng = np.random.default_rng(0)
        self.X = sp.random(n, d, density=0.01, format="csr", random_state=0)
        self.y = self.X @ rng.standard_normal(d) + 0.3 * rng.standard_normal(n)
        _fitted(solver, self.X[:50], self.y[:50])  # skip early if not implemented
        self.model = BayesianLinearRegressor(solver=solver, random_state=0)

    def time_fit(self, solver, size):
        self.model.fit(self.X, self.y)

    def peakmem_fit(self, solver, size):
        self.model.fit(self.X, self.y)
