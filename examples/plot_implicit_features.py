"""
=============================================================
Features generated on the fly: random Fourier features
=============================================================

A :class:`~bayeslin.BayesianLinearRegressor` never needs the feature matrix
itself: its solvers only ask for the products ``Phi @ V`` and ``Phi.T @ U``
on blocks of vectors, and for the same products on a batch of rows. So the
features can be computed when they are needed, a batch of rows at a time,
and the model can have far more of them than an ``n x d`` matrix in memory
would allow: memory grows with ``batch_rows * d``, not with ``n * d``.

This example writes such an operator in a few lines, random Fourier features
(Rahimi and Recht, 2007) of the monthly sea surface temperature of the El
Nino region, 1950 to 2010 (``statsmodels.datasets.elnino``), checks it
against the library's :class:`~bayeslin.operators.RandomFourierFeatures`,
and fits both with conjugate gradients.
"""

# %%
# The data
# --------
# One temperature a month; the inputs are the time and the phase of the
# year. A fifth of the months, chosen at random, is held out.
import time
import tracemalloc

import matplotlib.pyplot as plt
import numpy as np
import statsmodels.api as sm

from bayeslin import BayesianLinearRegressor
from bayeslin.operators import RandomFourierFeatures

table = sm.datasets.elnino.load_pandas().data
sst = table.iloc[:, 1:].to_numpy().ravel()
t = np.repeat(table["YEAR"].to_numpy(), 12) + np.tile(np.arange(12) / 12.0, len(table))
Z = np.column_stack([t - 1980.0, np.sin(2 * np.pi * t), np.cos(2 * np.pi * t)])

rng = np.random.RandomState(0)
test = rng.rand(len(t)) < 0.2
Z_train, Z_test, y_train, y_test = Z[~test], Z[test], sst[~test], sst[test]
print(f"{len(y_train)} training months, {len(y_test)} held out")

# %%
# The protocol
# ------------
# An object with ``shape``, ``matmat(V)`` (``Phi @ V``) and ``rmatmat(U)``
# (``Phi.T @ U``) can be fitted. ``take_rows(rows)`` adds minibatches
# (``solver='sgd'`` needs them). ``dtype`` and, for CuPy, ``xp`` and
# ``device`` may be given as attributes. The features of a batch of rows
# are made, used and dropped.


class FourierFeatures:
    """``Phi_ij = sqrt(2 / d) cos(z_i . omega_j + b_j)``, computed ``batch_rows`` rows at a time."""

    def __init__(self, Z, omega, phase, batch_rows=256):
        self.Z, self.omega, self.phase, self.batch_rows = Z, omega, phase, batch_rows
        self.shape = (Z.shape[0], omega.shape[1])

    def _rows(self, start, stop):
        return np.sqrt(2.0 / self.shape[1]) * np.cos(self.Z[start:stop] @ self.omega + self.phase)

    def _batches(self):
        for start in range(0, self.shape[0], self.batch_rows):
            yield start, min(start + self.batch_rows, self.shape[0])

    def matmat(self, V):
        return np.concatenate([self._rows(a, b) @ V for a, b in self._batches()])

    def rmatmat(self, U):
        return sum(self._rows(a, b).T @ U[a:b] for a, b in self._batches())

    def take_rows(self, rows):
        return FourierFeatures(self.Z[rows], self.omega, self.phase, self.batch_rows)


# %%
# The library's operator draws the frequencies and phases for an RBF kernel;
# the hand-written one reuses them, so the two are the same matrix.
d = 500
library = RandomFourierFeatures(Z_train, n_components=d, gamma=0.5, random_state=0, batch_rows=256)
handmade = FourierFeatures(Z_train, library.omega, library.phase)
V = rng.standard_normal((d, 3))
print("largest difference of the products:", np.abs(handmade.matmat(V) - library.matmat(V)).max())

# %%
# Fitting
# -------
# Test points are the same features at new inputs. The library's operator
# also generates each batch once for both products of an iteration.
results = {}
for name, train, query in [
    ("hand-written", handmade, FourierFeatures(Z_test, library.omega, library.phase)),
    ("RandomFourierFeatures", library, library.with_inputs(Z_test)),
]:
    tracemalloc.start()
    start = time.perf_counter()
    model = BayesianLinearRegressor(solver="cg", random_state=0).fit(train, y_train)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    mean, std = model.predict(query, return_std=True)
    inside = np.abs(y_test - mean) <= 1.96 * std
    results[name] = (model, mean, std)
    print(
        f"{name:>22}: {seconds:5.1f} s, peak memory {peak / 2**20:5.1f} MiB "
        f"(the {len(y_train)} x {d} matrix would take {len(y_train) * d * 8 / 2**20:.1f} MiB), "
        f"held-out RMSE {np.sqrt(np.mean((y_test - mean) ** 2)):.3f} degC, "
        f"95% interval covers {inside.mean():.0%}"
    )
print(f"alpha_ = {model.alpha_:.3g} (noise sd {model.alpha_**-0.5:.3f} degC), lambda_ = {model.lambda_:.3g}")

# %%
# The held-out months and their 95% predictive intervals
# ------------------------------------------------------
_, mean, std = results["RandomFourierFeatures"]
order = np.argsort(t[test])
tt = t[test][order]
fig, ax = plt.subplots(figsize=(9, 3.5))
ax.plot(t[~test], y_train, ".", ms=2, color="0.6", label="training months")
ax.errorbar(tt, mean[order], yerr=1.96 * std[order], fmt="none", ecolor="C0", alpha=0.5, label="95% interval")
ax.plot(tt, y_test[order], ".", ms=4, color="C3", label="held-out months")
ax.set_xlabel("year")
ax.set_ylabel("sea surface temperature (degC)")
ax.set_xlim(1990, 2010)
ax.legend(loc="lower left", ncols=3, fontsize="small")
fig.tight_layout()
plt.show()
