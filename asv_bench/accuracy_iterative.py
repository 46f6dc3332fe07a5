"""Accuracy of the iterative solvers against ``solver='exact'``: the must-show tables of the iterative path.

Default settings throughout (only ``solver`` and ``random_state`` set). Two
tables, each fit in a fresh subprocess (so a baseline checkout of the
package, for example the previous commit exported with ``git archive``, can be
timed in the same run with ``--baseline PATH``):

1. **No runaway** (BayesianLinearRegressor). ``n < d`` problems with an
   interior evidence maximum, the family in which the iterative path used to
   run away to the interpolating fixed point ``gamma -> n``,
   ``alpha -> inf``: ``X ~ N(0, 1)``, weights of std 0.04, noise std 2 at
   200 x 600 and 400 x 1000 (the issue's); at 600 x 2000 and 1000 x 4000 that
   family has no interior maximum (even exact interpolates), so
   ``bench:n x d`` takes bench_vs_bayesianridge's family, weights N(0, 1)
   and noise std sqrt(d). Strongly collinear real features: ``poly-diabetes``
   (degree-3 polynomial features of the standardised diabetes data,
   442 x 285), ``poly-wine`` (degree 3 of wine, 178 x 559, n < d) and
   ``poly-cancer`` (degree 2 of breast_cancer, whose radius, perimeter and
   area columns are nearly collinear already, 569 x 495). Printed per fit:
   relative error of ``alpha_``, ``lambda_``, ``effective_dim_`` and
   ``coef_`` (``||coef - coef_exact|| / ||coef_exact||``) against default
   exact, and of the default exact fit against the fixed point of the
   updates (exact with ``tol=1e-9``: BayesianRidge's stop rule, the L1 change
   of the coefficients below ``tol``, stops early where the updates converge
   slowly); the iterative fits against that fixed point too (``vs fp``,
   worst of the four).
2. **Predictive std**: the worst test point's relative error of the
   weight-uncertainty variance (``std**2 - 1/alpha_``) against exact, on
   200 test points (fresh draws, or training rows and twice training rows for
   the real data). ``--laplace`` adds the linearised Laplace estimators on
   the tiny-network references of the test suite (MLPs with 6 hidden tanh
   units on 40 to 50 points: 3-class and binary classifiers, one- and
   two-output regressors; ``predict(return_std=True, include_noise=False)``
   for the regressor, the probit variances for the classifier, i.e. the
   diagonal of ``predict_logits(return_cov=True)`` centred over the classes
   for several classes) and on the digits MLP of the gallery (64-32-10, 2,410
   parameters), with one prior precision and one per layer
   (``laplace:digits-layerwise``; ``lambda_`` is then the worst layer's, and
   the exact row prints the input layer's).

Usage::

    python asv_bench/accuracy_iterative.py                       # everything below but Laplace, 3 seeds
    python asv_bench/accuracy_iterative.py --quick               # 200x600 and poly-diabetes, one seed
    python asv_bench/accuracy_iterative.py --laplace             # also the Laplace estimators
    python asv_bench/accuracy_iterative.py --problems 400x1000 --seeds 3
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

name, seed, solver = sys.argv[1], int(sys.argv[2]), sys.argv[3]
params = dict(solver=solver, random_state=seed)
if solver == "fixed-point":
    # exact, run to the fixed point of the updates (the default tol stops
    # early where MacKay's updates converge slowly)
    params = dict(solver="exact", tol=1e-9, max_iter=100000)


def poly(X, degree):
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler
    return PolynomialFeatures(degree, include_bias=False).fit_transform(StandardScaler().fit_transform(X))


def real_query(X):
    # training rows (interpolation) and twice training rows (extrapolation)
    return np.vstack([X[:100], 2.0 * X[100:200]])


def tiny_classification(n_classes):
    # tests/test_laplace.py's make_classification (n=40)
    rng = np.random.RandomState(0)
    centres = rng.randn(n_classes, 3) * 1.5
    y = np.arange(40) % n_classes
    X = centres[y] + rng.randn(40, 3)
    return X, y


def tiny_regression(n_outputs):
    # tests/test_laplace.py's make_regression (n=50)
    rng = np.random.RandomState(0)
    X = rng.uniform(-2, 2, size=(50, 2))
    Y = np.stack([np.sin(X[:, 0]) + 0.5 * X[:, 1] * k for k in range(1, n_outputs + 1)], axis=1)
    Y = Y + 0.2 * rng.randn(50, n_outputs)
    return X, (Y[:, 0] if n_outputs == 1 else Y)


def query(X):
    # tests/test_laplace.py's _query: 10 training points and 10 perturbed ones
    rng = np.random.RandomState(5)
    return np.vstack([X[:10], X[:10] + 2 * rng.randn(10, X.shape[1])])


def laplace(name):
    from sklearn.frozen import FrozenEstimator
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from bayeslin import LinearisedLaplaceClassifier, LinearisedLaplaceRegressor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if name.startswith("laplace:digits"):
            from sklearn.datasets import load_digits
            X, y = load_digits(return_X_y=True)
            X = X / 16.0
            net = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(X, y)
            Xq = np.vstack([X[:100], X[:100] + 0.5 * np.random.RandomState(5).randn(100, 64)])
        elif name.startswith("laplace:clf"):
            X, y = tiny_classification(int(name[-1]))
            net = MLPClassifier(hidden_layer_sizes=(6,), activation="tanh", max_iter=2000, random_state=0).fit(X, y)
            Xq = query(X)
        else:
            X, y = tiny_regression(int(name[-1]))
            net = MLPRegressor(hidden_layer_sizes=(6,), activation="tanh", max_iter=3000, random_state=0).fit(X, y)
            Xq = query(X)
    classifier = isinstance(net, MLPClassifier)
    cls = LinearisedLaplaceClassifier if classifier else LinearisedLaplaceRegressor
    # laplace:digits-layerwise: one prior precision per layer (its input
    # layer's gamma is 0.04 of 2,080 parameters: the hard case for samples)
    structure = "layerwise" if name.endswith("-layerwise") else "scalar"
    est = cls(FrozenEstimator(net), prior_structure=structure, **params)
    return est, X, y, Xq, classifier


with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", ConvergenceWarning)
    if name.startswith("laplace:"):
        est, X, y, Xq, classifier = laplace(name)
        start = time.perf_counter()
        est.fit(X, y)
        elapsed = time.perf_counter() - start
        if classifier:
            _, cov = est.predict_logits(Xq, return_cov=True)
            m = cov.shape[1]
            # the probit's variances: centred over the classes when there are several
            C = np.eye(m) - (1.0 / m if m > 1 else 0.0)
            var = np.einsum("ij,njk,ik->ni", C, cov, C)
        else:
            _, std = est.predict(Xq, return_std=True, include_noise=False)
            var = std**2
        # one lambda per layer with a layerwise prior; the error is the worst layer's
        lam = np.atleast_1d(est.lambda_).tolist()
        # min_side None: no interpolation corner to tell apart
        out = dict(alpha=float(getattr(est, "alpha_", 1.0)), lam=lam, gamma=est.effective_dim_,
                   coef=np.asarray(est.tangent_mode_).tolist(), min_side=None)
    else:
        from bayeslin import BayesianLinearRegressor
        if name.startswith("poly-"):
            from sklearn import datasets
            loader, degree = {"poly-diabetes": ("load_diabetes", 3), "poly-wine": ("load_wine", 3),
                              "poly-cancer": ("load_breast_cancer", 2)}[name]
            X, y = getattr(datasets, loader)(return_X_y=True)
            X = poly(X, degree)
            y = y.astype(float)
            Xq = real_query(X)
        else:
            family, shape = name.split(":") if ":" in name else ("issue", name)
            n, d = map(int, shape.split("x"))
            rng = np.random.default_rng(seed)
            X = rng.standard_normal((n, d))
            if family == "bench":
                # bench_vs_bayesianridge's family: weights N(0, 1), noise std sqrt(d)
                y = X @ rng.standard_normal(d) + np.sqrt(d) * rng.standard_normal(n)
            else:
                y = X @ (0.04 * rng.standard_normal(d)) + 2.0 * rng.standard_normal(n)
            Xq = rng.standard_normal((200, d))
        est = BayesianLinearRegressor(**params)
        start = time.perf_counter()
        est.fit(X, y)
        elapsed = time.perf_counter() - start
        _, std = est.predict(Xq, return_std=True)
        var = std**2 - 1.0 / est.alpha_
        out = dict(alpha=est.alpha_, lam=est.lambda_, gamma=est.effective_dim_, coef=np.asarray(est.coef_).tolist(),
                   min_side=int(min(X.shape)))
out.update(var=np.asarray(var).ravel().tolist(), se=float(getattr(est, "effective_dim_se_", float("nan"))),
           n_iter=int(est.n_iter_), time=elapsed,
           warnings=sum(issubclass(w.category, ConvergenceWarning) for w in caught))
print(json.dumps(out))
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
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def _errors(fit, ref):
    """Relative errors of alpha_, lambda_, effective_dim_, coef_ (L2) and the worst point's variance."""
    coef, ref_coef = np.asarray(fit["coef"]), np.asarray(ref["coef"])
    var, ref_var = np.asarray(fit["var"]), np.asarray(ref["var"])
    return [
        _rel(fit["alpha"], ref["alpha"]),
        _rel(fit["lam"], ref["lam"]),
        _rel(fit["gamma"], ref["gamma"]),
        np.linalg.norm(coef - ref_coef) / np.linalg.norm(ref_coef),
        float(np.max(np.abs(var - ref_var) / ref_var)),
    ]


def _interpolates(ref):
    """Exact itself lands in the interpolation corner (no interior maximum)."""
    return ref["min_side"] is not None and ref["gamma"] > 0.98 * ref["min_side"]


PROBLEMS = ["200x600", "400x1000", "bench:600x2000", "bench:1000x4000", "poly-diabetes", "poly-wine", "poly-cancer"]
LAPLACE = ["laplace:clf3", "laplace:clf2", "laplace:reg1", "laplace:reg2", "laplace:digits", "laplace:digits-layerwise"]
TARGETS = [0.02, 0.02, 0.02, 0.01, 0.05]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--laplace", action="store_true", help="also the linearised Laplace estimators")
    parser.add_argument("--problems", nargs="*")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--solvers", nargs="*", default=["cg", "sgd"])
    parser.add_argument("--baseline", help="path of another checkout's package root, timed side by side")
    args = parser.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if args.problems:
        names = args.problems
    elif args.quick:
        names = ["200x600", "poly-diabetes"]
    else:
        names = PROBLEMS + (LAPLACE if args.laplace else [])
    n_seeds = args.seeds or (1 if args.quick else 3)

    head = (
        f"{'problem':>16} {'seed':>4} {'solver':>6} {'alpha_':>9} {'lambda_':>9} {'eff_dim':>9} {'coef':>9} "
        f"{'worst var':>9} {'vs fp':>9} {'eff_se':>8} {'warn':>4} {'iter':>5} {'time s':>7}"
    )
    if args.baseline:
        head += f" {'base s':>7} {'ratio':>6}"
    print("relative errors against solver='exact' (default settings); 'vs fp': worst of the first four against the")
    print("fixed point of the updates; targets: alpha_, lambda_, eff_dim 2%, coef 1%, worst point's variance 5%\n")
    print(head)
    worst, worst_fp = {}, {}
    for name in names:
        # The Laplace references and the real data are fixed: the seed only seeds the solvers.
        for seed in range(n_seeds):
            ref = _fit(name, seed, "exact", here)
            fp = _fit(name, seed, "fixed-point", here)
            print(
                f"{name:>16} {seed:>4} {'exact':>6} {ref['alpha']:9.4g} {np.atleast_1d(ref['lam'])[0]:9.4g} {ref['gamma']:9.4g} "
                f"{'':>9} {'':>9} {'':>9} {'':>8} {ref['warnings']:>4} {ref['n_iter']:>5} {ref['time']:7.2f}",
                flush=True,
            )
            e = _errors(ref, fp)
            print(f"{name:>16} {seed:>4} {'vs fp':>6} " + " ".join(f"{x:9.2e}" for x in e) + f" {'':>9} {'':>8} {'':>4} {fp['n_iter']:>5}")
            skip = _interpolates(ref)
            if skip:
                print(f"{name:>16} {seed:>4}  (no interior maximum: exact interpolates; left out of the worst case)")
            for solver in args.solvers:
                r = _fit(name, seed, solver, here)
                e, e_fp = _errors(r, ref), _errors(r, fp)
                if not skip:
                    worst[solver] = np.maximum(worst.get(solver, 0.0), e)
                    worst_fp[solver] = np.maximum(worst_fp.get(solver, 0.0), e_fp)
                line = f"{name:>16} {seed:>4} {solver:>6} " + " ".join(f"{x:9.2e}" for x in e)
                line += f" {max(e_fp[:4]):9.2e} {r['se']:8.3g} {r['warnings']:>4} {r['n_iter']:>5} {r['time']:7.2f}"
                if args.baseline:
                    b = _fit(name, seed, solver, args.baseline)
                    line += f" {b['time']:7.2f} {r['time'] / b['time']:6.2f}"
                print(line, flush=True)
    labels = "alpha_     lambda_    eff_dim    coef       worst var"
    print(f"\nworst relative error over the table ({labels}); targets " + ", ".join(f"{t:.0%}" for t in TARGETS))
    for solver in worst:
        print(f"  {solver:>4} vs exact:       " + "  ".join(f"{x:.2e}" for x in worst[solver]))
        print(f"  {solver:>4} vs fixed point: " + "  ".join(f"{x:.2e}" for x in worst_fp[solver]))


if __name__ == "__main__":
    main()
