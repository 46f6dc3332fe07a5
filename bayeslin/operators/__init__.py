"""Feature operators: what the feature matrix ``Phi`` (n x d) is.

``features`` holds the protocol (:class:`FeatureOperator`) and the operators
over arrays, sparse matrices and generated features; ``mlp_jacobian`` holds
the Jacobian of a scikit-learn MLP, an operator of the same protocol. Imports
point one way: ``mlp_jacobian`` imports ``features``, never the reverse, and
neither imports the solvers or the estimators.
"""

from .features import (
    CenteredFeatures,
    DenseFeatures,
    FeatureOperator,
    ImplicitFeatures,
    LinearOperatorFeatures,
    RandomFourierFeatures,
    SparseFeatures,
    as_features,
    is_feature_protocol,
)
from .mlp_jacobian import MLPJacobian

__all__ = [
    "FeatureOperator",
    "DenseFeatures",
    "SparseFeatures",
    "CenteredFeatures",
    "LinearOperatorFeatures",
    "ImplicitFeatures",
    "RandomFourierFeatures",
    "MLPJacobian",
    "as_features",
    "is_feature_protocol",
]
