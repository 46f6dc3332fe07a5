"""Solvers for ``H X = R`` with a block of right-hand sides, and the exact factorisation.

Every iterative solver has the signature ``solve(system, rhs, x0=None, **options)``
where ``system`` is a :class:`PosteriorPrecision`, ``rhs`` has shape
``(d, k)`` and ``x0`` is an optional warm start of the same shape, and
returns a :class:`SolverResult`. Solvers know nothing of scikit-learn.
"""

from ._system import DataStatistics, PosteriorPrecision, SampleDraws, SolverResult
from .cg import solve_cg
from .exact import ExactFactorization
from .lanczos import logdet_slq
from .sgd import solve_sgd

# The iterative solvers. The exact route is the factorisation itself, which
# answers more than a solve (see ExactFactorization).
SOLVERS = {"cg": solve_cg, "sgd": solve_sgd}

# Relative residual and iteration cap of the iterative solvers when the user
# sets none. In float32 a relative residual much below 1e-4 is rounding: the
# products with H themselves carry an error of about eps32 * cond(H).
_DEFAULT_TOL = {"cg": 1e-6, "sgd": 1e-4}
_DEFAULT_TOL_FLOAT32 = {"cg": 1e-4, "sgd": 1e-3}
_DEFAULT_MAX_ITER = {"cg": 1000, "sgd": 10000}


def solver_options(solver, *, tol=None, max_iter=None, batch_size=None, float32=False):
    """Return the keyword options for ``SOLVERS[solver]``: the given values, else the defaults.

    Parameters
    ----------
    solver : {'exact', 'cg', 'sgd'}
    tol, max_iter : float, int or None
        Relative residual and iteration cap (``None``: the solver's default,
        cg 1e-6 and 1000 iterations, sgd 1e-4 and 10000 steps).
    batch_size : int or None
        Minibatch size of ``'sgd'``.
    float32 : bool, default=False
        Use the float32 default tolerances (cg 1e-4, sgd 1e-3).

    Returns
    -------
    dict
        Empty for ``'exact'``, which takes no options. ``'cg'`` also gets
        ``preconditioner='auto'`` (randomized Nystrom where it pays, see
        :func:`solve_cg`).
    """
    if solver == "exact":
        return {}
    defaults = _DEFAULT_TOL_FLOAT32 if float32 else _DEFAULT_TOL
    options = {
        "tol": defaults[solver] if tol is None else tol,
        "max_iter": _DEFAULT_MAX_ITER[solver] if max_iter is None else max_iter,
    }
    if solver == "sgd":
        options["batch_size"] = batch_size
    if solver == "cg":
        options["preconditioner"] = "auto"
    return options

__all__ = [
    "DataStatistics",
    "PosteriorPrecision",
    "SampleDraws",
    "SolverResult",
    "ExactFactorization",
    "logdet_slq",
    "solve_cg",
    "solve_sgd",
    "SOLVERS",
    "solver_options",
]
