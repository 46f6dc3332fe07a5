"""How far the iterative solvers' fits land from solver='exact', with default settings.

Prints, for diabetes and the test suite's synthetic tall (n > d) and wide
(n < d) problems, the worst relative difference over five seeds of ``coef_``,
``alpha_``, ``lambda_`` and ``effective_dim_`` between ``'cg'`` / ``'sgd'``
and ``'exact'``, and the log-evidence gap at the returned hyperparameters
(how much worse they explain the data than the exact optimum, in nats).

Run: ``python asv_bench/accuracy_vs_exact.py``
"""

import os
import sys
import warnings

import numpy as np
from sklearn.datasets import load_diabetes

from bayeslin import BayesianLinearRegressor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from conftest import make_tall, make_wide  # noqa: E402  (the test suite's problems)


def log_evidence_at(X, y, alpha, lam):
    """Exact log evidence of BayesianRidge's model at ``(alpha, lam)``: the first score of an exact fit started there."""
    fit = BayesianLinearRegressor(solver="exact", alpha_init=alpha, lambda_init=lam, max_iter=1, compute_score=True)
    return float(fit.fit(X, y).scores_[0])


def main():
    warnings.simplefilter("ignore")
    problems = {
        "diabetes 442x10": load_diabetes(return_X_y=True),
        "tall 200x20": make_tall()[:2],
        "wide 60x150": make_wide()[:2],
    }
    print("| problem | solver | coef | alpha_ | lambda_ | effective_dim_ | evidence gap (nats) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, (X, y) in problems.items():
        exact = BayesianLinearRegressor(solver="exact").fit(X, y)
        best = log_evidence_at(X, y, exact.alpha_, exact.lambda_)
        for solver in ["cg", "sgd"]:
            worst = np.zeros(5)
            for seed in range(5):
                fit = BayesianLinearRegressor(solver=solver, random_state=seed).fit(X, y)
                diffs = [
                    np.linalg.norm(fit.coef_ - exact.coef_) / np.linalg.norm(exact.coef_),
                    abs(fit.alpha_ / exact.alpha_ - 1),
                    abs(fit.lambda_ / exact.lambda_ - 1),
                    abs(fit.effective_dim_ / exact.effective_dim_ - 1),
                    best - log_evidence_at(X, y, fit.alpha_, fit.lambda_),
                ]
                worst = np.maximum(worst, diffs)
            print(f"| {name} | {solver} | " + " | ".join(f"{v:.1e}" for v in worst) + " |")


if __name__ == "__main__":
    main()
