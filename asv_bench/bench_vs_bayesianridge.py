"""Side-by-side benchmark of bayeslin.BayesianLinearRegressor against sklearn's BayesianRidge.

For every problem size and every method, a fresh Python subprocess generates
the data (same seed for every method, so every method sees the same X and y),
fits once, and reports:

* fit time: wall-clock seconds around ``fit(X, y)`` (input validation included
  for both libraries);
* peak memory: the process's peak resident set size during the fit minus its
  resident set size just before the fit (after data generation). On Linux the
  kernel's high-water mark (VmHWM) is reset through ``/proc/self/clear_refs``
  right before the fit and read from ``/proc/self/status`` right after, so
  the peak is exact and covers BLAS/LAPACK workspace too; elsewhere
  ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is used (the peak over the
  whole process, so it can only over-state the fit's increment);
* agreement with BayesianRidge: ``max |coef - coef_BR| / max |coef_BR|`` and
  the ratios of ``alpha_`` and ``lambda_``.

The data come from the model itself: standard Gaussian features
``X_ij ~ N(0, 1)``, weights ``w_j ~ N(0, 1)``, an offset of 1 and Gaussian
noise whose standard deviation is ``--noise`` (default 1) times that of the
signal ``X w`` (``sqrt(d)``): moderate noise, so the evidence has an interior
maximum (``alpha_`` and ``lambda_`` land within a few percent of the true
``1 / (noise^2 d)`` and 1, and the effective dimension well inside
``(0, min(n, d))``), which BayesianRidge reaches from its default start.
(With weights of variance ``1/d`` instead, BayesianRidge's default start
``lambda = 1`` runs to the interpolating solution ``alpha_ -> inf`` when
``n < d``: not a useful comparison.)

Timings are wall-clock on a possibly shared machine: the process CPU time
(all threads) and the 1-minute load average at the start of each fit are
printed alongside; a load above the core count means other work competed.

Usage::

    python asv_bench/bench_vs_bayesianridge.py                 # the issue's targets (minutes)
    python asv_bench/bench_vs_bayesianridge.py --quick         # small sizes, a smoke test
    python asv_bench/bench_vs_bayesianridge.py --sizes 2000x10000 --methods auto exact
    python asv_bench/bench_vs_bayesianridge.py --sizes 20000x5000 --methods cg --profile

Methods: ``BayesianRidge`` and bayeslin's solvers ``auto``, ``exact``, ``cg``
and ``sgd``. Agreement is measured against BayesianRidge when it is run, else
against bayeslin's ``exact``.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmarks.datasets import make_data  # noqa: E402  (the data the asv benchmarks use)

DEFAULT_SIZES = ["2000x10000", "20000x5000"]
QUICK_SIZES = ["300x1000", "2000x300"]
METHODS = ["BayesianRidge", "auto", "exact", "cg", "sgd"]
# (n, d): (minimum speed-up over BayesianRidge, whether peak memory must be lower)
TARGETS = {(2000, 10000): (20.0, False), (20000, 5000): (3.0, True)}


# --------------------------------------------------------------------------
# Worker: one fit in a fresh process.
# --------------------------------------------------------------------------


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak():
    """Reset the kernel's peak-RSS mark; return the method used to read it back."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM"
    except OSError:
        return "ru_maxrss"


def _rss_bytes():
    try:
        return 1024 * _status_kib("VmRSS")
    except (OSError, KeyError):
        import psutil

        return psutil.Process().memory_info().rss


def _peak_bytes(method):
    if method == "VmHWM":
        return 1024 * _status_kib("VmHWM")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else 1024 * peak


def make_estimator(method, seed):
    if method == "BayesianRidge":
        from sklearn.linear_model import BayesianRidge

        return BayesianRidge()
    from bayeslin import BayesianLinearRegressor

    return BayesianLinearRegressor(solver=method, random_state=seed)


def worker(args):
    X, y = make_data(args.n, args.d, args.seed, args.noise)
    model = make_estimator(args.method, args.seed)
    out = {"method": args.method, "load": os.getloadavg()[0]}
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    rss_before = _rss_bytes()
    peak_method = _reset_peak()
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if profiler is not None:
                profiler.enable()
            model.fit(X, y)
            if profiler is not None:
                profiler.disable()
    except NotImplementedError:
        out["error"] = "not implemented"
        print("RESULT " + json.dumps(out), flush=True)
        return
    out["time"] = time.perf_counter() - start
    out["cpu_time"] = time.process_time() - cpu_start
    out["peak_increment"] = _peak_bytes(peak_method) - rss_before
    out["peak_method"] = peak_method
    out["rss_data"] = rss_before
    out["alpha"] = float(model.alpha_)
    out["lambda"] = float(model.lambda_)
    out["n_iter"] = int(model.n_iter_)
    out["solver"] = getattr(model, "solver_", "svd")
    out["effective_dim"] = getattr(model, "effective_dim_", None)
    out["warnings"] = sorted({f"{type(w.message).__name__}: {str(w.message)[:120]}" for w in caught})
    np.save(args.coef_file, model.coef_)
    if profiler is not None:
        import pstats

        print(f"--- cProfile of {args.method} fit at {args.n}x{args.d} (top {args.profile_top} by cumulative time)")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile_top)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile_top)
    print("RESULT " + json.dumps(out), flush=True)


# --------------------------------------------------------------------------
# Driver: one subprocess per (size, method), then the table.
# --------------------------------------------------------------------------


def run_one(n, d, method, args, tmpdir):
    seed, timeout, profile = args.seed, args.timeout, args.profile
    coef_file = os.path.join(tmpdir, f"coef_{n}x{d}_{method}.npy")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--n", str(n), "--d", str(d)]
    cmd += ["--method", method, "--seed", str(seed), "--noise", str(args.noise), "--coef-file", coef_file]
    cmd += ["--profile-top", str(args.profile_top)]
    if profile and method != "BayesianRidge":
        cmd.append("--profile")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"method": method, "error": f"timed out after {timeout}s"}
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
        elif profile:
            print(line)
    if result is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"method": method, "error": f"failed: {tail}"}
    if "error" not in result:
        result["coef"] = np.load(coef_file)
    return result


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def print_table(rows):
    header = [
        "n x d", "method", "solver_", "fit time (s)", "speed-up vs BR", "CPU time (s)", "peak RSS incr. (GB)",
        "mem. vs BR", "n_iter_", "alpha_ / BR", "lambda_ / BR", "coef rel. diff", "load",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|")
    for size, results in rows:
        ref = results.get("BayesianRidge") or results.get("exact")
        ref = ref if ref is not None and "error" not in ref else None
        br = results.get("BayesianRidge")
        br = br if br is not None and "error" not in br else None
        for method, r in results.items():
            name = method if method == "BayesianRidge" else f"bayeslin {method}"
            if "error" in r:
                print(f"| {size} | {name} | - | {r['error']} |" + " |" * (len(header) - 4))
                continue
            speed = br["time"] / r["time"] if br else None
            mem = r["peak_increment"] / br["peak_increment"] if br and br["peak_increment"] > 0 else None
            if ref is not None:
                a_ratio, l_ratio = r["alpha"] / ref["alpha"], r["lambda"] / ref["lambda"]
                diff = np.max(np.abs(r["coef"] - ref["coef"])) / np.max(np.abs(ref["coef"]))
            else:
                a_ratio = l_ratio = diff = None
            cells = [
                size, name, r["solver"], f"{r['time']:.2f}", _fmt(speed, ".1f") + ("x" if speed else ""),
                f"{r['cpu_time']:.1f}",
                f"{r['peak_increment'] / 1e9:.2f}", _fmt(mem, ".2f"), str(r["n_iter"]),
                _fmt(a_ratio, ".4f"), _fmt(l_ratio, ".4f"), _fmt(diff, ".1e"), f"{r['load']:.1f}",
            ]
            print("| " + " | ".join(cells) + " |")


def check_targets(rows):
    lines = []
    for size, results in rows:
        n, d = map(int, size.split("x"))
        if (n, d) not in TARGETS:
            continue
        min_speed, less_memory = TARGETS[(n, d)]
        br, auto = results.get("BayesianRidge"), results.get("auto")
        if not br or not auto or "error" in br or "error" in auto:
            continue
        speed = br["time"] / auto["time"]
        ok = speed >= min_speed
        line = f"{size}: auto ({auto['solver']}) is {speed:.1f}x faster (target >= {min_speed:g}x)"
        if less_memory:
            mem_ok = auto["peak_increment"] < br["peak_increment"]
            ok = ok and mem_ok
            line += (
                f", peak RSS increment {auto['peak_increment'] / 1e9:.2f} GB vs "
                f"{br['peak_increment'] / 1e9:.2f} GB (target: less)"
            )
        lines.append(("MET    " if ok else "MISSED ") + line)
    return lines


def describe_machine():
    import sklearn

    try:
        import bayeslin

        bl_version = bayeslin.__version__
    except ImportError:
        bl_version = "not installed"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = ""
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads)" for i in threadpool_info())
    except ImportError:
        pass
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        git = ["git", "-C", here]
        head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--", "../bayeslin"], capture_output=True, text=True)
        bl_version += f" (git {head or '?'}{', bayeslin/ modified' if dirty.stdout.strip() else ''})"
    except OSError:
        pass
    return (
        f"{cpu}; {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores; Python {platform.python_version()}; numpy {np.__version__}; "
        f"scikit-learn {sklearn.__version__}; bayeslin {bl_version}; BLAS: {blas}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", help=f"NxD problem sizes (default: {' '.join(DEFAULT_SIZES)})")
    parser.add_argument("--quick", action="store_true", help=f"small sizes ({' '.join(QUICK_SIZES)}) for a smoke test")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS, help="what to fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=1.0, help="noise std / signal std (default 1)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed for one fit")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of every bayeslin fit")
    parser.add_argument("--profile-top", type=int, default=25)
    # Internal: the single-fit worker.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--d", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--coef-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return

    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    print(f"# bayeslin vs BayesianRidge\n\n{describe_machine()}\n")
    print(
        "Each fit runs in a fresh subprocess; peak RSS increment = peak resident memory during fit "
        "minus resident memory after data generation (kernel high-water mark VmHWM, reset before the fit).\n",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for size in sizes:
            n, d = map(int, size.lower().split("x"))
            results = {}
            for method in args.methods:
                r = run_one(n, d, method, args, tmpdir)
                results[method] = r
                status = r.get("error") or (
                    f"{r['time']:.2f}s, peak +{r['peak_increment'] / 1e9:.2f} GB, n_iter_ {r['n_iter']}, "
                    f"solver_ {r['solver']}, load {r['load']:.1f}"
                )
                for w in r.get("warnings", []):
                    status += f"\n    {w}"
                print(f"  {n}x{d} {method}: {status}", file=sys.stderr, flush=True)
            rows.append((f"{n}x{d}", results))
    print()
    print_table(rows)
    targets = check_targets(rows)
    if targets:
        print()
        for line in targets:
            print(line)


if __name__ == "__main__":
    main()
