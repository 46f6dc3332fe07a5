"""Feature operators: what the feature matrix ``Phi`` (n x d) is.

``features`` holds the protocol (:class:`FeatureOperator`) and the operators
over arrays, sparse matrices and generated features; ``mlp_jacobian`` holds
the Jacobian of a scikit-learn MLP, an operator of the same protocol. Imports
point one way: ``mlp_jacobian`` imports ``features``, never the reverse, and
neither imports the solvers or the estimators.
"""

from . import features
from .features import *  # noqa: F403 - the protocol and its operators, as listed in features.__all__
from .mlp_jacobian import MLPJacobian

__all__ = [*features.__all__, "MLPJacobian"]
