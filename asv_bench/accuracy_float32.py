"""How much float32 costs: each solver's fit in float32 against the same fit in float64.

On a GPU bayeslin keeps float32 input in float32. This script measures what
that does to the results without a GPU: array-api-strict's second device
stands in for it (the same array-API code path, float32 arithmetic on the
host BLAS), and every fit is compared with the float64 fit of the same data
and seed. cuBLAS rounds differently from the host BLAS but with the same
unit roundoff, so the figures carry over in size, not digit for digit.

Columns: relative 2-norm error of ``coef_``, relative errors of ``alpha_``,
``lambda_`` and ``effective_dim_``, and the relative RMS difference of the
predictive standard deviation on the training inputs.

Usage::

    python asv_bench/accuracy_float32.py
"""

import os
import warnings

os.environ.setdefault("SCIPY_ARRAY_API", "1")

import array_api_strict as xps  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402

import bayeslin.linear_model as linear_model  # noqa: E402
from bayeslin import BayesianLinearRegressor  # noqa: E402


def to_numpy(a):
    """A host copy of an array of any array-API library (CuPy through ``.get()``)."""
    return np.asarray(a.get() if hasattr(a, "get") else a)

DEVICE = xps.Device("device1")


def problems():
    yield "diabetes 442x10", *load_diabetes(return_X_y=True)
    rng = np.random.RandomState(0)
    for n, d in [(5000, 200), (500, 2000)]:
        X = rng.randn(n, d) * rng.uniform(0.5, 2.0, size=d) + rng.uniform(-1, 1, size=d)
        w = rng.randn(d)
        f = X @ w
        yield f"synthetic {n}x{d}", X, f + f.std() * rng.randn(n) + 3.0


def main():
    linear_model.keeps_float32 = lambda xp, device: True  # the strict device plays a GPU
    print("| problem | solver | coef_ | alpha_ | lambda_ | effective_dim_ | predictive std |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, X, y in problems():
        for solver in ["exact", "cg", "sgd"]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = BayesianLinearRegressor(solver=solver, random_state=0).fit(X, y)
                est = BayesianLinearRegressor(solver=solver, random_state=0).fit(
                    xps.asarray(X, dtype=xps.float32, device=DEVICE), xps.asarray(y, device=DEVICE)
                )
            coef = to_numpy(est.coef_).astype(np.float64)
            std = to_numpy(est.predict(xps.asarray(X, dtype=xps.float32, device=DEVICE), return_std=True)[1])
            ref_std = ref.predict(X, return_std=True)[1]
            row = [
                np.linalg.norm(coef - ref.coef_) / np.linalg.norm(ref.coef_),
                abs(est.alpha_ / ref.alpha_ - 1),
                abs(est.lambda_ / ref.lambda_ - 1),
                abs(est.effective_dim_ / ref.effective_dim_ - 1),
                np.sqrt(np.mean((std - ref_std) ** 2)) / np.sqrt(np.mean(ref_std**2)),
            ]
            print(f"| {name} | {solver} | " + " | ".join(f"{v:.1e}" for v in row) + " |", flush=True)


if __name__ == "__main__":
    main()
