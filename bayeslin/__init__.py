"""bayeslin: scalable Bayesian linear models and linearised Laplace, scikit-learn style."""

from .laplace import LinearisedLaplaceClassifier, LinearisedLaplaceRegressor
from .linear_model import BayesianLinearRegressor

__version__ = "0.1.0.dev0"

__all__ = [
    "BayesianLinearRegressor",
    "LinearisedLaplaceClassifier",
    "LinearisedLaplaceRegressor",
    "__version__",
]
