"""Cost of the matrix-free Jacobian products of a torch network against the physical floor.

One pass of ``Phi @ V`` (forward mode) plus ``Phi.T @ U`` (reverse mode)
over a block of 17 vectors (the posterior mean and 16 samples, what one
conjugate-gradient iteration of the Laplace fit needs) is timed against 17
forward-and-backward passes of the same network over the same rows (what
17 separate gradient computations cost). Both are timed alternately,
``--repeats`` times, and the minimum of each is kept (the machine is shared).
Wall-clock and CPU (process) time are both reported: on a loaded machine the
wall clock mostly measures the other processes, the CPU time less so. With
``OMP_NUM_THREADS=1`` the CPU times measure the work alone: with two threads
on a loaded machine every pass also waits to synchronise its threads, which
weighs on whichever side runs more, smaller passes.

    python asv_bench/bench_torch_jacobian.py [--rows 256] [--repeats 5] [--dtype float32]

Networks of about 250,000 parameters: an MLP (784-256-256-10) and a CNN
(three 3x3 convolutions on 3x16x16 images, two linear layers).
"""

import argparse
import time

import torch
from torch import nn

from bayeslin.networks import TorchJacobian

K = 17


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 64, 3, padding=1)
        self.c3 = nn.Conv2d(64, 64, 3, padding=1)
        self.f1 = nn.Linear(64 * 4 * 4, 192)
        self.f2 = nn.Linear(192, 10)

    def forward(self, x):
        h = torch.relu(self.c1(x.view(-1, 3, 16, 16)))
        h = nn.functional.max_pool2d(torch.relu(self.c2(h)), 2)
        h = nn.functional.max_pool2d(torch.relu(self.c3(h)), 2)
        return self.f2(torch.relu(self.f1(h.flatten(1))))


def networks():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    return {"MLP 784-256-256-10": (mlp, 784), "CNN 3x16x16": (CNN(), 3 * 16 * 16)}


def floor(module, X, G):
    """17 forward-and-backward passes over the rows."""
    for j in range(K):
        module.zero_grad(set_to_none=True)
        out = module(X)
        out.backward(G[:, :, j])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256, help="observations (default 256)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, n={args.rows} rows, k={K}")
    print(f"{'network':<22}{'params':>9}{'Phi@V (s)':>11}{'Phi.T@U (s)':>13}{'both (s)':>10}{'17 f+b (s)':>12}{'ratio':>8}"
          f"{'CPU ratio':>11}")
    for name, (module, n_in) in networks().items():
        module = module.to(dtype).eval()
        X = torch.randn(args.rows, n_in, dtype=dtype)
        names = [n for n, _ in module.named_parameters()]
        jac = TorchJacobian(module, X, names, dtype=dtype)
        n_rows, d = jac.shape
        V = torch.randn(d, K, dtype=dtype)
        U = torch.randn(n_rows, K, dtype=dtype)
        G = U.reshape(args.rows, -1, K)
        jac.matmat(V[:, :2])  # first calls load torch.func's machinery
        jac.rmatmat(U[:, :2])
        best = {key: float("inf") for key in ["fwd", "rev", "floor", "fwd cpu", "rev cpu", "floor cpu"]}

        def timed(key, fn):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            best[key] = min(best[key], time.perf_counter() - wall)
            best[key + " cpu"] = min(best[key + " cpu"], time.process_time() - cpu)

        for _ in range(args.repeats):
            timed("fwd", lambda: jac.matmat(V))
            timed("rev", lambda: jac.rmatmat(U))
            timed("floor", lambda: floor(module, X, G))
        both = best["fwd"] + best["rev"]
        cpu_ratio = (best["fwd cpu"] + best["rev cpu"]) / best["floor cpu"]
        print(
            f"{name:<22}{d:>9,}{best['fwd']:>11.3f}{best['rev']:>13.3f}{both:>10.3f}{best['floor']:>12.3f}"
            f"{both / best['floor']:>8.2f}{cpu_ratio:>11.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
