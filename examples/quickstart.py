"""
Quickstart: a drop-in for scikit-learn's BayesianRidge
======================================================

:class:`bayeslin.BayesianLinearRegressor` fits BayesianRidge's model (Gaussian
prior on the weights, Gaussian noise, evidence-maximising ``alpha_`` and
``lambda_``) with a choice of solvers. This example fits the diabetes data set
bundled with scikit-learn and shows, against :class:`~sklearn.linear_model.BayesianRidge`:

* the fitted weights and hyperparameters of each solver (``'exact'`` agrees
  with BayesianRidge to rounding; ``'cg'`` and ``'sgd'`` to their solver
  tolerance and to the Monte Carlo error of the effective dimension they
  estimate from posterior samples);
* the predictive mean and standard deviation at a few test points;
* the test :math:`R^2`.

Run it with ``python examples/quickstart.py``; it takes a few seconds.
"""

import time
import warnings

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import BayesianRidge
from sklearn.model_selection import train_test_split

from bayeslin import BayesianLinearRegressor

# %%
# Data
# ----
# 442 patients, 10 standardised baseline variables, and a measure of disease
# progression one year later. A fixed split keeps the output reproducible.

X, y = load_diabetes(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
print(f"diabetes: {X_train.shape[0]} training and {X_test.shape[0]} test points, {X.shape[1]} features\n")

# %%
# Fit BayesianRidge and bayeslin with each solver
# -----------------------------------------------
# The parameters are BayesianRidge's; ``random_state`` seeds the posterior
# samples the iterative solvers use. A solver that is not available in this
# build is reported and skipped.

models = {"BayesianRidge": BayesianRidge()}
for solver in ["exact", "cg", "sgd"]:
    models[f"bayeslin {solver}"] = BayesianLinearRegressor(solver=solver, random_state=0)

fitted, notes = {}, {}
for name, model in models.items():
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(X_train, y_train)
    except NotImplementedError:
        notes[name] = "not implemented in this build"
        continue
    model.wall_time = time.perf_counter() - start
    if caught:
        notes[name] = "; ".join(sorted({type(w.message).__name__ for w in caught}))
    fitted[name] = model

# %%
# Weights and hyperparameters
# ---------------------------
# ``coef rel. diff`` is ``max |coef - coef_BR| / max |coef_BR|``. The effective
# number of parameters ``gamma`` (``effective_dim_``) is not exposed by
# BayesianRidge.

reference = fitted["BayesianRidge"]
scale = np.max(np.abs(reference.coef_))
header = (
    f"{'model':<15} {'coef rel. diff':>14} {'alpha_':>11} {'lambda_':>11} "
    f"{'eff. dim':>8} {'n_iter_':>7} {'fit time':>9} {'test R^2':>8}"
)
print(header)
print("-" * len(header))
for name in models:
    if name not in fitted:
        print(f"{name:<15} ({notes[name]})")
        continue
    model = fitted[name]
    diff = np.max(np.abs(model.coef_ - reference.coef_)) / scale
    gamma = getattr(model, "effective_dim_", None)
    gamma = "-" if gamma is None else f"{gamma:.3f}"
    r2 = model.score(X_test, y_test)
    print(
        f"{name:<15} {diff:>14.2e} {model.alpha_:>11.4e} {model.lambda_:>11.4e} "
        f"{gamma:>8} {model.n_iter_:>7d} {model.wall_time * 1e3:>7.1f}ms {r2:>8.4f}"
        + (f"  ({notes[name]})" if name in notes else "")
    )

# %%
# Predictive distribution at a few test points
# --------------------------------------------
# ``predict(X, return_std=True)`` returns the predictive mean and standard
# deviation, noise ``1 / alpha_`` included, as BayesianRidge's does. The
# ``'exact'`` solver computes the variance in closed form; the iterative
# solvers estimate its weight-uncertainty part from their ``n_samples``
# posterior samples (16 by default), so their standard deviations agree to a
# few percent.

rows = slice(0, 5)
predictions = {name: model.predict(X_test[rows], return_std=True) for name, model in fitted.items()}
short = {name: name.replace("bayeslin ", "").replace("BayesianRidge", "BR") for name in fitted}
print()
print(f"{'y_test':>8}" + "".join(f" {short[name] + ' mean':>12} {short[name] + ' std':>10}" for name in fitted))
for i, target in enumerate(y_test[rows]):
    print(f"{target:>8.1f}" + "".join(f" {mean[i]:>12.2f} {std[i]:>10.2f}" for mean, std in predictions.values()))
