"""bayeslin's linearised Laplace against laplace-torch on the same trained networks.

MLPs (64 inputs, two hidden layers of width h, 10 classes) of about 10,000,
100,000 and 1,000,000 parameters (``--widths 70 280 960``) are trained once
each with Adam (120 epochs, weight decay 1e-2: training accuracy above 99%
and held-out NLL at its plateau) on a synthetic 10-class problem (2,000
training and 1,000 held-out points), then given a posterior by:

- bayeslin ``LinearisedLaplaceClassifier`` over all weights (``solver='cg'``,
  16 samples, evidence-tuned prior, at most 10 evidence steps, probit link),
  and over the last layer only (``parameters=`` the last ``nn.Linear``; its
  few hundred to ten thousand weights take the ``auto`` solver);
- laplace-torch ``full`` and ``kron`` GGN over all weights, and ``full`` over
  the last layer, each with its prior precision tuned by marginal likelihood
  (``optimize_prior_precision(method='marglik')``) and the GLM predictive with
  the probit link.

Every (network, method) runs in a fresh subprocess so that its peak memory
(max RSS) is its own; time covers fit, prior tuning and test predictions,
as wall clock and as the process's CPU time (all its threads: on a shared
machine the wall clock mostly measures the other jobs).
``full`` is skipped above ``--full-max`` parameters (its d x d matrix).
bayeslin's fits run with ``verbose=True``: every evidence step's prior
precision, effective dimension, CG iterations and elapsed time go to the
subprocess's log, and a method that times out or fails prints its last
lines, so a run cut short still says how far it got. ``--methods`` runs a
subset, ``--cache DIR`` keeps the trained networks for later runs, and every
row carries the 1-minute load average when it started.

laplace-torch is an optional benchmark dependency that does not install
beside torch 2.13's CPU wheel with its declared dependencies (it asks for
torchvision, which pulls another torch); without torchvision it runs:

    pip install --no-deps laplace-torch==0.3 asdfghjkl==0.1a4 backpack-for-pytorch \\
        curvlinops-for-pytorch einops unfoldNd einconv linear_operator opt_einsum \\
        torchmetrics lightning-utilities
    python asv_bench/bench_vs_laplace_torch.py [--widths 80 200 440]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def data():
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=3000, n_features=64, n_informative=24, n_redundant=8, n_classes=10, n_clusters_per_class=2,
        class_sep=1.5, random_state=0,
    )
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    return X[:2000], y[:2000], X[2000:], y[2000:]


def make_net(width):
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))


def train(width, path, epochs=120):
    import torch

    X, y, _, _ = data()
    net = make_net(width)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-2)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(Xt), generator=gen).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx]).backward()
            opt.step()
    torch.save(net.state_dict(), path)
    with torch.no_grad():
        return float((net(Xt).argmax(1) == yt).float().mean())


def metrics(p, y):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1)
    nll = float(-np.mean(np.log(p[np.arange(len(y)), y])))
    conf, pred = p.max(1), p.argmax(1)
    bins = np.minimum((conf * 15).astype(int), 14)
    ece = sum((bins == b).mean() * abs((pred[bins == b] == y[bins == b]).mean() - conf[bins == b].mean())
              for b in range(15) if np.any(bins == b))
    return nll, float(ece), float((pred == y).mean())


def run_one(width, path, method, float32=False):
    import resource
    import warnings

    import torch

    X, y, Xte, yte = data()
    net = make_net(width)
    net.load_state_dict(torch.load(path))
    net.eval()
    d = sum(p.numel() for p in net.parameters())
    extra = {}
    start, start_cpu = time.perf_counter(), time.process_time()
    if method == "network":
        with torch.no_grad():
            p = torch.softmax(net(torch.as_tensor(Xte)), 1).numpy()
    elif method.startswith("bayeslin"):
        from bayeslin import LinearisedLaplaceClassifier
        from bayeslin.networks import TorchModule

        last = method == "bayeslin last-layer"
        # Float64 products on a CPU by default; --float32 is laplace-torch's precision.
        module = TorchModule(net, dtype=torch.float32 if float32 else None)
        clf = LinearisedLaplaceClassifier(module, solver="auto" if last else "cg", n_samples=16,
                                          solver_tol=1e-4, max_iter=10, random_state=0,
                                          parameters=["4"] if last else None, verbose=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(X, y)
        p = clf.predict_proba(Xte)
        extra = {"steps": clf.n_iter_, "solver": clf.solver_, "lambda": float(np.mean(clf.lambda_)),
                 "cg_last": None if clf.last_solve_ is None else clf.last_solve_["n_iter"]}
    else:
        from laplace import Laplace

        subset, structure = {"lt full": ("all", "full"), "lt kron": ("all", "kron"),
                             "lt last-layer": ("last_layer", "full")}[method]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.as_tensor(X), torch.as_tensor(y)), batch_size=256)
        la = Laplace(net, "classification", subset_of_weights=subset, hessian_structure=structure)
        la.fit(loader)
        la.optimize_prior_precision(method="marglik", pred_type="glm", link_approx="probit")
        # Its GLM predictive forms the Jacobian of a batch, (rows, 10, d) in
        # float32, and peaks at about 3.5 times that (4.1 GiB for 25 rows at
        # 994,570 parameters): 250 rows there need about 35 GiB, which is
        # what made it fail for memory.
        rows = max(1, min(250, 2**30 // (4 * 10 * d)))
        p = torch.cat([la(torch.as_tensor(Xte[i : i + rows]), pred_type="glm", link_approx="probit")
                       for i in range(0, len(Xte), rows)]).detach().numpy()
        extra = {"predict_rows": rows}
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    nll, ece, acc = metrics(p, yte)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"d": d, "time": elapsed, "cpu": cpu, "peak_gib": peak, "nll": nll, "ece": ece, "acc": acc,
                      **extra}))


METHODS = ["network", "bayeslin cg", "bayeslin last-layer", "lt kron", "lt last-layer", "lt full"]


def run_method(width, path, method, d, timeout, env, log_dir, float32=False):
    """Run one (network, method) in a subprocess; print its row, or how far it got."""
    load = os.getloadavg()[0]
    log = os.path.join(log_dir, f"{width}-{method.replace(' ', '_')}.log")
    with open(log, "w") as out:
        flags = ["--float32"] if float32 else []
        proc = subprocess.Popen([sys.executable, __file__, "--one", str(width), path, method, *flags], env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
    with open(log) as f:
        lines = f.read().splitlines()
    results = [line for line in lines if line.startswith("{")]
    if rc != 0 or not results:
        what = f"timed out after {timeout} s" if rc is None else "failed"
        print(f"{d:>9,}  {method:<20}  {what} (load {load:.1f}); log {log}:", flush=True)
        steps = [line for line in lines if line.startswith("[bayeslin]")]
        tail = steps if rc is None and steps else lines[-12:]
        for line in tail:
            print(f"{'':>11}| {line}", flush=True)
        return
    r = json.loads(results[-1])
    notes = f"load {load:.1f}"
    if "steps" in r:
        notes += f"; {r['solver']}, {r['steps']} evidence steps, lambda {r['lambda']:.4g}"
        if r["cg_last"] is not None:
            notes += f", last solve {r['cg_last']} cg iterations"
    print(f"{r['d']:>9,}  {method:<20}{r['time']:>10.1f}{r['cpu']:>9.1f}{r['peak_gib']:>12.2f}{r['nll']:>8.3f}"
          f"{r['ece']:>8.3f}{r['acc']:>7.3f}  {notes}", flush=True)
    for line in lines:
        if line.startswith("[bayeslin]"):
            print(f"{'':>11}| {line}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[70, 280, 960])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS, metavar="METHOD",
                        help=f"subset of {METHODS}")
    parser.add_argument("--full-max", type=int, default=20000, help="largest d for laplace-torch 'full'")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per (network, method)")
    parser.add_argument("--cache", help="directory to keep the trained networks and logs in (default: temporary)")
    parser.add_argument("--float32", action="store_true", help="bayeslin's products and solves in float32")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(int(args.one[0]), args.one[1], args.one[2], args.float32)
        return
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print(f"{'d':>9}  {'method':<20}{'time (s)':>10}{'CPU (s)':>9}{'peak (GiB)':>12}{'NLL':>8}{'ECE':>8}{'acc':>7}"
          "  notes")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.cache or tmp
        os.makedirs(work, exist_ok=True)
        for width in args.widths:
            path = os.path.join(work, f"mlp{width}.pt")
            d = sum(p.numel() for p in make_net(width).parameters())
            if not os.path.exists(path):
                t = time.perf_counter()
                train_acc = train(width, path)
                print(f"{d:>9,}  trained in {time.perf_counter() - t:.0f} s, training accuracy {train_acc:.3f}",
                      flush=True)
            for method in args.methods:
                if method == "lt full" and d > args.full_max:
                    print(f"{d:>9,}  {method:<20}  skipped: its d x d matrix is {d * d * 4 / 2**30:.1f} GiB")
                    continue
                run_method(width, path, method, d, args.timeout, env, work, args.float32)


if __name__ == "__main__":
    main()
