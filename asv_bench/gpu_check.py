"""The GPU check in one prepared run: the ``gpu`` tests, then the scale benchmarks.

Made for a lent GPU machine with a short, fixed budget of device time: every
step runs in its own process under a time limit taken from what is left of
``--budget`` seconds, so a step that hangs or runs long costs its own share
and no more, and the steps after it still run. What each step printed, its
exit status and time, and the figures of the benchmark steps are written to
``$OUT`` (or ``--out``):

- ``gpu_check.log``: everything every step printed, in order;
- ``gpu_check.json``: one entry per step (command, exit status, seconds,
  the rows ``bench_scale.py --json`` wrote, the last lines printed);
- ``pytest_gpu.txt``: the report of ``python -m pytest -m gpu tests``.

and a summary table is printed at the end.

Steps and their sizes (the GPU issue's targets)::

    tests       python -m pytest -m gpu tests
    bandwidth   one pass of X @ V then X.T @ P, X 1,000,000 x 4,096 float32, 17 right-hand sides
    dense       1,000,000 x 4,096 float32: exact (the reference), cg, auto
    sparse      1,000,000 x 1,000,000 hashed one-hot, 32 non-zeros per row, cg
    rff         random Fourier features, d=100,000 on n=1,000,000, cg
    laplace     LinearisedLaplaceClassifier: 1.1M-parameter MLP, 100,000 points,
                10 classes, 5 evidence steps, 16 samples, cg
    dense-sgd   the dense data again: exact (the reference) and sgd
    api-checks  scikit-learn's array-API estimator checks on CuPy and CUDA torch tensors

and, asked for by name, steps that explain those figures::

    memory        CuPy's line profile of device allocations in exact, cg and sgd fits
    products      each product of a pass alone, block widths 1-32, float32 and float64
    dense-wide    1,000,000 x 8,192 float32: exact and cg (where auto should switch)
    rff-pass      one pass of the random features over 17 right-hand sides
    laplace-rate  the Laplace fit's first evidence step capped at 40 cg iterations

Usage::

    python asv_bench/gpu_check.py                      # every step, 480 s in all
    python asv_bench/gpu_check.py --part tests,memory  # steps by name, in that order
    python asv_bench/gpu_check.py --quick --device cpu # the same steps at toy sizes on the CPU

Nothing here needs more than the package's own dependencies plus CuPy.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _steps(device, quick):
    """(name, command, time limit in seconds, JSON file the step writes or None)."""
    py = sys.executable
    scale = [py, str(HERE / "bench_scale.py"), "--device", device]
    if quick:
        n_dense, d_dense, n_sparse, n_rff, d_rff = 5_000, 200, 5_000, 2_000, 300
        laplace = ["--quick"]
    else:
        n_dense, d_dense, n_sparse, n_rff, d_rff = 1_000_000, 4_096, 1_000_000, 1_000_000, 100_000
        laplace = []
    dense = ["--case", "dense", "--n", str(n_dense), "--d", str(d_dense)]
    rff = ["--case", "rff", "--n", str(n_rff), "--d", str(d_rff), "--batch-rows", str(2**31 // (4 * d_rff))]
    # In order of what the GPU issue asks first; the later steps get what is left of the budget.
    # The steps after "api-checks" explain the figures of the first ones (not run by default).
    return [
        ("tests", [py, "-m", "pytest", "-m", "gpu", "tests", "-q", "-rfEs", "-p", "no:cacheprovider"], 100, None),
        ("bandwidth", scale + ["--case", "bandwidth", "--n", str(n_dense), "--d", str(d_dense)], 30, "bandwidth"),
        ("dense", scale + dense + ["--solvers", "cg,auto"], 70, "dense"),
        ("sparse", scale + ["--case", "sparse", "--n", str(n_sparse), "--d", str(n_sparse),
                            "--reference-samples", "0"], 65, "sparse"),
        # 2 GiB of generated features per batch: the GPU's default 256 MiB batch is
        # ~670 rows of 100,000 features, too few rows to keep the device busy.
        ("rff", scale + rff + ["--reference-samples", "0"], 65, "rff"),
        ("laplace", [py, str(HERE / "bench_laplace_scale.py"), "--device", device] + laplace, 150, None),
        ("dense-sgd", scale + dense + ["--solvers", "sgd"], 45, "dense-sgd"),
        # scikit-learn's own array-API estimator checks on CuPy and on torch tensors on CUDA.
        ("api-checks", [py, "-m", "pytest", "tests/test_estimator_checks.py", "-q", "-rfE", "-p", "no:cacheprovider",
                        "-k", "cupy or cuda"], 50, None),
        ("memory", scale + ["--case", "memory", "--n", str(n_dense), "--d", str(d_dense),
                            "--solvers", "exact,cg,sgd"], 60, "memory"),
        ("products", scale + ["--case", "products", "--n", str(n_dense), "--d", str(d_dense)], 60, "products"),
        ("dense-wide", scale + ["--case", "dense", "--n", str(n_dense), "--d", str(2 * d_dense),
                                "--solvers", "cg"], 60, "dense-wide"),
        ("rff-pass", scale + rff + ["--pass-only"], 40, "rff-pass"),
        # The first evidence step's iterations at full size: the time per iteration.
        ("laplace-rate", [py, str(HERE / "bench_laplace_scale.py"), "--device", device, "--steps", "1",
                          "--solver-max-iter", "40"] + laplace, 90, None),
    ]


def _versions():
    lines = [sys.version.split()[0]]
    for name in ["numpy", "scipy", "sklearn", "array_api_compat", "cupy"]:
        try:
            module = __import__(name)
            lines.append(f"{name} {module.__version__}")
        except Exception as exc:  # a missing package is a finding, not a crash of the check
            lines.append(f"{name}: {type(exc).__name__}: {exc}")
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        lines.append(f"GPU {props['name'].decode()} {props['totalGlobalMem'] / 2**30:.0f} GiB")
    except Exception as exc:
        lines.append(f"GPU: {type(exc).__name__}: {exc}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="all", help="comma-separated step names, or 'all'")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all steps together")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="toy sizes (to try the script on a CPU)")
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = _steps(args.device, args.quick)
    by_name = {s[0]: s for s in steps}
    if args.part == "all":
        steps = steps[: [s[0] for s in steps].index("api-checks") + 1]
    else:
        wanted = args.part.split(",")
        unknown = set(wanted) - set(by_name)
        if unknown:
            parser.error(f"unknown --part {sorted(unknown)}; steps are {list(by_name)}")
        steps = [by_name[name] for name in wanted]  # in the order asked for

    deadline = time.monotonic() + args.budget
    log = open(out / "gpu_check.log", "w")

    def say(text):
        print(text, flush=True)
        log.write(text + "\n")
        log.flush()

    results = {"versions": _versions(), "steps": []}
    say("# " + " | ".join(results["versions"]))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    for name, cmd, limit, json_name in steps:
        left = deadline - time.monotonic()
        if left < 5:
            results["steps"].append({"step": name, "skipped": "budget spent"})
            say(f"\n=== {name}: skipped, the budget is spent")
            continue
        limit = min(limit, left)
        json_path = Path("/tmp") / f"gpu_check_{json_name}.json" if json_name else None
        if json_path is not None:
            cmd = cmd + ["--json", str(json_path)]
            json_path.unlink(missing_ok=True)
        say(f"\n=== {name} (limit {limit:.0f} s): {' '.join(cmd)}")
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
            rc, text = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc = "timeout"
            text = "".join(
                part.decode() if isinstance(part, bytes) else (part or "") for part in (exc.stdout, exc.stderr)
            )
        seconds = time.monotonic() - start
        say(text.rstrip())
        say(f"--- {name}: exit {rc} after {seconds:.1f} s")
        entry = {"step": name, "command": cmd, "exit": rc, "seconds": seconds, "tail": text.splitlines()[-25:]}
        if json_path is not None and json_path.exists():
            entry["figures"] = json.loads(json_path.read_text())
        if name == "tests":
            (out / "pytest_gpu.txt").write_text(text)
        results["steps"].append(entry)
        (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))

    say("\n| step | exit | seconds | last line |")
    say("|---|---|---:|---|")
    for entry in results["steps"]:
        if "skipped" in entry:
            say(f"| {entry['step']} | skipped | | {entry['skipped']} |")
            continue
        last = next((line for line in reversed(entry["tail"]) if line.strip()), "")
        say(f"| {entry['step']} | {entry['exit']} | {entry['seconds']:.1f} | {last[:110]} |")
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
