"""Shared problems and dense references for the bayeslin test suite.

Everything numerical in the tests is checked against a dense computation on a
problem small enough to solve exactly (numpy.linalg), or against
sklearn.linear_model.BayesianRidge. The helpers here are that dense side:

- small regression problems (``tall``: n > d, ``wide``: n < d with an interior
  evidence maximum, ``diabetes``), with and without sample weights;
- :class:`DenseReference`: the exact posterior ``N(m, H^-1)``,
  ``H = alpha X_c^T W X_c + lambda I``, its effective dimension, the MacKay
  fixed point, and the standard error of bayeslin's sample estimate of the
  effective dimension;
- :func:`assert_gaussian_draws`: a whitened check of Monte Carlo draws against
  a known Gaussian with tolerances derived from the number of draws.

They are exposed as fixtures (``dense``, ``gaussian_check``, ``problem`` ...)
so the test modules need not import this file.
"""

import os

# scikit-learn's array-API estimator checks (run with array-api-strict, and
# with CuPy where there is a GPU) need SciPy's array-API mode, which is read
# when SciPy is first imported: before anything below imports it.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_diabetes

# Number of standard errors a Monte Carlo quantity may deviate from its
# expectation. All random draws use fixed seeds; 5 SE has a two-sided
# probability of 5.7e-7 per comparison, so even a few hundred entrywise
# comparisons in one test would fail by chance with probability < 1e-3.
N_SE = 5.0


# --------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------


def make_tall(n=200, d=20, seed=0, noise_sd=1.0):
    """n > d: well determined, moderate noise precision (true alpha = 1)."""
    rng = np.random.RandomState(seed)
    X = rng.randn(n, d) * rng.uniform(0.5, 2.0, size=d) + rng.uniform(-1, 1, size=d)
    w = rng.randn(d) * 0.5
    y = X @ w + 3.0 + rng.randn(n) * noise_sd
    return X, y


def make_wide(n=60, d=150, seed=2, noise_sd=1.0):
    """n < d with an interior evidence maximum.

    With isotropic features and n < d the kernel ``X X^T`` is close to a
    multiple of the identity, only ``d / lambda + 1 / alpha`` is identified
    and the evidence grows without bound in alpha (BayesianRidge then stops
    at its tol with alpha ~ 5e5). Column scales decaying like ``1 / j`` give
    the kernel a spread spectrum, the noise and the signal separate, and
    alpha_ stays near the true noise precision 1 (checked in the tests).
    """
    rng = np.random.RandomState(seed)
    X = rng.randn(n, d) * (np.arange(1, d + 1) ** -1.0) + 0.1 * rng.randn(d)
    w = rng.randn(d)
    y = X @ w - 1.0 + rng.randn(n) * noise_sd
    return X, y


def make_weights(n, seed=1):
    # Non-integer weights whose sum differs from n: the noise update must use
    # the SUM of the weights, as BayesianRidge does.
    return np.random.RandomState(seed).uniform(0.2, 3.0, size=n)


def make_sparse(n=120, d=15, density=0.3, seed=0, decay=0.0, noise_sd=1.0):
    """Sparse CSR features with non-zero column means; ``decay`` as in :func:`make_wide`."""
    rng = np.random.RandomState(seed)
    X = sp.random(n, d, density=density, format="csr", random_state=rng, data_rvs=lambda k: rng.randn(k) + 2.0)
    X = sp.csr_matrix(X.multiply(np.arange(1.0, d + 1) ** -decay))
    w = rng.randn(d)
    y = np.asarray(X @ w).ravel() + 0.5 + rng.randn(n) * noise_sd
    return X, y


def get_sparse_problem(kind="tall", weighted=False):
    """``tall``: 120 x 15; ``wide``: 50 x 120 with an interior evidence maximum."""
    n, d, decay = (120, 15, 0.0) if kind == "tall" else (50, 120, 1.0)
    sw = make_weights(n) if weighted else None
    X, y = make_sparse(n, d, decay=decay, noise_sd=1.0 if sw is None else 1.0 / np.sqrt(sw))
    return SimpleNamespace(name="sparse-" + kind, X=X, y=y, sample_weight=sw, n=n, d=d)


_PROBLEMS = {
    "diabetes": lambda noise_sd=None: load_diabetes(return_X_y=True),
    "tall": make_tall,
    "wide": make_wide,
}
_N_ROWS = {"diabetes": 442, "tall": 200, "wide": 60}


def get_problem(name, weighted=False):
    """A named problem; weighted synthetic ones have noise variance 1 / weight (the model's)."""
    sw = make_weights(_N_ROWS[name]) if weighted else None
    X, y = _PROBLEMS[name](noise_sd=1.0 if sw is None else 1.0 / np.sqrt(sw))
    return SimpleNamespace(name=name, X=X, y=y, sample_weight=sw, n=X.shape[0], d=X.shape[1])


@pytest.fixture(params=["diabetes", "tall", "wide"])
def problem_name(request):
    return request.param


@pytest.fixture(params=[False, True], ids=["unweighted", "weighted"])
def weighted(request):
    return request.param


@pytest.fixture
def problem(problem_name, weighted):
    return get_problem(problem_name, weighted)


@pytest.fixture
def tall():
    return get_problem("tall")


@pytest.fixture
def wide():
    return get_problem("wide")


@pytest.fixture
def diabetes():
    return get_problem("diabetes")


@pytest.fixture
def sparse_problem():
    return get_sparse_problem("tall", weighted=True)


# --------------------------------------------------------------------------
# Dense reference
# --------------------------------------------------------------------------


class DenseReference:
    """The exact Bayesian ridge posterior of ``(X, y, sample_weight)`` with numpy.linalg.

    Parameters
    ----------
    X : array or sparse matrix of shape (n, d)
    y : array of shape (n,)
    sample_weight : array of shape (n,), optional
    fit_intercept : bool
    priors : tuple
        ``(alpha_1, alpha_2, lambda_1, lambda_2)``.
    """

    def __init__(self, X, y, sample_weight=None, fit_intercept=True, priors=(1e-6, 1e-6, 1e-6, 1e-6)):
        X = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if fit_intercept:
            self.X_offset = np.average(X, axis=0, weights=w)
            self.y_offset = float(np.average(y, weights=w))
        else:
            self.X_offset = np.zeros(X.shape[1])
            self.y_offset = 0.0
        self.Xc = X - self.X_offset
        self.yc = y - self.y_offset
        self.w = w
        self.n_eff = float(np.sum(w))
        self.d = X.shape[1]
        self.priors = priors
        self.G = self.Xc.T @ (w[:, None] * self.Xc)
        self.b = self.Xc.T @ (w * self.yc)
        # Eigenvalues of G: all d of them (zeros included when n < d).
        s, self._U = np.linalg.eigh(self.G)
        self.eigenvalues = np.clip(s, 0.0, None)
        self._bt = self._U.T @ self.b
        self._yy = float(np.sum(w * self.yc**2))

    def precision(self, alpha, lam):
        return alpha * self.G + lam * np.eye(self.d)

    def covariance(self, alpha, lam):
        return np.linalg.inv(self.precision(alpha, lam))

    def mean(self, alpha, lam):
        return np.linalg.solve(self.precision(alpha, lam), alpha * self.b)

    def intercept(self, coef):
        return self.y_offset - float(self.X_offset @ coef)

    def ratios(self, alpha, lam):
        """Eigenvalues ``r_i`` of ``H^-1 M``, ``M = alpha G`` (d of them)."""
        s = self.eigenvalues
        return alpha * s / (alpha * s + lam)

    def gamma(self, alpha, lam):
        return float(np.sum(self.ratios(alpha, lam)))

    def gamma_se(self, alpha, lam, k):
        """Standard error of bayeslin's k-sample estimate of the effective dimension.

        Per draw ``z ~ N(0, H^-1)`` the estimate combines ``a = z^T M z`` and
        ``b = d - lambda ||z||^2``; in the eigenbasis of ``H^-1 M``,
        ``b + beta (a - b) = d (1 - beta) + sum_i (r_i - (1 - beta)) u_i^2``
        with ``u ~ N(0, I)``, whose variance ``2 sum_i (r_i - c)^2`` is
        smallest, ``2 sum_i (r_i - rbar)^2``, at the weight the estimator
        picks. The sample mean of k draws has this over k.
        """
        r = self.ratios(alpha, lam)
        return float(np.sqrt(2.0 * np.sum((r - r.mean()) ** 2) / k))

    def predictive(self, Xq, alpha, lam, coef=None, intercept=None):
        """Exact predictive mean and variance (noise ``1 / alpha`` included) at ``Xq``."""
        Xq = Xq.toarray() if sp.issparse(Xq) else np.asarray(Xq, dtype=np.float64)
        if coef is None:
            coef = self.mean(alpha, lam)
        if intercept is None:
            intercept = self.intercept(coef)
        Xqc = Xq - self.X_offset
        cov = self.covariance(alpha, lam)
        var_w = np.einsum("ij,jk,ik->i", Xqc, cov, Xqc)
        return Xq @ coef + intercept, var_w + 1.0 / alpha, var_w

    def log_evidence(self, alpha, lam):
        """BayesianRidge's log marginal likelihood at ``(alpha, lambda)``."""
        a1, a2, l1, l2 = self.priors
        m = self.mean(alpha, lam)
        sse = float(np.sum(self.w * (self.yc - self.Xc @ m) ** 2))
        _, logdet = np.linalg.slogdet(self.precision(alpha, lam))
        score = l1 * np.log(lam) - l2 * lam + a1 * np.log(alpha) - a2 * alpha
        score += 0.5 * (
            self.d * np.log(lam) + self.n_eff * np.log(alpha) - alpha * sse - lam * m @ m - logdet
            - self.n_eff * np.log(2 * np.pi)
        )
        return float(score)

    def _mean_sse(self, alpha, lam):
        """Spectral |m|^2 and weighted SSE: O(d) per (alpha, lambda), for the fixed point."""
        s, bt = self.eigenvalues, self._bt
        mt = alpha * bt / (alpha * s + lam)
        sse = self._yy - 2 * mt @ bt + np.sum(s * mt**2)
        return float(mt @ mt), float(sse)

    def fixed_point(self, t=0.0, k=1, alpha=None, lam=1.0, rtol=1e-12, max_iter=20000):
        """MacKay's fixed point, with the effective dimension shifted by ``t`` standard errors.

        ``t = 0`` is BayesianRidge's converged answer. With ``t != 0`` every
        update uses ``gamma + t * gamma_se(alpha, lambda, k)``: where the
        fixed point of an evidence loop lands whose k-sample estimate of
        gamma is off by ``t`` standard errors.
        """
        a1, a2, l1, l2 = self.priors
        if alpha is None:
            alpha = 1.0 / (np.average(self.yc**2, weights=self.w) + np.finfo(np.float64).eps)
        for _ in range(max_iter):
            mm, sse = self._mean_sse(alpha, lam)
            g = self.gamma(alpha, lam)
            if t:
                g += t * self.gamma_se(alpha, lam, k)
            lam_new = (g + 2 * l1) / (mm + 2 * l2)
            alpha_new = (self.n_eff - g + 2 * a1) / (sse + 2 * a2)
            done = abs(lam_new / lam - 1) < rtol and abs(alpha_new / alpha - 1) < rtol
            alpha, lam = alpha_new, lam_new
            if done:
                return alpha, lam
        raise RuntimeError("dense fixed point did not converge")  # pragma: no cover

    def sampling_interval(self, k, n_se=N_SE, n_points=11):
        """Range of ``(alpha, lambda)`` fixed points for gamma errors within ``n_se`` SE.

        Returns ``((alpha_lo, alpha_hi), (lambda_lo, lambda_hi))``.
        """
        pts = np.array([self.fixed_point(t=t, k=k) for t in np.linspace(-n_se, n_se, n_points)])
        return (pts[:, 0].min(), pts[:, 0].max()), (pts[:, 1].min(), pts[:, 1].max())


@pytest.fixture
def dense():
    """Factory of :class:`DenseReference`."""
    return DenseReference


# --------------------------------------------------------------------------
# Monte Carlo checks
# --------------------------------------------------------------------------


def assert_gaussian_draws(draws, mean, cov, n_se=N_SE):
    """Check draws (k, d) against ``N(mean, cov)`` with k-derived tolerances.

    The draws are whitened with the Cholesky factor of ``cov``: if they are
    right, ``Z = L^-1 (x - mean)`` has i.i.d. N(0, 1) entries. Then

    - each whitened sample mean has standard error ``1 / sqrt(k)``;
    - each entry of the whitened second moment ``S = Z^T Z / k`` (about the
      known mean) has variance ``(1 + delta_ij) / k`` (Wishart);
    - ``k * sum_i mean_i^2`` is chi-square with d degrees of freedom (mean d,
      variance 2d), and ``k * trace(S)`` chi-square with k d (mean k d,
      variance 2 k d): two global checks that catch a small error common to
      every coordinate (a wrong scale, a shifted mean).
    """
    draws = np.asarray(draws, dtype=np.float64)
    k, d = draws.shape
    L = np.linalg.cholesky(cov)
    Z = np.linalg.solve(L, (draws - mean).T).T
    zbar = Z.mean(axis=0)
    np.testing.assert_array_less(np.abs(zbar), n_se / np.sqrt(k), err_msg="whitened sample mean")
    S = Z.T @ Z / k
    se = np.sqrt((1.0 + np.eye(d)) / k)
    np.testing.assert_array_less(np.abs(S - np.eye(d)), n_se * se, err_msg="whitened sample covariance")
    chi_mean = k * np.sum(zbar**2)
    assert abs(chi_mean - d) <= n_se * np.sqrt(2.0 * d), ("k |mean|^2", chi_mean, d)
    chi_trace = k * np.trace(S)
    assert abs(chi_trace - k * d) <= n_se * np.sqrt(2.0 * k * d), ("k trace S", chi_trace, k * d)


def assert_mean_var(draws, mean, var, n_se=N_SE):
    """Per-column sample mean and variance of ``draws`` (m, k) against ``mean``, ``var`` (m,).

    Standard errors for k Gaussian draws: ``sqrt(var / k)`` for the sample
    mean and ``var * sqrt(2 / (k - 1))`` for the unbiased sample variance.
    """
    draws = np.asarray(draws, dtype=np.float64)
    k = draws.shape[1]
    np.testing.assert_array_less(np.abs(draws.mean(axis=1) - mean), n_se * np.sqrt(var / k), err_msg="sample mean")
    np.testing.assert_array_less(
        np.abs(draws.var(axis=1, ddof=1) - var), n_se * var * np.sqrt(2.0 / (k - 1)), err_msg="sample variance"
    )


@pytest.fixture
def gaussian_check():
    return SimpleNamespace(draws=assert_gaussian_draws, mean_var=assert_mean_var, n_se=N_SE)
