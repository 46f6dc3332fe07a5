"""Dask fits against in-memory fits of the same data and seed: the largest relative difference.

For every solver, dense and sparse (scipy.sparse) chunks, with and without
sample weights, on Dask's threaded scheduler and on a LocalCluster of 2
worker processes: the largest of the relative differences of ``coef_``
(to its largest entry), ``alpha_``, ``lambda_`` and ``effective_dim_``.
The iterative solvers draw the same random numbers as in memory, so all
differences are rounding.

Usage::

    python asv_bench/accuracy_dask.py
"""

import os
import sys

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bayeslin import BayesianLinearRegressor  # noqa: E402

CHUNK = 70
SOLVER_KW = {"exact": {}, "cg": {}, "sgd": {"batch_size": 64, "solver_max_iter": 20000}}


def make_data(n=200, d=8, sparse=False, seed=0):
    rng = np.random.RandomState(seed)
    if sparse:
        X = sp.random(n, d, density=0.4, format="csr", random_state=rng, data_rvs=lambda k: rng.randn(k) + 2.0)
        y = np.asarray(X @ rng.randn(d)).ravel() + 0.5 + rng.randn(n)
    else:
        X = rng.randn(n, d) * rng.uniform(0.5, 2.0, size=d) + rng.uniform(-1, 1, size=d)
        y = X @ (0.5 * rng.randn(d)) + 3.0 + rng.randn(n)
    return X, y, rng.uniform(0.2, 3.0, size=n)


def to_dask(a):
    import dask.array as da

    if sp.issparse(a):
        return da.from_array(a, chunks=(CHUNK, a.shape[1]), asarray=False)
    return da.from_array(a, chunks=(CHUNK,) + a.shape[1:])


def max_rel_diff(a, b):
    return max(
        np.max(np.abs(a.coef_ - b.coef_)) / np.max(np.abs(a.coef_)),
        abs(a.alpha_ / b.alpha_ - 1),
        abs(a.lambda_ / b.lambda_ - 1),
        abs(a.effective_dim_ / b.effective_dim_ - 1),
    )


def main():
    import dask
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, Client(
        cluster
    ):
        for scheduler in ("threads", "distributed"):
            for sparse in (False, True):
                for solver in ("exact", "cg", "sgd"):
                    for weighted in (False, True):
                        X, y, w = make_data(sparse=sparse)
                        sw = w if weighted else None
                        kw = dict(solver=solver, random_state=0, **SOLVER_KW[solver])
                        ref = BayesianLinearRegressor(**kw).fit(X, y, sample_weight=sw)
                        config = {"scheduler": "threads"} if scheduler == "threads" else {}
                        with dask.config.set(config):
                            got = BayesianLinearRegressor(**kw).fit(
                                to_dask(X), to_dask(y), sample_weight=None if sw is None else to_dask(sw)
                            )
                        print(
                            f"{scheduler:<11} {'sparse' if sparse else 'dense':<6} {solver:<5} "
                            f"{'weighted' if weighted else 'unweighted':<10} max rel diff {max_rel_diff(ref, got):.1e}"
                        )


if __name__ == "__main__":
    sys.exit(main())
