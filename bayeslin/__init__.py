"""bayeslin: scalable Bayesian linear models and linearised Laplace, scikit-learn style."""

# linear_model first: it loads operators, which loads the MLP Jacobian last.
from .linear_model import BayesianLinearRegressor  # isort: skip
from .laplace import LinearisedLaplaceClassifier, LinearisedLaplaceRegressor

__version__ = "0.1.0.dev0"

__all__ = [
    "BayesianLinearRegressor",
    "LinearisedLaplaceClassifier",
    "LinearisedLaplaceRegressor",
    "__version__",
]
