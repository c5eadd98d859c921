"""DDPM denoising kernels: transition means and variances from a schedule's ``alphas_cumprod``.

Twisted SMC needs each reverse step's mean and variance (proposal densities, twisted
means), not just a draw. They follow from the cumulative products of the noise schedule,
as in DDPM with the ``fixed_small`` variance, around an ``x_0`` predictor supplied by a
subclass. The schedule is the one of diffusers' ``DDPMScheduler`` with ``linear`` (default) or
``squaredcos_cap_v2`` betas and ``leading`` timestep spacing, so the same chain can be built in both
backends. Per-step coefficients are arrays indexed by ``k``, so a transition works for a traced step.
"""
import math

import jax.numpy as jnp
import numpy as np
from numpyro import distributions as dist

# A step whose posterior variance falls to this floor adds no noise worth a density: it is
# deterministic (the last step of a DDPM, into timestep 0's predecessor).
_VARIANCE_FLOOR = 1e-20


def linear_alphas_cumprod(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02):
    """``prod_{s <= t} (1 - beta_s)`` for linearly spaced betas, as diffusers computes it: float32 betas,
    their product accumulated in float64 (as torch's ``cumprod`` does in float32) and rounded to float32."""
    betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float32)
    return _cumprod(1.0 - betas)


def _cumprod(alphas):
    return np.cumprod(alphas.astype(np.float64)).astype(np.float32)


def cosine_alphas_cumprod(num_train_timesteps=1000, max_beta=0.999):
    """The ``squaredcos_cap_v2`` schedule: betas from the cosine ``alpha_bar`` capped at ``max_beta``,
    in float64 then float32, their product as in :func:`linear_alphas_cumprod`, as diffusers computes it."""

    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = np.array([min(1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps),
                          max_beta) for i in range(num_train_timesteps)], dtype=np.float32)
    return _cumprod(1.0 - betas)


class DenoisingKernel:
    """A reverse-diffusion (DDPM) kernel for ``diffusion_chain``.

    State ``x_k`` (``k`` steps to go) sits at timestep ``timesteps[num_steps - k]``; ``x_0`` is
    the clean sample. A subclass provides ``denoise(alpha_prod, x)``, the prediction of ``x_0``
    from rows ``x`` at noise level ``alpha_prod``, or, for a denoiser that takes the timestep,
    overrides ``denoise_step(k, x)``; it sets ``clip_range`` to clip that prediction to
    ``[-clip_range, clip_range]`` where it is used (the scheduler's ``clip_sample``).

    The transition and the look-ahead ``predict_x0`` at a state share one denoiser call:
    ``denoise_step(k, x)`` is the call, and ``transition_from(k, x, denoised)`` and
    ``predict_x0_from(k, x, denoised)`` take its output; inference evaluates it once per step and
    carries it with the particles.

    :param int num_steps: number of inference steps.
    :param tuple event_shape: shape of one state.
    :param alphas_cumprod: the training schedule (default: 1000 linear betas, 1e-4 to 0.02).
    :param dtype: dtype of the states.
    """

    def __init__(self, num_steps, event_shape, alphas_cumprod=None, dtype=jnp.float32):
        alphas_cumprod = np.asarray(linear_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod)
        num_train = len(alphas_cumprod)
        if not 1 <= num_steps <= num_train:
            raise ValueError(f"num_steps must lie in [1, {num_train}], got {num_steps!r}")
        self.num_steps = int(num_steps)
        self.event_shape = tuple(event_shape)
        self.dtype = dtype
        ratio = num_train // self.num_steps
        self.timesteps = np.arange(self.num_steps)[::-1] * ratio
        # per step k = 0..K: the noise level of x_k, and the coefficients of the step into x_{k-1}
        alpha_prod = np.ones(self.num_steps + 1)
        alpha_prod[1:] = alphas_cumprod[self.timesteps[::-1]]
        previous = np.ones(self.num_steps + 1)
        previous[2:] = alpha_prod[1:-1]
        beta = 1.0 - alpha_prod / previous
        with np.errstate(divide="ignore", invalid="ignore"):
            coef_x0 = np.sqrt(previous) * beta / (1.0 - alpha_prod)
            coef_x = np.sqrt(1.0 - beta) * (1.0 - previous) / (1.0 - alpha_prod)
            variance = np.maximum((1.0 - previous) / (1.0 - alpha_prod) * beta, _VARIANCE_FLOOR)
        self.deterministic = variance <= _VARIANCE_FLOOR
        self.deterministic[0] = False  # no step leaves x_0
        self.clip_range = None
        self.alpha_prod = jnp.asarray(alpha_prod, dtype)
        self._coef_x0, self._coef_x = jnp.asarray(coef_x0, dtype), jnp.asarray(coef_x, dtype)
        self._std = jnp.asarray(np.sqrt(variance), dtype)
        if self.deterministic[2:].any():
            raise ValueError("only the last step of a denoising kernel may be deterministic: inference runs the "
                             "steps before it as one scan over a Gaussian transition")

    def denoise(self, alpha_prod, x):
        """The prediction of ``x_0`` from rows ``x`` at noise level ``alpha_prod``."""
        raise NotImplementedError

    def denoise_step(self, k, x):
        """The denoiser's prediction of ``x_0`` from ``x_k = x``, unclipped: ``denoise`` at step ``k``'s noise level."""
        return self.denoise(self.alpha_prod[k], x)

    def prior(self, shape=None):
        if shape is not None and tuple(shape) != self.event_shape:
            raise ValueError(f"this kernel's states have shape {self.event_shape}, not {tuple(shape)}")
        return dist.Normal(jnp.zeros(self.event_shape, self.dtype), 1.0).to_event(len(self.event_shape))

    def _clip(self, x0):
        return x0 if self.clip_range is None else jnp.clip(x0, -self.clip_range, self.clip_range)

    def predict_x0_from(self, k, x, denoised):
        """The estimate of ``x_0`` from ``x_k = x`` given ``denoised = denoise_step(k, x)`` (``x`` at ``k = 0``)."""
        return jnp.where(k == 0, x, self._clip(denoised))

    def predict_x0(self, k, x):
        """The denoiser's estimate of ``x_0`` from ``x_k = x`` (``x`` itself at ``k = 0``)."""
        if isinstance(k, (int, np.integer)) and k == 0:
            return x
        return self.predict_x0_from(k, x, self.denoise_step(k, x))

    def transition_from(self, k, x, denoised):
        """The law of ``x_{k-1}`` given ``x_k = x`` and ``denoised = denoise_step(k, x)``."""
        mean = self._coef_x0[k] * self._clip(denoised) + self._coef_x[k] * x
        event_dim = len(self.event_shape)
        # A traced k is one of the scanned steps, never the deterministic last one.
        if isinstance(k, (int, np.integer)) and self.deterministic[k]:
            return dist.Delta(mean, event_dim=event_dim)
        return dist.Normal(mean, self._std[k]).to_event(event_dim)

    def transition(self, k, x):
        return self.transition_from(k, x, self.denoise_step(k, x))
