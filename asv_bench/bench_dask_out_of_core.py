"""Out of core: an ``exact`` fit on a zarr data set larger than the machine's memory.

``--write`` stores a synthetic tall data set (``X``: ``n x d`` float64
Gaussian features, ``y = X w + noise``) uncompressed as zarr, in row chunks;
``--disk`` reads every chunk of ``X`` once (a sum over ``da.from_zarr``, the
disk's read rate for this access pattern with nothing else to do);
``--fit`` fits ``BayesianLinearRegressor(solver='exact')`` on the Dask
arrays read from the store (one pass: Dask's TSQR of the weighted rows) and
prints the time, the read rate and the peak resident memory of the process
(polled with psutil, the threaded scheduler's workers are threads of it);
``--delete`` removes the store.

The page cache holds what a read brought in, so ``--disk`` and ``--fit``
each read a store larger than the memory: the second read finds at most
the last chunks cached, about as much as the first.

Usage::

    python asv_bench/bench_dask_out_of_core.py --write --n 40000000 --d 100
    python asv_bench/bench_dask_out_of_core.py --disk
    python asv_bench/bench_dask_out_of_core.py --fit
    python asv_bench/bench_dask_out_of_core.py --delete
"""

import argparse
import os
import shutil
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PATH = "/tmp/bayeslin_out_of_core.zarr"


class PeakRSS:
    """Poll the resident set of this process and its children, keep the maximum."""

    def __init__(self, interval=0.05):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def _rss(self):
        total = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except Exception:
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _chunk_data(block, d, block_info=None):
    """Rows of ``X`` (Gaussian) for one chunk, seeded by the chunk's position."""
    start = block_info[None]["array-location"][0][0]
    rng = np.random.default_rng(start)
    return rng.standard_normal((block.shape[0], d))


def write(n, d, chunk_rows):
    import dask
    import dask.array as da
    import zarr

    w = np.linspace(-1.0, 1.0, d)
    rows = da.zeros((n, 1), chunks=(chunk_rows, 1))
    X = rows.map_blocks(_chunk_data, d, chunks=(chunk_rows, d), dtype=np.float64)
    y = X @ w + 0.5 * da.sin(da.arange(n, chunks=chunk_rows) * 0.37) + 3.0
    group = zarr.open_group(PATH, mode="w")
    zx = group.create_array("X", shape=(n, d), chunks=(chunk_rows, d), dtype="f8", compressors=None)
    zy = group.create_array("y", shape=(n,), chunks=(chunk_rows,), dtype="f8", compressors=None)
    start = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=2):
        da.store([X, y], [zx, zy], lock=False)
    seconds = time.perf_counter() - start
    gb = n * (d + 1) * 8 / 1e9
    print(f"wrote {PATH}: X {n} x {d} float64 + y, {gb:.1f} GB in {seconds:.0f} s ({gb / seconds:.2f} GB/s)")


def _arrays():
    import dask.array as da

    return da.from_zarr(PATH, component="X"), da.from_zarr(PATH, component="y")


def disk():
    import dask

    X, _ = _arrays()
    gb = X.nbytes / 1e9
    with dask.config.set(scheduler="threads", num_workers=2), PeakRSS() as mem:
        start = time.perf_counter()
        X.sum().compute()
        seconds = time.perf_counter() - start
    print(
        f"disk alone (sum of X over da.from_zarr, threaded, 2 threads): {gb:.1f} GB in {seconds:.1f} s = "
        f"{gb / seconds:.2f} GB/s, peak RSS {mem.peak / 2**30:.2f} GiB"
    )


def fit():
    import dask

    from bayeslin import BayesianLinearRegressor

    X, y = _arrays()
    gb = (X.nbytes + y.nbytes) / 1e9
    print(f"X: {X.shape} in {X.numblocks[0]} row chunks of {X.chunks[0][0]} rows; {gb:.1f} GB with y")
    with dask.config.set(scheduler="threads", num_workers=2), PeakRSS() as mem:
        start = time.perf_counter()
        reg = BayesianLinearRegressor(solver="exact").fit(X, y)
        seconds = time.perf_counter() - start
    print(
        f"exact fit (threaded, 2 threads): {seconds:.1f} s = {gb / seconds:.2f} GB/s, "
        f"peak RSS {mem.peak / 2**30:.2f} GiB; alpha_={reg.alpha_:.6g} lambda_={reg.lambda_:.6g} "
        f"n_iter_={reg.n_iter_} intercept_={reg.intercept_:.6g}"
    )
    w = np.linspace(-1.0, 1.0, X.shape[1])
    print(f"max |coef_ - w| = {np.max(np.abs(reg.coef_ - w)):.2e} (noise sd about 0.35)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--disk", action="store_true")
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--delete", action="store_true")
    parser.add_argument("--n", type=int, default=40_000_000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--chunk-rows", type=int, default=250_000)
    args = parser.parse_args(argv)
    if args.write:
        write(args.n, args.d, args.chunk_rows)
    if args.disk:
        disk()
    if args.fit:
        fit()
    if args.delete:
        shutil.rmtree(PATH, ignore_errors=True)
        print(f"deleted {PATH}")


if __name__ == "__main__":
    sys.exit(main())
