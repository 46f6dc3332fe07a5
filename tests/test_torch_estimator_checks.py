"""scikit-learn's estimator checks for the Laplace estimators wrapping skorch networks.

The networks are tiny (LazyLinear infers the number of features, the skorch
subclasses below size the output layer from ``y``, as a user would for data
of unknown shape) and train for a few epochs, so the checks stay fast.
"""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
skorch = pytest.importorskip("skorch")
from torch import nn  # noqa: E402

from bayeslin import LinearisedLaplaceClassifier, LinearisedLaplaceRegressor  # noqa: E402


class TinyNet(nn.Module):
    def __init__(self, n_out=1):
        super().__init__()
        self.hidden = nn.LazyLinear(8)
        self.out = nn.Linear(8, n_out)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)))


class SizedClassifier(skorch.NeuralNetClassifier):
    """Output layer sized from the labels at fit time."""

    def fit(self, X, y, **fit_params):
        self.set_params(module__n_out=len(np.unique(y)))
        return super().fit(X, y, **fit_params)


class SizedRegressor(skorch.NeuralNetRegressor):
    """Output layer sized from the targets at fit time."""

    def fit(self, X, y, **fit_params):
        self.set_params(module__n_out=1 if y.ndim == 1 else y.shape[1])
        return super().fit(X, y, **fit_params)


def _net(cls, **kw):
    # Adam and full batches: the checks' score thresholds (accuracy, R^2 > 0.5) in a few epochs.
    return cls(TinyNet, optimizer=torch.optim.Adam, max_epochs=40, lr=0.05, batch_size=-1, verbose=0, **kw)


ESTIMATORS = [
    LinearisedLaplaceClassifier(
        _net(SizedClassifier, criterion=nn.CrossEntropyLoss, module__n_out=2), max_iter=3, random_state=0
    ),
    LinearisedLaplaceRegressor(_net(SizedRegressor, module__n_out=1), max_iter=3, random_state=0),
]

# No check is expected to fail.
@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_skorch_laplace(estimator, check):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)
