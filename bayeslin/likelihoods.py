"""Likelihood precisions ``B_i`` at a network's outputs, with square-root factors ``L_i L_i^T = B_i``.

``B_i`` is the Hessian of the negative log-likelihood of observation ``i``
with respect to the network outputs (the generalised Gauss-Newton
curvature). Sample-then-optimise needs draws of ``J^T B^1/2 xi`` and the
solvers need ``J^T B J``; both come from a factor ``L_i`` with
``L_i L_i^T = B_i``, which exists even where ``B_i`` is singular (softmax).

Arrays are per observation: outputs ``f`` of shape ``(n, m)``, blocks ``U`` of
shape ``(n, m, k)``. Everything is written over the array namespace of ``f``.
"""

from ._backend import create, device, get_namespace

__all__ = ["GaussianLikelihood", "LogisticLikelihood", "SoftmaxLikelihood"]


class _Likelihood:
    """Common interface: ``B``, its factor ``L`` and the NLL gradient at outputs ``f`` (n, m)."""

    def __init__(self, outputs):
        self.outputs = outputs
        self.xp = get_namespace(outputs)
        self.n, self.m = outputs.shape

    def sqrt_factor(self):
        """Return ``L`` with ``L_i L_i^T = B_i``, shape (n, m, m)."""
        raise NotImplementedError

    def hessian_times(self, U):
        """Return ``B_i U_i`` for ``U`` of shape (n, m, k)."""
        L = self.sqrt_factor()
        return self.xp.matmul(L, self.xp.matmul(self.xp.permute_dims(L, (0, 2, 1)), U))

    def sqrt_times(self, U):
        """Return ``L_i U_i`` for ``U`` of shape (n, m, k)."""
        return self.xp.matmul(self.sqrt_factor(), U)

    def sqrt_t_times(self, U):
        """Return ``L_i^T U_i`` for ``U`` of shape (n, m, k)."""
        return self.xp.matmul(self.xp.permute_dims(self.sqrt_factor(), (0, 2, 1)), U)

    def whitening_transform(self):
        """Return ``T_i = L_i^T`` (n, m, m): rows ``T_i J_i`` give ``Phi^T Phi = J^T B J``."""
        return self.xp.permute_dims(self.sqrt_factor(), (0, 2, 1))


class GaussianLikelihood(_Likelihood):
    """Gaussian noise of precision ``alpha`` on every output: ``B_i = alpha I_m``.

    Parameters
    ----------
    outputs : array of shape (n, m)
        Network outputs (only their shape and namespace matter).
    precision : float, default=1.0
        The noise precision ``alpha``.
    """

    def __init__(self, outputs, precision=1.0):
        super().__init__(outputs)
        self.precision = float(precision)

    def sqrt_factor(self):
        xp = self.xp
        eye = create(xp, "eye", self.m, dtype=self.outputs.dtype, device_=device(self.outputs)) * self.precision**0.5
        return xp.broadcast_to(eye[None, :, :], (self.n, self.m, self.m))

    def hessian_times(self, U):
        return self.precision * U

    def sqrt_times(self, U):
        return self.precision**0.5 * U

    def sqrt_t_times(self, U):
        return self.precision**0.5 * U

    def gradient(self, y):
        """Gradient of ``sum_i alpha/2 ||y_i - f_i||^2`` w.r.t. ``f``, shape (n, m)."""
        return self.precision * (self.outputs - y)


class LogisticLikelihood(_Likelihood):
    """Bernoulli likelihood on one logit (scikit-learn's binary MLPClassifier).

    ``p = sigmoid(f)``, ``B_i = p_i (1 - p_i)``, ``L_i = sqrt(B_i)``.

    Parameters
    ----------
    outputs : array of shape (n, 1)
        Logits.
    """

    def __init__(self, outputs):
        super().__init__(outputs)
        if self.m != 1:
            raise ValueError(f"LogisticLikelihood takes one logit per observation, got {self.m}.")
        self.proba = 1.0 / (1.0 + self.xp.exp(-outputs))

    def sqrt_factor(self):
        p = self.proba
        return ((p * (1.0 - p)) ** 0.5)[:, :, None]

    def hessian_times(self, U):
        p = self.proba
        return (p * (1.0 - p))[:, :, None] * U

    def gradient(self, y):
        """Gradient of the summed NLL w.r.t. the logits for labels ``y`` in {0, 1}, shape (n, 1)."""
        return self.proba - self.xp.reshape(y, (self.n, 1))


class SoftmaxLikelihood(_Likelihood):
    """Categorical likelihood on ``m`` logits: ``B_i = diag(p_i) - p_i p_i^T`` (singular).

    The factor is ``L_i = diag(sqrt p_i) - p_i sqrt(p_i)^T``: since
    ``sqrt(p_i)^T sqrt(p_i) = 1``, ``L_i L_i^T = diag(p_i) - p_i p_i^T``.

    Parameters
    ----------
    outputs : array of shape (n, m)
        Logits.
    """

    def __init__(self, outputs):
        super().__init__(outputs)
        xp = self.xp
        z = outputs - xp.max(outputs, axis=1, keepdims=True)
        e = xp.exp(z)
        self.proba = e / xp.sum(e, axis=1, keepdims=True)

    def sqrt_factor(self):
        xp = self.xp
        p = self.proba
        s = p**0.5
        eye = create(xp, "eye", self.m, dtype=p.dtype, device_=device(p))
        return eye[None, :, :] * s[:, None, :] - p[:, :, None] * s[:, None, :]

    def hessian_times(self, U):
        # diag(p) U - p (p^T U): O(m) per column instead of a dense m x m product.
        xp = self.xp
        p = self.proba[:, :, None]
        return p * U - p * xp.sum(p * U, axis=1, keepdims=True)

    def sqrt_times(self, U):
        # L U = sqrt(p) * U - p (sqrt(p)^T U)
        xp = self.xp
        p = self.proba[:, :, None]
        s = p**0.5
        return s * U - p * xp.sum(s * U, axis=1, keepdims=True)

    def sqrt_t_times(self, U):
        # L^T U = sqrt(p) * U - sqrt(p) (p^T U)
        xp = self.xp
        p = self.proba[:, :, None]
        s = p**0.5
        return s * U - s * xp.sum(p * U, axis=1, keepdims=True)

    def gradient(self, y):
        """Gradient of the summed NLL w.r.t. the logits for integer labels ``y``, shape (n, m)."""
        xp = self.xp
        onehot = xp.astype(xp.reshape(y, (self.n, 1)) == create(xp, "arange", self.m, device_=device(y))[None, :], self.proba.dtype)
        return self.proba - onehot
