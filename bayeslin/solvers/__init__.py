"""Solvers for ``H X = R`` with a block of right-hand sides.

Every solver has the signature ``solve(system, rhs, x0=None, **options)``
where ``system`` is a :class:`PosteriorPrecision`, ``rhs`` has shape
``(d, k)`` and ``x0`` is an optional warm start of the same shape, and
returns a :class:`SolverResult`. Solvers know nothing of scikit-learn.
"""

from ._system import PosteriorPrecision, SolverResult
from .cg import solve_cg
from .exact import ExactFactorization, exact_factorization, solve_exact
from .sgd import solve_sgd

SOLVERS = {"exact": solve_exact, "cg": solve_cg, "sgd": solve_sgd}

__all__ = [
    "PosteriorPrecision",
    "SolverResult",
    "ExactFactorization",
    "exact_factorization",
    "solve_exact",
    "solve_cg",
    "solve_sgd",
    "SOLVERS",
]
