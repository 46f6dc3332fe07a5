"""Dask overhead, side by side: one cg iteration on a Dask array against the same product in NumPy.

One cg iteration of ``BayesianLinearRegressor`` is one product
``X^T (X V)`` with a block ``V`` of ``k = 17`` columns (the mean and 16
samples). The script builds the same ``n x d`` matrix twice, as a NumPy
array in this process and as a Dask array persisted on a LocalCluster of 2
worker processes (1 thread each: the 2 cores the NumPy product's BLAS
threads get), and times, each as the median of ``--repeat`` runs:

``numpy``
    ``X.T @ (X @ V)`` in memory (BLAS threads as configured; and with one
    BLAS thread, the share of each worker process, which Dask limits to one).
``dask``
    The same product as the fit computes it (``DaskFeatures.gram_times``:
    one map over the row chunks and a tree reduction of the ``d x k``
    blocks, computed to the client).
``empty graph``
    A graph of the same shape whose chunk tasks return zeros of the same
    ``d x k`` size without reading ``X``: scheduling, the transfer of the
    blocks through the reduction and to the client, no arithmetic.
``empty graph, 1 x 1 blocks``
    The same with ``1 x 1`` blocks: the scheduling alone. The difference
    to the line above is the transfer of the ``d x k`` blocks.
``chunk compute``
    The product on the chunks, timed inside the workers
    (``client.run``): the arithmetic, split over the 2 workers.

``--solvers`` also fits ``exact`` and ``cg`` on a smaller Dask array (same
cluster) and on its NumPy copy, and times one evidence step capped at 20 cg
iterations or 200 sgd minibatch steps, to show whether minibatches beat full
passes on a cluster.

Usage::

    python asv_bench/bench_dask.py                      # 2,000,000 x 200, 16 chunks
    python asv_bench/bench_dask.py --n 200000 --solvers # quick
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _chunk(block, d, block_info=None):
    """Rows of a chunk, seeded by its position: the same numbers on any worker."""
    start = block_info[None]["array-location"][0][0]
    return np.random.default_rng(start).standard_normal((block.shape[0], d))


def _zeros_block(block, shape):
    return np.zeros((1,) + shape)


def build(n, d, chunk_rows):
    import dask.array as da

    rows = da.zeros((n, 1), chunks=(chunk_rows, 1))
    Xd = rows.map_blocks(_chunk, d, chunks=(chunk_rows, d), dtype=np.float64)
    X = np.empty((n, d))
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        X[start:stop] = np.random.default_rng(start).standard_normal((stop - start, d))
    return X, Xd


def median_time(func, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _time_chunk_products(dask_worker=None, V=None, keys=None):
    """Time ``X_c^T (X_c V)`` on the chunks this worker holds (run inside a worker)."""
    total = 0.0
    for key in keys:
        if key in dask_worker.data:
            X = dask_worker.data[key]
            start = time.perf_counter()
            X.T @ (X @ V)
            total += time.perf_counter() - start
    return total


def iteration(client, X, Xd, k, repeat):
    import dask.array as da

    from bayeslin.operators.dask import DaskFeatures

    n, d = X.shape
    V = np.random.default_rng(1).standard_normal((d, k))
    F = DaskFeatures(Xd)
    assert np.allclose(F.gram_times(V), X.T @ (X @ V))
    nb = Xd.numblocks[0]

    def empty(shape):
        parts = Xd.map_blocks(_zeros_block, shape, new_axis=[2], chunks=((1,) * nb, (shape[0],), (shape[1],)), dtype=float)
        return parts.sum(axis=0).compute()

    from threadpoolctl import threadpool_limits

    rows = {}
    rows["numpy: X.T @ (X @ V)"] = median_time(lambda: X.T @ (X @ V), repeat)
    with threadpool_limits(1):
        rows["numpy, 1 BLAS thread"] = median_time(lambda: X.T @ (X @ V), repeat)
    rows["dask: DaskFeatures.gram_times (one cg iteration)"] = median_time(lambda: F.gram_times(V), repeat)
    rows[f"empty graph, {d} x {k} blocks (scheduling + transfer)"] = median_time(lambda: empty((d, k)), repeat)
    rows["empty graph, 1 x 1 blocks (scheduling)"] = median_time(lambda: empty((1, 1)), repeat)
    keys = list(da.core.flatten(Xd.__dask_keys__()))
    per_worker = []
    for _ in range(repeat):
        per_worker.append(client.run(_time_chunk_products, V=V, keys=keys))
    busiest = float(np.median([max(r.values()) for r in per_worker]))
    total = float(np.median([sum(r.values()) for r in per_worker]))
    rows["chunk compute (busiest worker; sum over workers)"] = busiest
    base = rows["numpy: X.T @ (X @ V)"]
    print(f"\nOne cg iteration, X {n} x {d} float64 ({X.nbytes / 1e9:.1f} GB) in {nb} chunks, k={k}, median of {repeat}:")
    for name, seconds in rows.items():
        extra = f"; sum {total:.3f} s" if name.startswith("chunk compute") else ""
        print(f"  {name:<58} {seconds:8.3f} s  {seconds / base:6.2f} x numpy{extra}")
    dask_time = rows["dask: DaskFeatures.gram_times (one cg iteration)"]
    sched = rows["empty graph, 1 x 1 blocks (scheduling)"]
    transfer = rows[f"empty graph, {d} x {k} blocks (scheduling + transfer)"] - sched
    print(
        f"  ratio dask / numpy = {dask_time / base:.2f}; of the dask time: scheduling {sched:.3f} s, "
        f"block transfer {transfer:.3f} s, chunk arithmetic {busiest:.3f} s (busiest worker), "
        f"rest {dask_time - sched - max(transfer, 0) - busiest:.3f} s"
    )


def solvers(n, d, chunk_rows, repeat):
    import dask.array as da

    from bayeslin import BayesianLinearRegressor

    X, Xd = build(n, d, chunk_rows)
    w = np.linspace(-1, 1, d)
    y = X @ w + np.random.default_rng(2).standard_normal(n)
    yd = da.from_array(y, chunks=(chunk_rows,))
    print(f"\nFits, X {n} x {d} in {Xd.numblocks[0]} chunks (random_state=0, default tolerances):")
    for solver in ("exact", "cg"):
        for name, (Xin, yin) in (("numpy", (X, y)), ("dask", (Xd, yd))):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                reg = BayesianLinearRegressor(solver=solver, random_state=0).fit(Xin, yin)
                seconds = time.perf_counter() - start
            print(f"  {solver:<5} {name:<5} {seconds:8.2f} s  alpha_={reg.alpha_:.6g} lambda_={reg.lambda_:.6g}")
    # A full sgd fit on the cluster runs for many minutes (thousands of
    # minibatch steps, each a round trip): compare the cost of one step with
    # one cg iteration instead, from fits capped to one evidence step.
    steps = {"cg": 20, "sgd": 200}
    print(f"\nOne evidence step capped at {steps['cg']} cg iterations or {steps['sgd']} sgd minibatch steps:")
    for solver in ("cg", "sgd"):
        for name, (Xin, yin) in (("numpy", (X, y)), ("dask", (Xd, yd))):
            reg = BayesianLinearRegressor(solver=solver, random_state=0, max_iter=1, solver_max_iter=steps[solver])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                reg.fit(Xin, yin)
                seconds = time.perf_counter() - start
            print(f"  {solver:<5} {name:<5} {seconds:8.2f} s  ({1e3 * seconds / steps[solver]:.1f} ms per step, setup included)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--d", type=int, default=200)
    parser.add_argument("--k", type=int, default=17)
    parser.add_argument("--chunk-rows", type=int, default=125_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--solvers", action="store_true", help="also time cg and sgd fits (n/10 rows, d/4 columns)")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, Client(
        cluster
    ) as client:
        X, Xd = build(args.n, args.d, args.chunk_rows)
        Xd = Xd.persist()
        from distributed import wait

        wait(Xd)
        iteration(client, X, Xd, args.k, args.repeat)
        del X, Xd
        if args.solvers:
            solvers(args.n // 10, args.d // 4, args.chunk_rows // 10, args.repeat)


if __name__ == "__main__":
    sys.exit(main())
