"""Gaussian-mixture data: the exact denoiser, a DDPM kernel over it, and the exact tilted mixture."""
import math

import torch
from diffusers import DDPMScheduler

from .denoising import DenoisingKernel


class GaussianMixture:
    """A mixture of Gaussians with diagonal covariances.

    :param weights: ``(C,)`` positive component weights (normalised here).
    :param means: ``(C, d)`` component means.
    :param stds: ``(C, d)`` or ``(C,)`` component standard deviations.
    """

    def __init__(self, weights, means, stds):
        self.means = torch.as_tensor(means)
        options = {"dtype": self.means.dtype, "device": self.means.device}
        weights = torch.as_tensor(weights, **options)
        self.weights = weights / weights.sum()
        stds = torch.as_tensor(stds, **options)
        self.variances = (stds[:, None] if stds.dim() == 1 else stds).expand_as(self.means) ** 2

    @classmethod
    def ring(cls, num_components=8, radius=3.0, std=0.3, dtype=torch.float64, device=None):
        """Equal-weight components evenly spaced on a circle."""
        options = {"dtype": dtype, "device": device}
        angle = 2 * math.pi * torch.arange(num_components, **options) / num_components
        means = radius * torch.stack([angle.cos(), angle.sin()], -1)
        return cls(torch.ones(num_components, **options), means, torch.full((num_components,), std, **options))

    def _log_joint(self, x, scale, noise_variance):
        # log w_c + log N(x; scale * mu_c, scale^2 * S_c + noise_variance), per component.
        variances = scale**2 * self.variances + noise_variance
        diff = x[..., None, :] - scale * self.means
        log_normal = -0.5 * (diff**2 / variances + torch.log(2 * math.pi * variances)).sum(-1)
        return self.weights.log() + log_normal, variances

    def log_prob(self, x):
        return torch.logsumexp(self._log_joint(x, 1.0, 0.0)[0], -1)

    def sample(self, num_samples, generator=None):
        comp = torch.multinomial(self.weights, num_samples, replacement=True, generator=generator)
        noise = torch.randn(num_samples, self.means.shape[-1], generator=generator, dtype=self.means.dtype,
                            device=self.means.device)
        return self.means[comp] + self.variances[comp].sqrt() * noise

    def posterior_mean(self, x, alpha_prod):
        """``E[x_0 | x_t = x]`` for ``x_t = sqrt(alpha_prod) x_0 + sqrt(1 - alpha_prod) eps``."""
        scale = alpha_prod**0.5
        log_joint, variances = self._log_joint(x, scale, 1 - alpha_prod)
        responsibilities = torch.softmax(log_joint, -1)
        gain = scale * self.variances / variances
        component_means = self.means + gain * (x[..., None, :] - scale * self.means)
        return (responsibilities[..., None] * component_means).sum(-2)

    def component_of(self, x):
        """Index of the component most responsible for each point."""
        return self._log_joint(x, 1.0, 0.0)[0].argmax(-1)

    def mode_weights(self, x, weights=None):
        """Fraction of (optionally weighted) points assigned to each component."""
        options = {"dtype": self.means.dtype, "device": self.means.device}
        counts = torch.zeros(len(self.weights), **options)
        w = torch.ones(x.shape[0], **options) if weights is None else weights.to(**options)
        counts.index_add_(0, self.component_of(x), w)
        return counts / counts.sum()

    def tilted(self, a, alpha=1.0):
        """The mixture ``p(x) exp(a . x / alpha) / Z``: another Gaussian mixture."""
        c = torch.as_tensor(a, dtype=self.means.dtype, device=self.means.device) / alpha
        log_w = self.weights.log() + self.means @ c + 0.5 * (self.variances * c**2).sum(-1)
        return GaussianMixture(torch.softmax(log_w, 0), self.means + self.variances * c, self.variances.sqrt())

    def log_normalizer(self, a, alpha=1.0):
        """``log E[exp(a . x / alpha)]``."""
        c = torch.as_tensor(a, dtype=self.means.dtype, device=self.means.device) / alpha
        return torch.logsumexp(self.weights.log() + self.means @ c + 0.5 * (self.variances * c**2).sum(-1), 0)


class GaussianMixtureKernel(DenoisingKernel):
    """A DDPM (or DDIM) chain whose denoiser is the exact posterior mean of Gaussian-mixture data.

    :param GaussianMixture mixture: the data distribution.
    :param int num_steps: number of inference steps.
    :param scheduler: defaults to a linear-beta ``DDPMScheduler`` with 1000 training steps
        and no clipping.
    :param int batch_size: the most rows the denoiser sees in one call (``None``: all).

    States live on the device of the mixture's parameters.
    """

    def __init__(self, mixture, num_steps, scheduler=None, eta=1.0, batch_size=None):
        if scheduler is None:
            scheduler = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
        super().__init__(scheduler, num_steps, (mixture.means.shape[-1],), eta=eta, dtype=mixture.means.dtype,
                         batch_size=batch_size)
        self.mixture = mixture

    @property
    def device(self):
        return self.mixture.means.device

    def denoise(self, t, x):
        return self.mixture.posterior_mean(x, self._alpha_prod(t))
