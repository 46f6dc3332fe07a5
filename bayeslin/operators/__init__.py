"""Feature operators: what the feature matrix ``Phi`` (n x d) is.

``features`` holds the protocol (:class:`FeatureOperator`) and the operators
over arrays, sparse matrices and generated features; ``mlp_jacobian`` holds
the Jacobian of a scikit-learn MLP and ``torch_jacobian`` that of a PyTorch
module, operators of the same protocol. Imports point one way:
``mlp_jacobian`` and ``torch_jacobian`` import ``features``, never the
reverse, and none imports the solvers or the estimators. ``torch_jacobian``
imports torch, so it is not imported here (its public path is
``bayeslin.networks.TorchJacobian``).
"""

from . import features
from .features import *  # noqa: F403 - the protocol and its operators, as listed in features.__all__
from .mlp_jacobian import MLPJacobian

__all__ = [*features.__all__, "MLPJacobian"]
