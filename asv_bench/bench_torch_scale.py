"""Linearised Laplace over every parameter of a CNN at scale: time, peak memory, and the dense alternative.

Two presets, synthetic data (the cost does not depend on what the images show):

``--preset cpu`` (default)
    A CNN of about 1.06 million parameters (two 3x3 convolutions, a wide
    linear layer) on 2,000 images of 1x8x8, 10 classes, on the CPU.
``--preset resnet18``
    The paper's scale: a ResNet-18 (11.2 million parameters, BasicBlocks
    [2, 2, 2, 2], widths 64-512) on 50,000 images of 3x32x32, 100 classes.
    Run it with ``--device cuda`` on a GPU.

The network's weights are random (a trained network costs the same per
product); the labels are drawn from its own predictions so the likelihood is
that of a fitted network. The fit is ``LinearisedLaplaceClassifier`` with
``solver='cg'``, ``n_samples=16``, ``max_iter=5`` evidence steps (capped
CG iterations per step with ``--cg-iter``, warm-started across steps; the
final relative residual is printed). Before fitting, the script prints the
memory it projects: the solver's iterates (about 6 blocks of d x 17 numbers),
the whitening factors (n x m x m), one block of activations (the Jacobian
products' bound, 512 MiB), the network and data, against the d x d matrix a
dense posterior would need.

    python asv_bench/bench_torch_scale.py                       # CPU preset
    python asv_bench/bench_torch_scale.py --preset resnet18 --device cuda
    python asv_bench/bench_torch_scale.py --project-only --preset resnet18
    python asv_bench/bench_torch_scale.py --preset resnet18 --base-width 4 --n 16 --cg-iter 2   # CPU smoke run
"""

import argparse
import time
import warnings

import numpy as np
import torch
from torch import nn

from bayeslin import LinearisedLaplaceClassifier
from bayeslin.networks import TorchModule

GIB = 2.0**30


class WideCNN(nn.Module):
    """1x8x8 images: conv 1->8, conv 8->16, linear 1024->1024, linear 1024->classes."""

    def __init__(self, n_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 64, 1024)
        self.fc2 = nn.Linear(1024, n_classes)

    def forward(self, x):
        h = torch.relu(self.conv1(x.view(-1, 1, 8, 8)))
        h = torch.relu(self.conv2(h))
        return self.fc2(torch.relu(self.fc1(h.flatten(1))))


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18 on flattened 3x32x32 images."""

    def __init__(self, n_classes=100, base_width=64):
        super().__init__()
        w = base_width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        layers, c = [], w
        for width, stride in [(w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2)]:
            layers += [BasicBlock(c, width, stride), BasicBlock(width, width, 1)]
            c = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(8 * w, n_classes)

    def forward(self, x):
        h = self.layers(self.stem(x.view(-1, 3, 32, 32)))
        return self.fc(nn.functional.adaptive_avg_pool2d(h, 1).flatten(1))


PRESETS = {
    "cpu": dict(make=WideCNN, n=2000, n_features=64, n_classes=10),
    "resnet18": dict(make=ResNet18, n=50000, n_features=3 * 32 * 32, n_classes=100),
}


def projected_memory(d, n, m, n_features, itemsize, k=17):
    """Bytes: (ours, by part), and the dense d x d posterior."""
    parts = {
        "solver iterates (6 x d x 17)": 6 * d * k * itemsize,
        "whitening factors (n x m x m)": n * m * m * itemsize,
        "one block of products (bound)": 512 * 2**20,
        "network (params, a copy in the products' dtype)": 2 * d * itemsize,
        "data (n x features)": n * n_features * itemsize,
    }
    return parts, d * d * itemsize


def peak_rss_gib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=None, help="images (default: the preset's)")
    parser.add_argument("--cg-iter", type=int, default=50, help="CG iterations per evidence step at most")
    parser.add_argument("--float32", action="store_true", help="float32 products on the CPU too (faster convolutions)")
    parser.add_argument("--project-only", action="store_true", help="print the projected memory and stop")
    parser.add_argument("--base-width", type=int, default=64,
                        help="resnet18: channels of its first stage (64; a small value makes a quick smoke run)")
    args = parser.parse_args()
    cfg = dict(PRESETS[args.preset])
    n = args.n or cfg["n"]
    m, n_features = cfg["n_classes"], cfg["n_features"]
    torch.manual_seed(0)
    make = cfg["make"]
    module = (make(m, base_width=args.base_width) if make is ResNet18 else make(m)).to(args.device).eval()
    d = sum(p.numel() for p in module.parameters())
    itemsize = 4 if torch.device(args.device).type == "cuda" or args.float32 else 8
    parts, dense = projected_memory(d, n, m, n_features, itemsize)
    print(f"preset={args.preset}: d={d:,} parameters, n={n:,} images, {m} classes, device={args.device}, "
          f"{'float32' if itemsize == 4 else 'float64'} products")
    for name, size in parts.items():
        print(f"  {name:<50}{size / GIB:10.3f} GiB")
    print(f"  {'projected total':<50}{sum(parts.values()) / GIB:10.3f} GiB")
    print(f"  {'dense d x d posterior (one matrix)':<50}{dense / GIB:10.1f} GiB")
    if args.project_only:
        return

    gen = torch.Generator().manual_seed(1)
    X = torch.rand(n, n_features, generator=gen).to(args.device)
    with torch.no_grad():
        logits = torch.cat([module(X[i : i + 1000]) for i in range(0, n, 1000)])
    y = torch.distributions.Categorical(logits=logits.float()).sample().cpu().numpy()
    if torch.device(args.device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    clf = LinearisedLaplaceClassifier(
        TorchModule(module, dtype=torch.float32 if args.float32 else None), solver="cg", n_samples=16, max_iter=5, solver_max_iter=args.cg_iter,
        solver_tol=1e-4, random_state=0, verbose=True,
    )
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(X if torch.device(args.device).type == "cuda" else X.numpy(), y)
    elapsed = time.perf_counter() - start
    for w in caught:
        if "stopped" in str(w.message) or "converge" in str(w.message):
            print("warning:", w.message)
    print(f"fit: {elapsed:.1f} s, {clf.n_iter_} evidence steps, lambda={clf.lambda_:.4g}, "
          f"effective dim={clf.effective_dim_:.0f} / {d:,}")
    if torch.device(args.device).type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / GIB:.2f} GiB")
    print(f"peak host memory (max RSS of this process): {peak_rss_gib():.2f} GiB; "
          f"a dense d x d posterior: {dense / GIB:.1f} GiB")


if __name__ == "__main__":
    main()
