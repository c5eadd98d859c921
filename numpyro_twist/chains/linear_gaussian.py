"""Linear-Gaussian chains: an exact kernel with closed-form marginals, evidence and optimal twist.

``x_K ~ N(0, I)`` and ``x_{k-1} | x_k ~ N(A_k x_k + b_k, diag(s_k^2))``. Every
quantity the tests compare against (the law of ``x_0``, ``log Z`` and the tilted
law for a linear reward, the optimal twist, a linear-Gaussian posterior) follows
from the affine map ``E[x_0 | x_k] = M_k x_k + m_k`` and ``Cov(x_0 | x_k) = V_k``.
"""
import math

import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import multivariate_normal
from numpyro import distributions as dist

from ..twists.linear import LinearTwist


class LinearGaussianKernel:
    """Kernel of a linear-Gaussian chain.

    :param A: ``(K, d)`` per-dimension coefficients or ``(K, d, d)`` matrices;
        ``A[k - 1]`` acts in transition ``k`` (from ``x_k`` to ``x_{k-1}``).
    :param b: ``(K, d)`` offsets. :param s: ``(K, d)`` positive standard deviations.
    """

    def __init__(self, A, b, s):
        A, b, s = jnp.asarray(A), jnp.asarray(b), jnp.asarray(s)
        if A.ndim == 2:
            A = jnp.einsum("ki,ij->kij", A, jnp.eye(A.shape[-1], dtype=A.dtype))
        if A.ndim != 3 or A.shape[-1] != A.shape[-2] or b.shape != A.shape[:2] or s.shape != b.shape:
            raise ValueError(
                "LinearGaussianKernel expects A of shape (K, d) or (K, d, d), and b, s of shape "
                f"(K, d); got A {A.shape}, b {b.shape}, s {s.shape}"
            )
        if not bool((s > 0).all()):
            raise ValueError("LinearGaussianKernel: every standard deviation in s must be positive")
        self.A, self.b, self.s = A, b, s
        self.num_steps, self.dim = b.shape
        self._M, self._m, self._V = self._backward_maps()

    def _backward_maps(self):
        d = self.dim
        M, m, V = [jnp.eye(d, dtype=self.A.dtype)], [jnp.zeros(d, self.A.dtype)], [jnp.zeros((d, d), self.A.dtype)]
        for k in range(1, self.num_steps + 1):
            m.append(m[-1] + M[-1] @ self.b[k - 1])
            V.append(V[-1] + (M[-1] * self.s[k - 1] ** 2) @ M[-1].T)
            M.append(M[-1] @ self.A[k - 1])
        return jnp.stack(M), jnp.stack(m), jnp.stack(V)

    def prior(self, shape=None):
        if shape is not None and tuple(shape) != (self.dim,):
            raise ValueError(f"this kernel's states have shape ({self.dim},), not {tuple(shape)}")
        return dist.Normal(jnp.zeros(self.dim, self.A.dtype), 1.0).to_event(1)

    def transition(self, k, x):
        mean = x @ self.A[k - 1].T + self.b[k - 1]
        return dist.Normal(mean, self.s[k - 1]).to_event(1)

    def predict_x0(self, k, x):
        """``E[x_0 | x_k = x]``, exact."""
        return x @ self._M[k].T + self._m[k]

    def marginal(self):
        """Mean and covariance of ``x_0`` under the chain."""
        M, m, V = self._M[-1], self._m[-1], self._V[-1]
        return m, M @ M.T + V

    def log_normalizer(self, a, alpha=1.0):
        """``log Z = log E[exp(a . x_0 / alpha)]``."""
        c = jnp.asarray(a) / alpha
        mean, cov = self.marginal()
        return c @ mean + 0.5 * c @ cov @ c

    def tilted(self, a, alpha=1.0):
        """Mean and covariance of ``x_0`` under ``p(x_0) exp(a . x_0 / alpha) / Z``."""
        mean, cov = self.marginal()
        return mean + cov @ (jnp.asarray(a) / alpha), cov

    def optimal_twist(self, a, alpha=1.0):
        """``log psi*_k(x) = log E[exp(a . x_0 / alpha) | x_k = x]`` as a :class:`LinearTwist`."""
        c = jnp.asarray(a) / alpha
        weight = jnp.einsum("kij,i->kj", self._M, c)
        bias = self._m @ c + 0.5 * jnp.einsum("i,kij,j->k", c, self._V, c)
        return LinearTwist(weight, bias)

    def _evidence_parts(self, H, noise_std):
        H = jnp.asarray(H)
        mean, cov = self.marginal()
        S = H.T @ cov @ H + noise_std**2 * jnp.eye(H.shape[1], dtype=cov.dtype)
        return H, mean, cov, S

    def posterior(self, H, y, noise_std):
        """Mean and covariance of ``x_0`` given ``y ~ N(x_0 @ H, noise_std^2 I)``."""
        H, mean, cov, S = self._evidence_parts(H, noise_std)
        gain = cov @ H @ jnp.linalg.inv(S)
        return mean + gain @ (jnp.asarray(y) - mean @ H), cov - gain @ H.T @ cov

    def log_marginal_likelihood(self, H, y, noise_std):
        """``log p(y)`` for ``y ~ N(x_0 @ H, noise_std^2 I)``."""
        H, mean, _, S = self._evidence_parts(H, noise_std)
        return multivariate_normal.logpdf(jnp.asarray(y), mean @ H, S)


def random_linear_gaussian(dim, num_steps, seed=0, dtype=jnp.float64):
    """A contracting linear-Gaussian chain with distinct per-dimension coefficients, for tests and demos,
    drawn from numpy's generator seeded with ``seed`` (float64 needs ``jax_enable_x64``)."""
    rng = np.random.default_rng(seed)
    A = 0.9 + 0.09 * rng.random((num_steps, dim))
    b = 0.05 * rng.standard_normal((num_steps, dim))
    s = math.sqrt(1.0 / num_steps) * (0.5 + rng.random((num_steps, dim)))
    return LinearGaussianKernel(*(jnp.asarray(v, dtype) for v in (A, b, s)))
