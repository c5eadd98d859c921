"""Linear-Gaussian chains: an exact kernel with closed-form marginals, evidence and optimal twist.

``x_K ~ N(0, I)`` and ``x_{k-1} | x_k ~ N(A_k x_k + b_k, diag(s_k^2))``. Every
quantity the tests compare against (the law of ``x_0``, ``log Z`` and the tilted
law for a linear reward, the optimal twist, a linear-Gaussian posterior) follows
from the affine map ``E[x_0 | x_k] = M_k x_k + m_k`` and ``Cov(x_0 | x_k) = V_k``.
"""
import math

import pyro.distributions as dist
import torch

from ..twists.linear import LinearTwist


class LinearGaussianKernel:
    """Kernel of a linear-Gaussian chain.

    :param A: ``(K, d)`` per-dimension coefficients or ``(K, d, d)`` matrices;
        ``A[k - 1]`` acts in transition ``k`` (from ``x_k`` to ``x_{k-1}``).
    :param b: ``(K, d)`` offsets. :param s: ``(K, d)`` positive standard deviations.

    States live on the device of ``A`` (``kernel.device``), with its dtype.
    """

    def __init__(self, A, b, s):
        A = torch.as_tensor(A)
        b, s = torch.as_tensor(b, device=A.device), torch.as_tensor(s, device=A.device)
        if A.dim() == 2:
            A = torch.diag_embed(A)
        if A.dim() != 3 or A.shape[-1] != A.shape[-2] or b.shape != A.shape[:2] or s.shape != b.shape:
            raise ValueError(
                "LinearGaussianKernel expects A of shape (K, d) or (K, d, d), and b, s of shape "
                f"(K, d); got A {tuple(A.shape)}, b {tuple(b.shape)}, s {tuple(s.shape)}"
            )
        if not (s > 0).all():
            raise ValueError("LinearGaussianKernel: every standard deviation in s must be positive")
        self.A, self.b, self.s = A, b, s
        self.num_steps, self.dim = b.shape
        self._M, self._m, self._V = self._backward_maps()

    @property
    def device(self):
        return self.A.device

    def _options(self):
        return {"dtype": self.A.dtype, "device": self.A.device}

    def _backward_maps(self):
        d = self.dim
        M = [torch.eye(d, **self._options())]
        m = [torch.zeros(d, **self._options())]
        V = [torch.zeros(d, d, **self._options())]
        for k in range(1, self.num_steps + 1):
            M_prev = M[-1]
            m.append(m[-1] + M_prev @ self.b[k - 1])
            V.append(V[-1] + M_prev @ torch.diag(self.s[k - 1] ** 2) @ M_prev.T)
            M.append(M_prev @ self.A[k - 1])
        return torch.stack(M), torch.stack(m), torch.stack(V)

    def prior(self, shape=None):
        if shape is not None and tuple(shape) != (self.dim,):
            raise ValueError(f"this kernel's states have shape ({self.dim},), not {tuple(shape)}")
        return dist.Normal(torch.zeros(self.dim, **self._options()), 1.0).to_event(1)

    def transition(self, k, x):
        mean = x @ self.A[k - 1].T + self.b[k - 1]
        return dist.Normal(mean, self.s[k - 1]).to_event(1)

    def predict_x0(self, k, x):
        """``E[x_0 | x_k = x]``, exact."""
        return x @ self._M[k].T + self._m[k]

    def x0_variance(self, k):
        """The diagonal of ``Cov(x_0 | x_k)``, exact; zero at ``k = 0``."""
        return torch.diagonal(self._V[k])

    def marginal(self):
        """Mean and covariance of ``x_0`` under the chain."""
        M, m, V = self._M[-1], self._m[-1], self._V[-1]
        return m, M @ M.T + V

    def log_normalizer(self, a, alpha=1.0):
        """``log Z = log E[exp(a . x_0 / alpha)]``."""
        c = torch.as_tensor(a, **self._options()) / alpha
        mean, cov = self.marginal()
        return c @ mean + 0.5 * c @ cov @ c

    def tilted(self, a, alpha=1.0):
        """Mean and covariance of ``x_0`` under ``p(x_0) exp(a . x_0 / alpha) / Z``."""
        c = torch.as_tensor(a, **self._options()) / alpha
        mean, cov = self.marginal()
        return mean + cov @ c, cov

    def optimal_twist(self, a, alpha=1.0):
        """The optimal twist ``log psi*_k(x) = log E[exp(a . x_0 / alpha) | x_k = x]`` as a ``LinearTwist``."""
        c = torch.as_tensor(a, **self._options()) / alpha
        weight = torch.einsum("kij,i->kj", self._M, c)
        bias = self._m @ c + 0.5 * torch.einsum("i,kij,j->k", c, self._V, c)
        return LinearTwist(self.num_steps, (self.dim,), weight=weight, bias=bias)

    def posterior(self, H, y, noise_std):
        """Mean and covariance of ``x_0`` given ``y ~ N(x_0 @ H, noise_std^2 I)``."""
        H = torch.as_tensor(H, **self._options())
        y = torch.as_tensor(y, **self._options())
        mean, cov = self.marginal()
        S = H.T @ cov @ H + noise_std**2 * torch.eye(H.shape[1], **self._options())
        gain = cov @ H @ torch.linalg.inv(S)
        return mean + gain @ (y - mean @ H), cov - gain @ H.T @ cov

    def log_marginal_likelihood(self, H, y, noise_std):
        """``log p(y)`` for ``y ~ N(x_0 @ H, noise_std^2 I)``."""
        H = torch.as_tensor(H, **self._options())
        mean, cov = self.marginal()
        S = H.T @ cov @ H + noise_std**2 * torch.eye(H.shape[1], **self._options())
        return dist.MultivariateNormal(mean @ H, S).log_prob(torch.as_tensor(y, **self._options()))


def random_linear_gaussian(dim, num_steps, seed=0, dtype=torch.float64, device=None):
    """A contracting linear-Gaussian chain with distinct per-dimension coefficients, for tests and demos;
    drawn on the host from ``seed`` (the same chain on every device), then placed on ``device``."""
    g = torch.Generator().manual_seed(seed)
    options = {"generator": g, "dtype": dtype, "device": "cpu"}
    A = 0.9 + 0.09 * torch.rand(num_steps, dim, **options)
    b = 0.05 * torch.randn(num_steps, dim, **options)
    s = math.sqrt(1.0 / num_steps) * (0.5 + torch.rand(num_steps, dim, **options))
    return LinearGaussianKernel(A.to(device), b.to(device), s.to(device))
