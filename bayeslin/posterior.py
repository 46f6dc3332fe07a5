"""The posterior an estimator keeps after a fit: ``N(mean, H^-1)`` over the weights.

One object for every estimator and solver. It draws samples (one way of
drawing, in chunks), gives the variances of linear functions of the weights
(predictive variances), forms the dense covariance of a small model
(BayesianRidge's ``sigma_``), and warns once when a solve stopped short.

What the exact solver keeps, in memory and in a pickle, is sized by the
model, not the data: its factorisation (``d x d`` at most, ``d x r`` with
``r <= n`` for a dual one), never the training features. The iterative
solvers keep the fit's ``k`` posterior samples (``d x k``) for predictive
variances and, to draw new samples (fresh sample-then-optimise solves), the
training features, which they pickle too: a reloaded model draws exactly as
the fitted one did.
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ._backend import create, device, get_namespace, standard_normal
from .solvers import SOLVERS, ExactFactorization, SampleDraws, logdet_slq

__all__ = ["Posterior", "warn_if_stopped_short"]

# Posterior samples solved for at once: bounds the memory of a large
# sample_posterior(n) by a block of this many right-hand sides.
SAMPLE_CHUNK = 256


def warn_if_stopped_short(results, solver, tol, during="the fit"):
    """Warn (ConvergenceWarning) once if any solve in ``results`` stopped above its tolerance.

    Parameters
    ----------
    results : iterable of SolverResult
    solver : str
    tol : float
        The solver's relative-residual tolerance.
    during : str, default='the fit'
        What the solves were for, in the message.
    """
    short = [r for r in results if r is not None and not r.converged]
    if short:
        worst = max(short, key=lambda r: float(np.max(r.residual_norms)))
        warnings.warn(
            f"solver={solver!r} stopped after {worst.n_iter} iterations with relative residual "
            f"{float(np.max(worst.residual_norms)):.2e} above solver_tol={tol:g} during {during}; "
            f"increase solver_max_iter, loosen solver_tol, or use solver='exact' if the problem "
            f"is small enough.",
            ConvergenceWarning,
        )


class Posterior:
    """The Gaussian posterior ``N(mean, H^-1)``, ``H = alpha Phi^T W Phi + A``.

    Parameters
    ----------
    system : PosteriorPrecision
        ``H`` at the fitted hyperparameters (its features are kept for
        drawing by the iterative solvers, and dropped when pickled).
    mean : array of shape (d,)
    solver : {'exact', 'cg', 'sgd'}
    solver_options : dict, optional
        Options of the iterative solver, for new draws.
    factorization : ExactFactorization, optional
        The exact solver's factorisation.
    samples : array of shape (d, k), optional
        Zero-mean draws from the fit (iterative solvers; optional for exact).
    variance_factorization : ExactFactorization, optional
        An iterative fit's exact factorisation (formed where it is cheap):
        predictive variances and the covariance factor come from it, with
        no Monte Carlo error, while draws still come from the solves.

    Attributes
    ----------
    alpha : float
    prior : float or array of shape (d,)
    """

    def __init__(
        self, system, mean, *, solver, solver_options=None, factorization=None, samples=None, variance_factorization=None
    ):
        self.mean = mean
        self.variance_factorization = variance_factorization
        self.alpha = system.alpha
        self.prior = system.prior
        self.solver = solver
        self.solver_options = dict(solver_options or {})
        self.factorization = factorization
        self.samples = samples
        self._system = system

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.factorization is not None:
            # The factorisation answers everything: no training features.
            state["_system"] = None
        return state

    @property
    def xp(self):
        """Array namespace of the posterior."""
        return get_namespace(self.mean)

    def drop_data(self):
        """Let go of the training features where nothing after the fit needs them (exact primal)."""
        if self.factorization is not None and self.factorization.release_data():
            self._system = None

    def _require_data(self, what):
        if self._system is None:
            raise RuntimeError(f"{what} needs the training features, which this posterior has let go; refit the estimator.")
        return self._system

    def sample(self, n_samples, rng, chunk_size=SAMPLE_CHUNK):
        """Zero-mean draws ``z ~ N(0, H^-1)``, shape ``(d, n_samples)``.

        Exact from the factorisation; the iterative solvers solve blocks of
        at most ``chunk_size`` sample-then-optimise problems and warn once if
        any stopped short.
        """
        xp = self.xp
        fact = self.factorization
        if fact is not None:
            rows = fact.n_features if np.ndim(self.prior) != 0 else fact.noise_rows
            noise = standard_normal(rng, (rows, n_samples), xp, self.mean.dtype, device(self.mean))
            return fact.sample(self.alpha, self.prior, noise)
        system = self._require_data("Drawing new posterior samples")
        options = dict(self.solver_options)
        if self.solver == "sgd":
            options["random_state"] = rng
        out, results = [], []
        for start in range(0, n_samples, chunk_size):
            draws = SampleDraws(system, min(chunk_size, n_samples - start), rng)
            rhs = draws.rhs(system.alpha, system.prior)
            res = SOLVERS[self.solver](system, rhs, system.prior_solve(rhs), **options)
            out.append(res.solution)
            results.append(res)
        warn_if_stopped_short(results, self.solver, options.get("tol", 0.0), during="posterior sampling")
        return out[0] if len(out) == 1 else xp.concat(out, axis=1)

    @property
    def _exact(self):
        """The factorisation that answers variances exactly, if any."""
        return self.factorization if self.factorization is not None else self.variance_factorization

    def covariance_factor(self):
        """``(F, weight)`` with ``H^-1 ~ weight F F^T``: exact, or the Monte Carlo estimate from the fit's samples.

        Exact whenever there is a factorisation (the exact solver's, or the
        one an iterative fit formed for its traces): ``d x d`` for a diagonal
        prior, ``d x noise_rows`` for a scalar one.
        """
        fact = self._exact
        if fact is not None and np.ndim(self.prior) != 0:
            return fact.covariance_factor(self.alpha, self.prior), 1.0
        if fact is not None:
            # A scalar prior's exact draws are a linear map of their standard
            # normal noise: applied to the identity, that map is a factor.
            eye = create(self.xp, "eye", fact.noise_rows, dtype=self.mean.dtype, device_=device(self.mean))
            return fact.sample(self.alpha, self.prior, eye), 1.0
        if self.samples is None:
            raise NotImplementedError("No covariance factor is formed for this posterior.")
        return self.samples, 1.0 / self.samples.shape[1]

    def variance(self, rows):
        """``diag(X H^-1 X^T)`` for the rows of a feature operator: exact, or from the fit's samples."""
        if self._exact is not None:
            return self._exact.inverse_quadratic_forms(self.alpha, self.prior, rows)
        P = rows.matmat(self.samples)
        return self.xp.mean(P * P, axis=1)

    @property
    def variance_draws(self):
        """Number of Monte Carlo draws behind :meth:`variance` (0 when it is exact)."""
        return 0 if self._exact is not None else self.samples.shape[1]

    def std_standard_error(self, std, variance):
        """Monte Carlo standard error of predictive standard deviations ``std = sqrt(variance + c)``.

        ``variance`` is what :meth:`variance` returned (clipped at zero) and
        ``c >= 0`` a known constant (the noise variance, or 0). From ``k``
        Gaussian draws ``x^T z_j ~ N(0, v)`` the estimate is ``v chi2_k / k``,
        of standard deviation ``v sqrt(2 / k)``, taken at the estimate; the
        delta method divides it by ``2 std``. Zero when the variance is
        exact; ``std`` must be positive where ``variance`` is.

        Parameters
        ----------
        std, variance : arrays of the same shape

        Returns
        -------
        array, the shape of ``std``
        """
        k = self.variance_draws
        if k == 0:
            return std * 0.0
        return (2.0 / k) ** 0.5 * variance / (2.0 * std)

    def covariance(self):
        """The dense covariance ``H^-1``, shape ``(d, d)``: exact, whatever the solver.

        From the factorisation the fit kept (the exact solver's, or the one
        an iterative fit formed for its traces); otherwise the posterior
        factorises its training features once for this call
        (``d x d`` memory and a cubic cost in the smaller of ``n`` and ``d``),
        without keeping the factorisation.
        """
        if self._exact is not None:
            return self._exact.covariance(self.alpha, self.prior)
        system = self._require_data("The dense covariance")
        return ExactFactorization(system.features, system.sqrt_weights).covariance(self.alpha, self.prior)

    def logdet(self, random_state=None):
        """``log det H``: exact, or a stochastic Lanczos estimate (needs the training data)."""
        if self._exact is not None:
            return self._exact.logdet(self.alpha, self.prior)
        return logdet_slq(self._require_data("The log-determinant"), random_state=random_state)

