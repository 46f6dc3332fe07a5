"""The synthetic regression problems every benchmark here uses."""

import numpy as np


def make_data(n, d, seed=0, noise=1.0):
    """Dense Gaussian features and targets drawn from the model itself.

    ``X ~ N(0, 1)``, weights ``w ~ N(0, I)``, intercept 1 and noise with
    standard deviation ``noise`` times the signal's, so that the evidence
    has an interior maximum also when ``n < d``.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    y = X @ w + 1.0 + (noise * np.sqrt(d)) * rng.standard_normal(n)
    return X, y
