"""Where does ``solver='sgd'`` beat ``'cg'``? Fit time at equal accuracy, side by side, on the CPU.

BayesianLinearRegressor with default settings on problems built for sgd's
strengths: many rows (``n`` = 200,000 to 1,000,000) that are redundant
(``u`` distinct rows, each repeated, plus a little noise of std 0.01), with
``d`` from 50 to 500 and a condition number of ``X^T X`` set by the spread
of the column scales (``--cond``; sgd's averaging with a control variate
gains most where conjugate gradients need many iterations per evidence step
and a minibatch still sees every direction).

For each problem the table prints, per solver: fit time, evidence iterations,
the relative error of ``coef_`` and of ``lambda_`` against ``solver='exact'``
(which ``'auto'`` takes below 8,192 features on the CPU and which is printed
first for reference), and the time ratio against ``cg``. ``cg`` runs twice:
at its default ``solver_tol`` (1e-6) and at sgd's (1e-4), so that sgd is also
compared with the cheapest cg of the same solve tolerance; the accuracy
columns say what each reached.

Usage::

    python asv_bench/bench_sgd_regime.py                      # the table of docs/benchmarks.rst
    python asv_bench/bench_sgd_regime.py --n 200000 --d 50 --u 2000 --cond 1 1e3
    python asv_bench/bench_sgd_regime.py --sparse --n 400000 --d 10000   # where 'auto' takes cg

``--sparse``: CSR features with Zipf column frequencies (16 ones per row),
``min(n, d) > 8192``, where ``'auto'`` has to take an iterative solver; the
reference is ``cg`` at ``solver_tol=1e-8`` (exact is out of reach).
"""

import argparse
import time
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

from bayeslin import BayesianLinearRegressor


def make_redundant(n, d, u, cond, seed=0):
    """``n`` rows, each one of ``u`` distinct rows plus noise of std 0.01, with ``cond(X^T X)`` about ``cond``.

    The spectrum is set by column scales followed by a random rotation, so
    that no diagonal scaling (standardising the columns, a Jacobi
    preconditioner) undoes it. ``u = n``: no redundancy.
    """
    rng = np.random.default_rng(seed)
    scales = np.logspace(0, -0.5 * np.log10(cond), d)
    rotation = np.linalg.qr(rng.standard_normal((d, d)))[0]
    base = (rng.standard_normal((u, d)) * scales) @ rotation
    X = base[rng.integers(0, u, n)] if u < n else base
    X += 0.01 * rng.standard_normal((n, d)) * scales @ rotation
    y = X @ (rotation.T @ (rng.standard_normal(d) / scales)) / np.sqrt(d) + rng.standard_normal(n)
    return X, y


def make_sparse_zipf(n, d, nnz=16, seed=0):
    """CSR with ``nnz`` ones per row at columns drawn with Zipf frequencies (hashed text-like features).

    Column counts span orders of magnitude, so ``X^T X`` is ill-conditioned
    along its diagonal; ``min(n, d) > 8192`` makes ``'auto'`` take an
    iterative solver.
    """
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, d + 1)
    cols = rng.choice(d, size=n * nnz, p=p / p.sum())
    X = sp.csr_matrix((np.ones(n * nnz), cols, np.arange(0, n * nnz + 1, nnz)), shape=(n, d))
    X.sum_duplicates()
    y = X @ (rng.standard_normal(d) * 0.3) + rng.standard_normal(n)
    return X, y


def fit(X, y, **params):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        start = time.perf_counter()
        est = BayesianLinearRegressor(random_state=0, **params).fit(X, y)
        elapsed = time.perf_counter() - start
    n_warn = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return est, elapsed, n_warn


RUNS = [("exact", dict(solver="exact")), ("cg", dict(solver="cg")), ("cg 1e-4", dict(solver="cg", solver_tol=1e-4)),
        ("sgd", dict(solver="sgd"))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="*", default=[200_000, 1_000_000])
    parser.add_argument("--d", type=int, nargs="*", default=[50, 500])
    parser.add_argument("--u", type=int, nargs="*", default=[2000], help="distinct rows (0: all distinct)")
    parser.add_argument("--cond", type=float, nargs="*", default=[1.0, 1e3])
    parser.add_argument("--sparse", action="store_true", help="Zipf-frequency sparse features instead (no exact)")
    args = parser.parse_args()
    if args.sparse:
        sparse_table(args)
        return
    print(f"{'n':>9} {'d':>5} {'u':>9} {'cond':>6} {'solver':>8} {'time s':>8} {'iter':>5} {'coef err':>9} {'lam err':>9} {'warn':>4} {'/ cg':>6}")
    for n in args.n:
        for d in args.d:
            for cond, u in [(c, u) for c in args.cond for u in args.u]:
                u = n if u <= 0 else u
                X, y = make_redundant(n, d, u, cond)
                ref, cg_time = None, None
                for label, params in RUNS:
                    est, seconds, n_warn = fit(X, y, **params)
                    ref = est if ref is None else ref
                    cg_time = seconds if label == "cg" else cg_time
                    err = np.linalg.norm(est.coef_ - ref.coef_) / np.linalg.norm(ref.coef_)
                    ratio = f"{seconds / cg_time:6.2f}" if cg_time else f"{'':>6}"
                    print(
                        f"{n:>9} {d:>5} {u:>9} {cond:>6.0e} {label:>8} {seconds:8.2f} {est.n_iter_:>5} {err:9.1e} "
                        f"{abs(est.lambda_ / ref.lambda_ - 1):9.1e} {n_warn:>4} {ratio}",
                        flush=True,
                    )
                del X, y


def sparse_table(args):
    """cg against sgd where 'auto' takes an iterative solver; the reference is cg at a 100x tighter tolerance."""
    print(f"{'n':>9} {'d':>7} {'solver':>8} {'time s':>8} {'iter':>5} {'coef err':>9} {'lam err':>9} {'warn':>4} {'/ cg':>6}")
    for n in args.n:
        for d in args.d:
            X, y = make_sparse_zipf(n, d)
            ref, _, _ = fit(X, y, solver="cg", solver_tol=1e-8)
            cg_time = None
            for label, params in RUNS[1:]:
                est, seconds, n_warn = fit(X, y, **params)
                cg_time = seconds if label == "cg" else cg_time
                err = np.linalg.norm(est.coef_ - ref.coef_) / np.linalg.norm(ref.coef_)
                print(
                    f"{n:>9} {d:>7} {label:>8} {seconds:8.2f} {est.n_iter_:>5} {err:9.1e} "
                    f"{abs(est.lambda_ / ref.lambda_ - 1):9.1e} {n_warn:>4} {seconds / cg_time:6.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
