"""Scale benchmarks: dense, sparse and implicit features, on a GPU or on the CPU.

Each case builds its data on the target device, fits BayesianLinearRegressor
(posterior mean, ``--n-samples`` samples, tuned ``alpha_`` and ``lambda_``)
and prints one row per solver: wall time of ``fit`` (synchronised), peak
memory (GPU: CuPy's memory pool high-water mark; CPU: the process's resident
set, reset before the fit where Linux allows), and the fitted
hyperparameters with their difference from a reference fit.

Cases:

``dense``
    ``n x d`` Gaussian features (float32 on a GPU), ``y = X w + noise``;
    every solver, and ``auto``. The reference is ``exact``.
``bandwidth``
    One pass of the dense operator over a block of 17 right-hand sides,
    ``P = X @ V`` then ``X.T @ P``, against the memory bandwidth: the bytes
    of ``X`` read twice over the time, as a fraction of the device's peak
    (GPU: from its memory clock and bus width; CPU: not reported).
``products``
    Each product of a pass alone (``X @ V``, ``X.T @ P``, and ``X.T @ P``
    summed over row chunks) for block widths 1 to 32, float32 and float64:
    time, bandwidth and flop rate, to tell memory-bound from compute-bound.
``memory``
    (GPU) CuPy's line profile of device allocations during a fit, per
    solver in ``--solvers``: which lines hold the peak.
``sparse``
    Hashed one-hot features: every row has ``--nnz`` ones at hashed
    columns of ``d`` (a CSR matrix; cupyx on a GPU). Solver ``cg``; the
    reference is a cg fit with ``--reference-samples`` samples (default
    128, 8x the default) and a 100x tighter solver tolerance, whose
    ``effective_dim_`` the row compares with.
``rff``
    Random Fourier features of ``--p`` inputs, ``d`` of them, generated on
    the fly (:class:`bayeslin.operators.RandomFourierFeatures`); solver
    ``cg`` with the same kind of reference.

Usage::

    python asv_bench/bench_scale.py --case sparse --n 100000 --d 100000             # CPU
    python asv_bench/bench_scale.py --device cuda --case dense --n 1000000 --d 4096
    python asv_bench/bench_scale.py --device cuda --case bandwidth --n 1000000 --d 4096
    python asv_bench/bench_scale.py --device cuda --case sparse --n 1000000 --d 1000000
    python asv_bench/bench_scale.py --device cuda --case rff --n 1000000 --d 100000
"""

import argparse
import json
import os
import sys
import time
import warnings

os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from bayeslin import BayesianLinearRegressor  # noqa: E402
from bayeslin.operators import RandomFourierFeatures  # noqa: E402
from bench_vs_bayesianridge import _peak_bytes, _reset_peak, _rss_bytes  # noqa: E402  (same folder)


class Device:
    """The namespace to build data in, a synchronising clock and a peak-memory meter."""

    def __init__(self, name):
        self.gpu = name.startswith("cuda")
        if self.gpu:
            import cupy
            import cupyx.scipy.sparse

            self.xp, self.sparse = cupy, cupyx.scipy.sparse
            self.pool = cupy.get_default_memory_pool()
        else:
            self.xp, self.sparse = np, sp

    def sync(self):
        if self.gpu:
            self.xp.cuda.Device().synchronize()

    def reset_peak(self):
        if self.gpu:
            self.sync()
            # CuPy's pool keeps what it allocated: emptied first, its total is a high-water mark.
            self.pool.free_all_blocks()
            self.base = self.pool.used_bytes()
        else:
            self.method = _reset_peak()
            self.base = _rss_bytes()

    def peak_gib(self):
        if self.gpu:
            self.sync()
            return (self.pool.total_bytes() - self.base) / 2**30
        return (_peak_bytes(self.method) - self.base) / 2**30

    def peak_bandwidth(self):
        """Theoretical memory bandwidth in bytes/s (GPU), or None."""
        if not self.gpu:
            return None
        cupy = self.xp
        dev = cupy.cuda.Device()
        clock_khz = cupy.cuda.runtime.deviceGetAttribute(cupy.cuda.runtime.cudaDevAttrMemoryClockRate, dev.id)
        bus_bits = cupy.cuda.runtime.deviceGetAttribute(cupy.cuda.runtime.cudaDevAttrGlobalMemoryBusWidth, dev.id)
        return 2.0 * clock_khz * 1e3 * bus_bits / 8


def _generator(dev, seed):
    """A generator on the device: CuPy's RandomState, NumPy's Generator (both take ``dtype``)."""
    return dev.xp.random.RandomState(seed) if dev.gpu else np.random.default_rng(seed)


def dense_data(dev, n, d, dtype, seed=0):
    xp = dev.xp
    rs = _generator(dev, seed)
    X = rs.standard_normal((n, d), dtype=dtype)
    w = rs.standard_normal(d, dtype=dtype)
    f = X @ w
    y = f + float(xp.std(f)) * rs.standard_normal(n, dtype=dtype) + 1.0
    return X, y


def hashed_one_hot(dev, n, d, nnz, seed=0):
    """CSR with ``nnz`` ones per row at pseudo-random (hashed) columns, and a target from it."""
    xp = dev.xp
    rs = _generator(dev, seed)
    draw = rs.randint if dev.gpu else rs.integers
    cols = draw(0, d, size=n * nnz).astype(xp.int32)
    indptr = xp.arange(0, n * nnz + 1, nnz, dtype=xp.int32)
    data = xp.ones(n * nnz, dtype=xp.float64)
    X = dev.sparse.csr_matrix((data, cols, indptr), shape=(n, d))
    X.sum_duplicates()
    w = rs.standard_normal(d)
    f = X @ w
    y = f + float(xp.std(f)) * rs.standard_normal(n) + 1.0
    return X, y


def rff_data(dev, n, d, p, dtype, seed=0, batch_rows=None):
    xp = dev.xp
    rs = _generator(dev, seed)
    Z = rs.uniform(-2.0, 2.0, size=(n, p)).astype(dtype)
    y = xp.sin(2 * Z[:, 0]) * xp.cos(Z[:, 1 % p]) + 0.3 * rs.standard_normal(n, dtype=dtype)
    return RandomFourierFeatures(Z, n_components=d, gamma=0.5, random_state=seed, batch_rows=batch_rows), y


def timed_fit(dev, X, y, **params):
    model = BayesianLinearRegressor(random_state=0, **params)
    dev.sync()
    dev.reset_peak()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y)
    dev.sync()
    seconds = time.perf_counter() - start
    notes = "; ".join(sorted({str(w.message).split(";")[0][:70] for w in caught}))
    return model, seconds, dev.peak_gib(), notes


RECORDS = []  # one dict per printed row, written to --json


def report(label, model, seconds, peak, ref=None, notes=""):
    RECORDS.append({
        "fit": label, "seconds": seconds, "peak_gib": peak, "solver": model.solver_,
        "n_iter": int(model.n_iter_), "alpha": float(model.alpha_), "lambda": float(model.lambda_),
        "effective_dim": float(model.effective_dim_), "warnings": notes,
        "rel_diff_vs_ref": None if ref is None else {
            "alpha": abs(model.alpha_ / ref.alpha_ - 1), "lambda": abs(model.lambda_ / ref.lambda_ - 1),
            "effective_dim": abs(model.effective_dim_ / ref.effective_dim_ - 1),
            "coef": float(_rel_norm(model.coef_, ref.coef_)),
        },
    })
    row = (
        f"| {label:<14} | {seconds:8.2f} s | {peak:6.2f} GiB | {model.solver_:>5} | {model.n_iter_:3d} | "
        f"{model.alpha_:10.4g} | {model.lambda_:10.4g} | {model.effective_dim_:10.5g} |"
    )
    if ref is not None:
        diffs = [
            abs(model.alpha_ / ref.alpha_ - 1),
            abs(model.lambda_ / ref.lambda_ - 1),
            abs(model.effective_dim_ / ref.effective_dim_ - 1),
            _rel_norm(model.coef_, ref.coef_),
        ]
        row += " " + " / ".join(f"{x:.1e}" for x in diffs) + " |"
    else:
        row += " reference |" if "ref" in label else " (no reference) |"
    print(row + (f" {notes}" if notes else ""), flush=True)


def _rel_norm(a, b):
    """||a - b|| / ||b|| of two coefficient vectors on any device."""
    a, b = np.asarray(_host(a), dtype=np.float64), np.asarray(_host(b), dtype=np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _host(a):
    return a.get() if hasattr(a, "get") else a


def header():
    print("| fit            |     time |  peak mem | solver | EM | alpha_ | lambda_ | effective_dim_ | vs ref: alpha / lambda / gamma / coef |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---|")


def case_dense(dev, args):
    dtype = np.float32 if dev.gpu else np.float64
    X, y = dense_data(dev, args.n, args.d, dtype)
    header()
    # exact is the reference, so it always runs first; --solvers picks the others.
    model, seconds, peak, notes = timed_fit(dev, X, y, solver="exact", n_samples=args.n_samples)
    report("exact (ref)", model, seconds, peak, None, notes)
    ref = model
    for solver in args.solvers.split(","):
        if solver == "exact":
            continue
        model, seconds, peak, notes = timed_fit(dev, X, y, solver=solver, n_samples=args.n_samples)
        report(solver, model, seconds, peak, ref, notes)


def case_bandwidth(dev, args):
    xp = dev.xp
    dtype = np.float32 if dev.gpu else np.float64
    X, _ = dense_data(dev, args.n, args.d, dtype)
    V = xp.ones((args.d, args.n_samples + 1), dtype=dtype)
    seconds = _timed(dev, lambda: X.T @ (X @ V), reps=10)
    moved = 2 * X.nbytes  # X is read once per product; V and P are small
    rate = moved / seconds
    peak = dev.peak_bandwidth()
    copy_rate = _copy_rate(dev, X)
    frac = f"{rate / peak:.0%} of {peak / 1e9:.0f} GB/s" if peak else "peak unknown"
    if copy_rate:
        frac += f"; {rate / copy_rate:.0%} of a device-to-device copy's {copy_rate / 1e9:.0f} GB/s"
    print(f"X {args.n} x {args.d} {np.dtype(dtype).name}, k={args.n_samples + 1}: {seconds * 1e3:.2f} ms per pass, {rate / 1e9:.0f} GB/s ({frac})")
    RECORDS.append({
        "n": args.n, "d": args.d, "dtype": np.dtype(dtype).name, "k": args.n_samples + 1,
        "ms_per_pass": seconds * 1e3, "GB_per_s": rate / 1e9,
        "peak_GB_per_s": None if peak is None else peak / 1e9,
        "copy_GB_per_s": None if copy_rate is None else copy_rate / 1e9,
    })


def _timed(dev, func, reps=5):
    """Seconds per call of ``func()``, after two warm-up calls (cuBLAS picks its kernels)."""
    for _ in range(2):
        func()
    dev.sync()
    start = time.perf_counter()
    for _ in range(reps):
        func()
    dev.sync()
    return (time.perf_counter() - start) / reps


def case_products(dev, args):
    """Where the time of a pass goes: each product alone, per block width and dtype.

    ``X @ V`` and ``X.T @ P`` read ``X`` once each and do ``2 n d k`` flops,
    so at ``k`` columns a product needs ``k / 2`` flops per byte of float32
    (``k / 4`` in float64): past a width set by the device's flop rate over
    its bandwidth it is bound by arithmetic, not memory. Also timed:
    ``X.T @ P`` summed over 8 row chunks (shorter reductions for cuBLAS).
    """
    xp = dev.xp
    print("| dtype | k | X @ V ms | GB/s | TFLOP/s | X.T @ P ms | GB/s | TFLOP/s | X.T @ P in 8 chunks ms | GB/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for dtype in (np.float32, np.float64):
        X, _ = dense_data(dev, args.n, args.d, dtype)
        chunks = [X[i : i + -(-args.n // 8)] for i in range(0, args.n, -(-args.n // 8))]
        for k in (1, 4, 8, 17, 32):
            V = xp.ones((args.d, k), dtype=dtype)
            P = xp.ones((args.n, k), dtype=dtype)
            Pc = [P[i : i + c.shape[0]] for i, c in zip(range(0, args.n, chunks[0].shape[0]), chunks)]
            t_mv = _timed(dev, lambda: X @ V)
            t_rmv = _timed(dev, lambda: X.T @ P)
            t_chunk = _timed(dev, lambda: sum(c.T @ p for c, p in zip(chunks, Pc)))
            flops = 2.0 * args.n * args.d * k
            row = {"dtype": np.dtype(dtype).name, "k": k, "matmat_ms": t_mv * 1e3, "rmatmat_ms": t_rmv * 1e3,
                   "rmatmat_chunked_ms": t_chunk * 1e3, "matmat_GB_per_s": X.nbytes / t_mv / 1e9,
                   "rmatmat_GB_per_s": X.nbytes / t_rmv / 1e9, "rmatmat_chunked_GB_per_s": X.nbytes / t_chunk / 1e9,
                   "matmat_TFLOP_per_s": flops / t_mv / 1e12, "rmatmat_TFLOP_per_s": flops / t_rmv / 1e12}
            RECORDS.append(row)
            print(f"| {row['dtype']} | {k} | {t_mv * 1e3:.2f} | {row['matmat_GB_per_s']:.0f} | "
                  f"{row['matmat_TFLOP_per_s']:.1f} | {t_rmv * 1e3:.2f} | {row['rmatmat_GB_per_s']:.0f} | "
                  f"{row['rmatmat_TFLOP_per_s']:.1f} | {t_chunk * 1e3:.2f} | {row['rmatmat_chunked_GB_per_s']:.0f} |",
                  flush=True)
        del X, chunks, V, P, Pc


def case_memory(dev, args):
    """Which lines allocate device memory in a fit: CuPy's LineProfileHook, per solver."""
    from cupy.cuda.memory_hooks import LineProfileHook

    X, y = dense_data(dev, args.n, args.d, np.float32)
    for solver in args.solvers.split(","):
        dev.reset_peak()
        with LineProfileHook(max_depth=12) as hook:
            model = BayesianLinearRegressor(random_state=0, solver=solver, n_samples=args.n_samples).fit(X, y)
        print(f"\n## {solver}: peak {dev.peak_gib():.2f} GiB above X ({X.nbytes / 2**30:.2f} GiB), "
              f"{model.n_iter_} evidence steps", flush=True)
        hook.print_report()
        RECORDS.append({"solver": solver, "peak_gib": dev.peak_gib()})


def _copy_rate(dev, X):
    """Bytes read plus written per second by a device-to-device copy of ``X`` (GPU), or None."""
    if not dev.gpu:
        return None
    xp = dev.xp
    Y = xp.empty_like(X)
    seconds = _timed(dev, lambda: xp.copyto(Y, X), reps=10)
    del Y
    return 2 * X.nbytes / seconds


def case_pass(dev, args, X):
    """Seconds of one pass ``Phi.T @ (Phi @ V)`` over ``k = n_samples + 1`` columns (sparse, rff)."""
    xp = dev.xp
    d = X.shape[1]
    dtype = np.float32 if (dev.gpu and args.case == "rff") else np.float64
    V = xp.ones((d, args.n_samples + 1), dtype=dtype)
    if hasattr(X, "gram_times"):
        seconds = _timed(dev, lambda: X.gram_times(V), reps=3)
    else:
        seconds = _timed(dev, lambda: X.T @ (X @ V), reps=3)
    print(f"one pass over {args.n_samples + 1} right-hand sides: {seconds * 1e3:.1f} ms", flush=True)
    RECORDS.append({"pass_ms": seconds * 1e3, "k": args.n_samples + 1})


def case_iterative(dev, args, X, y):
    # The timed fit runs first, so that its memory peak is not hidden by the reference's.
    model, seconds, peak, notes = timed_fit(dev, X, y, solver=args.solver, n_samples=args.n_samples, solver_tol=args.solver_tol)
    ref = None
    if args.reference_samples:
        ref_fit = timed_fit(
            dev, X, y, solver="cg", n_samples=args.reference_samples, solver_tol=args.solver_tol / 100
        )
        ref = ref_fit[0]
    header()
    if ref is not None:
        report(f"reference k={args.reference_samples}", *ref_fit[:3], None, ref_fit[3])
    report(args.solver, model, seconds, peak, ref, notes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=["dense", "bandwidth", "products", "memory", "sparse", "rff"], required=True)
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda'")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=100_000)
    parser.add_argument("--nnz", type=int, default=32, help="non-zeros per row (sparse)")
    parser.add_argument("--p", type=int, default=8, help="input columns (rff)")
    parser.add_argument("--n-samples", type=int, default=16)
    parser.add_argument("--solver", default="cg")
    parser.add_argument("--solver-tol", type=float, default=None)
    parser.add_argument("--solvers", default="cg,sgd,auto", help="dense: solvers besides the exact reference")
    parser.add_argument("--batch-rows", type=int, default=None, help="rff: rows generated per batch")
    parser.add_argument("--pass-only", action="store_true", help="sparse, rff: time one pass, no fit")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument(
        "--reference-samples", type=int, default=128,
        help="samples of the high-accuracy reference fit (0: none)",
    )
    args = parser.parse_args(argv)
    dev = Device(args.device)
    print(f"# {args.case} on {args.device}: n={args.n} d={args.d} n_samples={args.n_samples} ({sys.version.split()[0]})")
    if args.case == "dense":
        case_dense(dev, args)
    elif args.case == "bandwidth":
        case_bandwidth(dev, args)
    elif args.case == "products":
        case_products(dev, args)
    elif args.case == "memory":
        case_memory(dev, args)
    else:
        if args.solver_tol is None:
            args.solver_tol = 1e-4 if (dev.gpu and args.case == "rff") else 1e-6
        if args.case == "sparse":
            X, y = hashed_one_hot(dev, args.n, args.d, args.nnz)
        else:
            X, y = rff_data(
                dev, args.n, args.d, args.p, np.float32 if dev.gpu else np.float64, batch_rows=args.batch_rows
            )
        if args.pass_only:
            case_pass(dev, args, X)
        else:
            case_iterative(dev, args, X, y)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"case": args.case, "args": vars(args), "rows": RECORDS}, f, indent=1)


if __name__ == "__main__":
    main()
