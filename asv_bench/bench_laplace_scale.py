"""Scale run of LinearisedLaplaceClassifier: a >= 1M-parameter MLP, n >= 100,000 points, 10 classes.

Usage::

    python asv_bench/bench_laplace_scale.py --device cuda            # the full size, on a GPU (CuPy)
    python asv_bench/bench_laplace_scale.py --quick                   # a reduced size on the CPU
    python asv_bench/bench_laplace_scale.py --n 20000 --hidden 512 512 --solver sgd

The data are synthetic: 10 Gaussian classes in 128 dimensions whose class
means lie close together, so the problem is neither trivial nor separable.
The network (default two hidden layers of 1000 relu units:
128*1000 + 1000 + 1000*1000 + 1000 + 1000*10 + 10 = 1,140,010 parameters)
is trained only briefly by scikit-learn on a subsample (``--train-n`` points,
``--train-epochs`` epochs): this script measures the Laplace inference, and
the network only needs to be a plausible, partially trained MAP. It is then
wrapped in FrozenEstimator and the full fit runs on all ``--n`` points:
``--steps`` evidence steps (5) with ``--n-samples`` posterior samples (16)
solved alongside the mode by ``--solver`` (cg or sgd), in float32, each
solve to a relative residual of ``--solver-tol`` (1e-4: the samples only feed
a Monte Carlo estimate of the effective dimension, and the iterations are
what a full-size fit pays for).

Printed: the sizes, the fit time (and the time per evidence step, and the
process's CPU time, a steadier measure on a shared machine), the tuned prior
precision and effective dimension, the passes over the data (products with
``H`` of ``n_samples + 1`` columns, read from the verbose output and
``last_solve_``), the solver's last residual,
and the peak memory: the CuPy memory pool's peak on a GPU, the process's
peak resident set size on a CPU.
"""

import argparse
import contextlib
import io
import re
import resource
import sys
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.neural_network import MLPClassifier

from bayeslin import LinearisedLaplaceClassifier


def make_data(n, n_features=128, n_classes=10, seed=0):
    rng = np.random.RandomState(seed)
    centres = rng.randn(n_classes, n_features) * 0.35
    y = rng.randint(0, n_classes, size=n)
    X = (centres[y] + rng.randn(n, n_features)).astype(np.float32)
    return X, y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="reduced CPU size: n=2000, hidden 64 64")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--hidden", type=int, nargs="+", default=[1000, 1000])
    parser.add_argument("--solver", choices=["cg", "sgd"], default="cg")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--n-samples", type=int, default=16)
    parser.add_argument("--solver-tol", type=float, default=1e-4)
    parser.add_argument("--solver-max-iter", type=int, default=None)
    parser.add_argument("--train-n", type=int, default=10_000)
    parser.add_argument("--train-epochs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.hidden, args.train_n = 2000, [64, 64], 2000

    X, y = make_data(args.n)
    net = MLPClassifier(
        hidden_layer_sizes=tuple(args.hidden), max_iter=args.train_epochs, batch_size=256, random_state=0
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(X[: args.train_n], y[: args.train_n])
    train_time = time.perf_counter() - t0
    d = sum(c.size for c in net.coefs_) + sum(b.size for b in net.intercepts_)
    print(
        f"n={args.n}  classes=10  hidden={args.hidden}  parameters={d:,}  device={args.device}  "
        f"solver={args.solver}  samples={args.n_samples}  evidence steps={args.steps}"
    )
    print(f"network: {train_time:.1f} s of training on {args.train_n} points, train acc "
          f"{net.score(X[: args.train_n], y[: args.train_n]):.3f}")

    pool = None
    if args.device == "cuda":
        import cupy

        pool = cupy.get_default_memory_pool()
        cupy.cuda.Device().synchronize()

    clf = LinearisedLaplaceClassifier(
        FrozenEstimator(net),
        solver=args.solver,
        n_samples=args.n_samples,
        max_iter=args.steps,
        tol=1e-12,  # run exactly `steps` evidence steps
        solver_tol=args.solver_tol,
        solver_max_iter=args.solver_max_iter,
        device=args.device,
        random_state=0,
        verbose=True,
    )
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    log = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(log):
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(X, y)
    cpu_time = time.process_time() - cpu0
    print(log.getvalue(), end="")
    if pool is not None:
        import cupy

        cupy.cuda.Device().synchronize()
    fit_time = time.perf_counter() - t0
    last = clf.last_solve_
    # Passes over the data (products with H, k = n_samples + 1 columns each):
    # the verbose line of every evidence step, and the final solve.
    passes = sum(float(p) for p in re.findall(r"\((\d+) passes\)", log.getvalue())) + last.get("passes", last["n_iter"])
    print(
        f"fit: {fit_time:.1f} s ({fit_time / (args.steps + 1):.1f} s per solve; {cpu_time:.1f} s CPU), "
        f"lambda={clf.lambda_:.4g}, effective dim={clf.effective_dim_:.1f} +- {clf.effective_dim_se_:.1f}, "
        f"passes over the data={passes:.0f}, last solve: {last['n_iter']} iterations, max rel. residual "
        f"{last['residual']:.1e}"
    )
    for w in caught:
        print(f"  warning: {w.message}")
    if pool is not None:
        print(f"peak GPU memory (CuPy pool): {pool.total_bytes() / 2**30:.2f} GiB")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(f"peak host memory (RSS): {peak_rss:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
