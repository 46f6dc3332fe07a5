"""
Forecasting Mauna Loa CO2 with uncertainty bands
=================================================

Weekly atmospheric CO2 at Mauna Loa (1958-2001, bundled with statsmodels) has
a rising trend, a yearly cycle and year-to-year anomalies (El Nino, the 1991
Pinatubo eruption). We fit a :class:`bayeslin.BayesianLinearRegressor` on
hand-made time features in a :class:`~sklearn.pipeline.Pipeline`, train on the
years before 1995 and forecast 1995-2001 with a 95% predictive band, then
check how many of the held-out weeks the band covers.

Everything the model needs (its noise level and its prior strength) is set by
maximising the evidence on the training years; the held-out years are only
used to report coverage.

Run it alone with ``pip install ".[examples]" && python examples/plot_co2_forecast.py``
(a few seconds).
"""

# %%
# The data
# --------
# 2,284 weekly means in ppm, 59 of them missing (dropped). Time is the decimal
# year, the only input of the model.

import time
import warnings

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from sklearn.pipeline import make_pipeline, make_union
from sklearn.preprocessing import FunctionTransformer
from statsmodels.datasets import co2

from bayeslin import BayesianLinearRegressor

data = co2.load_pandas().data.dropna()
year = (data.index.year + (data.index.day_of_year - 1) / 365.25).to_numpy()
ppm = data["co2"].to_numpy()
X = year[:, None]

SPLIT = 1995.0
train, test = year < SPLIT, year >= SPLIT
print(f"{train.sum()} training weeks ({year[train].min():.0f}-{SPLIT:.0f}), {test.sum()} held-out weeks (to 2001)")

# %%
# Features
# --------
# Three groups of features of the decimal year ``t``, joined by a
# :func:`~sklearn.pipeline.make_union`:
#
# * **trend**: ``s`` and ``s**2`` with ``s = (t - 1980) / 20``, a smooth,
#   accelerating rise;
# * **season**: sines and cosines of the first three harmonics of the yearly
#   cycle, also multiplied by ``s`` so that the cycle's amplitude can grow;
# * **anomalies**: Gaussian bumps of width one year centred every half year
#   from 1950 to 2010, *including the forecast years*. With independent
#   ``N(0, 1 / lambda_)`` weights a sum of such bumps is (up to edge effects) a
#   Gaussian process with a squared-exponential kernel: deviations from the
#   trend that last a year or so and then fade. Bumps over the forecast years
#   have no data, so they keep their prior spread: the model knows that
#   anomalies like the past ones will happen again, and the band widens
#   accordingly instead of extrapolating the last wiggle.
#
# The regressor has a single prior precision ``lambda_`` for all weights and we
# want it to describe the anomalies. The trend and seasonal weights are
# pinned down by 37 years of data whatever their prior, so their features are
# scaled by 10, which makes their weights ten times smaller and the shared
# prior on them negligible.
#
# The one-year width is fixed, not fitted. The evidence would prefer narrower
# bumps: weekly residuals are correlated over a few weeks (weather), which a
# model with independent noise reads as signal to be fitted, and such a model
# is overconfident out of sample. One year is the time scale of El Nino.

SCALE = 10.0
CENTRES = np.arange(1950.0, 2010.0, 0.5)
WIDTH = 1.0


def trend(t):
    s = (t - 1980.0) / 20.0
    return SCALE * np.hstack([s, s**2])


def season(t):
    s = (t - 1980.0) / 20.0
    waves = np.hstack([f(2 * np.pi * k * t) for k in (1, 2, 3) for f in (np.sin, np.cos)])
    return SCALE * np.hstack([waves, s * waves])


def anomalies(t):
    return np.exp(-0.5 * ((t - CENTRES) / WIDTH) ** 2)


def make_model():
    features = make_union(
        FunctionTransformer(trend, feature_names_out="one-to-one"),
        FunctionTransformer(season),
        FunctionTransformer(anomalies),
    )
    return make_pipeline(features, BayesianLinearRegressor(solver="exact", compute_score=True))


# %%
# Fit and forecast
# ----------------
# ``predict(return_std=True)`` gives the predictive mean and standard
# deviation, the noise ``1 / alpha_`` included, so ``mean +- 1.96 std`` is a
# 95% band for the observed weekly values.

model = make_model()
start = time.perf_counter()
model.fit(X[train], ppm[train])
fit_time = time.perf_counter() - start
reg = model[-1]
print(
    f"fit: {fit_time:.2f} s, {reg.n_iter_} evidence steps, noise std {reg.alpha_**-0.5:.2f} ppm, "
    f"anomaly std {reg.lambda_**-0.5:.2f} ppm, {reg.effective_dim_:.1f} effective parameters"
)

grid = np.arange(1958.0, 2002.0, 1 / 52)[:, None]
mean, std = model.predict(grid, return_std=True)
mean_test, std_test = model.predict(X[test], return_std=True)
inside = np.abs(ppm[test] - mean_test) <= 1.96 * std_test
rmse = np.sqrt(np.mean((ppm[test] - mean_test) ** 2))
print(f"held-out 1995-2001: RMSE {rmse:.2f} ppm, mean predictive std {std_test.mean():.2f} ppm")
print(f"coverage of the 95% band: {inside.mean():.3f} ({inside.sum()} of {inside.size} held-out weeks)")

# %%
# The figure
# ----------
# Top: the whole record and the forecast. Bottom: the forecast years, with the
# held-out weeks that fall outside the band marked.

fig, axes = plt.subplots(2, 1, figsize=(9, 8), layout="constrained")
for ax, (lo, hi) in zip(axes, [(1958, 2002), (1988, 2002)]):
    shown = (grid[:, 0] >= lo) & (grid[:, 0] < hi)
    ax.fill_between(
        grid[shown, 0],
        (mean - 1.96 * std)[shown],
        (mean + 1.96 * std)[shown],
        color="tab:blue",
        alpha=0.25,
        label="95% predictive band",
    )
    ax.plot(grid[shown, 0], mean[shown], color="tab:blue", lw=1, label="predictive mean")
    tr = train & (year >= lo)
    ax.plot(year[tr], ppm[tr], ".", color="black", ms=2, label="training weeks")
    ax.plot(year[test], ppm[test], ".", color="tab:orange", ms=3, label="held-out weeks")
    ax.axvline(SPLIT, color="gray", ls="--", lw=1)
    ax.set_xlim(lo, hi)
    ax.set_ylabel("CO2 (ppm)")
misses = np.flatnonzero(test)[~inside]
axes[1].plot(year[misses], ppm[misses], "x", color="red", ms=6, label="outside the band")
axes[1].set_xlabel("year")
axes[1].legend(loc="upper left", fontsize="small")
axes[0].set_title(f"Mauna Loa CO2: forecast from {SPLIT:.0f}, held-out coverage {inside.mean():.1%}")

# %%
# Is the coverage an accident of the split?
# -----------------------------------------
# The same model, unchanged, forecasting from other years (each time trained
# only on the years before). The band errs on the wide side (98.5% to 100% of
# the held-out weeks inside a nominal 95% band), but no split makes it
# overconfident, including 1992, just after the Pinatubo eruption slowed the
# rise. A model with only the trend and the seasonal features (no anomaly
# bumps) covers between 2% (forecast from 1992) and 64% (from 1997) of the
# held-out weeks: with independent noise as its only source of error it has no
# room for the multi-year deviations the data have.

print("\nforecast from  held-out weeks  RMSE (ppm)  coverage")
for split in [1988, 1990, 1992, 1994, 1996, 1997]:
    tr, te = year < split, year >= split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = make_model().fit(X[tr], ppm[tr])
    mu, sd = m.predict(X[te], return_std=True)
    cov = np.mean(np.abs(ppm[te] - mu) <= 1.96 * sd)
    print(f"{split:>13}  {te.sum():>13}  {np.sqrt(np.mean((ppm[te] - mu) ** 2)):>10.2f}  {cov:>8.3f}")

# A script run with no display uses a non-interactive backend: nothing to show.
if "agg" not in matplotlib.get_backend().lower():
    plt.show()
