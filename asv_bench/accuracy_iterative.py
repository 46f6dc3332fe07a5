"""Accuracy of the iterative solvers against ``solver='exact'``, and their fit time against a baseline, side by side.

Default settings throughout (only ``solver`` and ``random_state`` set). Each
fit runs in a fresh subprocess, so a baseline checkout of the package (for
example the previous commit, exported with ``git archive``) can be timed in
the same run: ``--baseline PATH`` fits ``cg``/``sgd`` with the package found
at ``PATH`` too, problem by problem, and prints the time ratio.

Problems (``n < d`` with an interior evidence maximum, the family in which the
iterative path used to run away to the interpolating fixed point
``gamma -> n``, ``alpha -> inf``): ``X ~ N(0, 1)``, weights of std 0.04,
noise std 2, as ``n x d`` (at 1000 x 4000 this family has no interior
maximum: even exact interpolates, so ``bench:1000x4000`` takes
bench_vs_bayesianridge's family, weights N(0, 1) and noise std sqrt(d)); and ``poly-diabetes``, degree-3 polynomial
features of the standardised diabetes data (442 x 285, strongly collinear).

For each problem the exact fit is also compared with the fixed point of the
updates (``tol=1e-9``): BayesianRidge's stop rule (the L1 change of the
coefficients below ``tol``) stops early where the updates converge slowly,
so the default exact fit can itself be several percent from it.

Printed per fit: relative error against exact of ``alpha_``, ``lambda_``,
``effective_dim_`` and ``coef_`` (``||coef - coef_exact|| / ||coef_exact||``),
``effective_dim_se_``, the number of ConvergenceWarnings, and the fit time.

Usage::

    python asv_bench/accuracy_iterative.py                       # 200x600, 400x1000 (3 seeds), 1000x4000, poly-diabetes
    python asv_bench/accuracy_iterative.py --quick               # 200x600 and poly-diabetes, one seed
    python asv_bench/accuracy_iterative.py --baseline /tmp/base  # also time the package at /tmp/base
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

_WORKER = r"""
import json, sys, time, warnings
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from bayeslin import BayesianLinearRegressor

name, seed, solver = sys.argv[1], int(sys.argv[2]), sys.argv[3]
params = dict(solver=solver, random_state=seed)
if solver == "fixed-point":
    # exact, run to the fixed point of the updates (the default tol stops
    # early where MacKay's updates converge slowly)
    params = dict(solver="exact", tol=1e-9, max_iter=100000)
if name == "poly-diabetes":
    from sklearn.datasets import load_diabetes
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler
    X, y = load_diabetes(return_X_y=True)
    X = PolynomialFeatures(3, include_bias=False).fit_transform(StandardScaler().fit_transform(X))
elif name.startswith("bench:"):
    # bench_vs_bayesianridge's family: weights N(0, 1), noise std sqrt(d)
    n, d = map(int, name[6:].split("x"))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + np.sqrt(d) * rng.standard_normal(n)
else:
    n, d = map(int, name.split("x"))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ (0.04 * rng.standard_normal(d)) + 2.0 * rng.standard_normal(n)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", ConvergenceWarning)
    start = time.perf_counter()
    est = BayesianLinearRegressor(**params).fit(X, y)
    elapsed = time.perf_counter() - start
print(json.dumps(dict(
    alpha=est.alpha_, lam=est.lambda_, gamma=est.effective_dim_, coef=np.asarray(est.coef_).tolist(),
    se=float(getattr(est, "effective_dim_se_", float("nan"))), n_iter=int(est.n_iter_), time=elapsed,
    warnings=sum(issubclass(w.category, ConvergenceWarning) for w in caught),
)))
"""


def _fit(name, seed, solver, path):
    env = dict(os.environ, PYTHONPATH=path)
    # ``python -c`` puts the working directory first on sys.path: run in ``path``.
    out = subprocess.run(
        [sys.executable, "-c", _WORKER, name, str(seed), solver], env=env, cwd=path, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rel(a, b):
    return abs(a - b) / abs(b)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--problems", nargs="*")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--solvers", nargs="*", default=["cg", "sgd"])
    parser.add_argument("--baseline", help="path of another checkout's package root, timed side by side")
    args = parser.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if args.problems:
        plan = [(p, args.seeds or 1) for p in args.problems]
    elif args.quick:
        plan = [("200x600", 1), ("poly-diabetes", 1)]
    else:
        plan = [("200x600", 3), ("400x1000", 3), ("bench:1000x4000", 1), ("poly-diabetes", 1)]
    if args.seeds and not args.problems:
        plan = [(p, args.seeds) for p, _ in plan]

    head = f"{'problem':>14} {'seed':>4} {'solver':>6} {'alpha_':>9} {'lambda_':>9} {'eff_dim':>9} {'coef':>9} {'eff_dim_se':>10} {'warn':>4} {'iter':>5} {'time s':>8}"
    if args.baseline:
        head += f" {'base s':>8} {'ratio':>6} {'base lam':>9} {'base gam':>9} {'base coef':>9}"
    print(head)
    worst = {}
    for name, n_seeds in plan:
        for seed in range(n_seeds):
            ref = _fit(name, seed, "exact", here)
            ref_coef = np.asarray(ref["coef"])
            print(f"{name:>14} {seed:>4} {'exact':>6} {ref['alpha']:9.4g} {ref['lam']:9.4g} {ref['gamma']:9.4g} {'':>9} {'':>10} {ref['warnings']:>4} {ref['n_iter']:>5} {ref['time']:8.2f}", flush=True)
            fp = _fit(name, seed, "fixed-point", here)
            errs = [_rel(ref["alpha"], fp["alpha"]), _rel(ref["lam"], fp["lam"]), _rel(ref["gamma"], fp["gamma"]),
                    np.linalg.norm(ref_coef - np.asarray(fp["coef"])) / np.linalg.norm(fp["coef"])]
            print(f"{name:>14} {seed:>4} {'exact vs fixed point':>36} " + " ".join(f"{e:9.2e}" for e in errs) + f" {'':>10} {'':>4} {fp['n_iter']:>5}", flush=True)
            if ref["gamma"] > 0.98 * min(ref_coef.size, float(name.split(":")[-1].split("x")[0]) if "x" in name else np.inf):
                print(f"{name:>14} {seed:>4}  (no interior maximum: exact interpolates; left out of the worst case)")
            for solver in args.solvers:
                r = _fit(name, seed, solver, here)
                errs = [_rel(r["alpha"], ref["alpha"]), _rel(r["lam"], ref["lam"]), _rel(r["gamma"], ref["gamma"]),
                        np.linalg.norm(np.asarray(r["coef"]) - ref_coef) / np.linalg.norm(ref_coef)]
                if not ref["gamma"] > 0.98 * min(ref_coef.size, float(name.split(":")[-1].split("x")[0]) if "x" in name else np.inf):
                    worst[solver] = np.maximum(worst.get(solver, 0.0), errs)
                line = f"{name:>14} {seed:>4} {solver:>6} " + " ".join(f"{e:9.2e}" for e in errs)
                line += f" {r['se']:10.3g} {r['warnings']:>4} {r['n_iter']:>5} {r['time']:8.2f}"
                if args.baseline:
                    b = _fit(name, seed, solver, args.baseline)
                    line += f" {b['time']:8.2f} {r['time'] / b['time']:6.2f} {_rel(b['lam'], ref['lam']):9.2e} {_rel(b['gamma'], ref['gamma']):9.2e}"
                    line += f" {np.linalg.norm(np.asarray(b['coef']) - ref_coef) / np.linalg.norm(ref_coef):9.2e}"
                print(line, flush=True)
    print("\nworst relative error against exact (alpha_, lambda_, effective_dim_, coef_); targets 2%, 2%, 2%, 1%:")
    for solver, errs in worst.items():
        print(f"  {solver:>4}: " + "  ".join(f"{e:.2e}" for e in errs))


if __name__ == "__main__":
    main()
