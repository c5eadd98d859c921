"""Gaussian-mixture data: the exact denoiser, a DDPM kernel over it, and the exact tilted mixture."""
import math

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from .denoising import DenoisingKernel


class GaussianMixture:
    """A mixture of Gaussians with diagonal covariances.

    :param weights: ``(C,)`` positive component weights (normalised here).
    :param means: ``(C, d)`` component means.
    :param stds: ``(C, d)`` or ``(C,)`` component standard deviations.
    """

    def __init__(self, weights, means, stds):
        self.means = jnp.asarray(means)
        weights = jnp.asarray(weights, self.means.dtype)
        self.weights = weights / weights.sum()
        stds = jnp.asarray(stds, self.means.dtype)
        self.variances = jnp.broadcast_to((stds[:, None] if stds.ndim == 1 else stds) ** 2, self.means.shape)

    @classmethod
    def ring(cls, num_components=8, radius=3.0, std=0.3, dtype=jnp.float64):
        """Equal-weight components evenly spaced on a circle."""
        angle = 2 * math.pi * jnp.arange(num_components, dtype=dtype) / num_components
        means = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], -1)
        return cls(jnp.ones(num_components, dtype), means, jnp.full((num_components,), std, dtype))

    def _log_joint(self, x, scale, noise_variance):
        # log w_c + log N(x; scale * mu_c, scale^2 * S_c + noise_variance), per component.
        variances = scale**2 * self.variances + noise_variance
        diff = x[..., None, :] - scale * self.means
        log_normal = -0.5 * (diff**2 / variances + jnp.log(2 * math.pi * variances)).sum(-1)
        return jnp.log(self.weights) + log_normal, variances

    def log_prob(self, x):
        return logsumexp(self._log_joint(x, 1.0, 0.0)[0], -1)

    def sample(self, rng_key, num_samples):
        key_component, key_noise = jax.random.split(rng_key)
        component = jax.random.categorical(key_component, jnp.log(self.weights), shape=(num_samples,))
        noise = jax.random.normal(key_noise, (num_samples, self.means.shape[-1]), self.means.dtype)
        return self.means[component] + jnp.sqrt(self.variances[component]) * noise

    def posterior_mean(self, x, alpha_prod):
        """``E[x_0 | x_t = x]`` for ``x_t = sqrt(alpha_prod) x_0 + sqrt(1 - alpha_prod) eps``."""
        scale = jnp.sqrt(alpha_prod)
        log_joint, variances = self._log_joint(x, scale, 1 - alpha_prod)
        responsibilities = jax.nn.softmax(log_joint, -1)
        gain = scale * self.variances / variances
        component_means = self.means + gain * (x[..., None, :] - scale * self.means)
        return (responsibilities[..., None] * component_means).sum(-2)

    def component_of(self, x):
        """Index of the component most responsible for each point."""
        return self._log_joint(x, 1.0, 0.0)[0].argmax(-1)

    def mode_weights(self, x, weights=None):
        """Fraction of (optionally weighted) points assigned to each component."""
        w = jnp.ones(x.shape[0], self.means.dtype) if weights is None else jnp.asarray(weights, self.means.dtype)
        counts = jnp.zeros(self.weights.shape[0], self.means.dtype).at[self.component_of(x)].add(w)
        return counts / counts.sum()

    def _tilt(self, a, alpha):
        c = jnp.asarray(a, self.means.dtype) / alpha
        return c, jnp.log(self.weights) + self.means @ c + 0.5 * (self.variances * c**2).sum(-1)

    def tilted(self, a, alpha=1.0):
        """The mixture ``p(x) exp(a . x / alpha) / Z``: another Gaussian mixture."""
        c, log_w = self._tilt(a, alpha)
        return GaussianMixture(jax.nn.softmax(log_w), self.means + self.variances * c, jnp.sqrt(self.variances))

    def log_normalizer(self, a, alpha=1.0):
        """``log E[exp(a . x / alpha)]``."""
        return logsumexp(self._tilt(a, alpha)[1])


class GaussianMixtureKernel(DenoisingKernel):
    """A DDPM (or DDIM) chain whose denoiser is the exact posterior mean of Gaussian-mixture data.

    :param GaussianMixture mixture: the data distribution.
    :param int num_steps: number of inference steps.
    :param alphas_cumprod: the training schedule (default: diffusers' DDPM default, 1000 linear betas).
    :param float eta: ``None`` for DDPM steps, or DDIM's noise scale (> 0).
    :param bool set_alpha_to_one: DDIM's last step lands on ``alpha = 1`` (see :class:`DenoisingKernel`).
    """

    def __init__(self, mixture, num_steps, alphas_cumprod=None, eta=None, set_alpha_to_one=True):
        super().__init__(num_steps, (mixture.means.shape[-1],), alphas_cumprod, dtype=mixture.means.dtype, eta=eta,
                         set_alpha_to_one=set_alpha_to_one)
        self.mixture = mixture

    def denoise(self, alpha_prod, x):
        return self.mixture.posterior_mean(x, alpha_prod)
