"""Denoising kernels: DDPM and DDIM (eta > 0) transition means and variances from a schedule's ``alphas_cumprod``.

Twisted SMC needs each reverse step's mean and variance (proposal densities, twisted
means), not just a draw. They follow from the cumulative products of the noise schedule,
as in DDPM with the ``fixed_small`` variance or DDIM with noise scale ``eta``, around an ``x_0``
predictor supplied by a subclass. The schedule is the one of diffusers' ``DDPMScheduler`` and
``DDIMScheduler`` with ``linear`` (default) or ``squaredcos_cap_v2`` betas and ``leading`` timestep
spacing, so the same chain can be built in both backends. Per-step coefficients are arrays indexed by
``k``, so a transition works for a traced step.
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
    """A reverse-diffusion (DDPM or DDIM) kernel for ``diffusion_chain``.

    State ``x_k`` (``k`` steps to go) sits at timestep ``timesteps[num_steps - k]``; ``x_0`` is
    the clean sample. A subclass provides ``denoise(alpha_prod, x)``, the prediction of ``x_0``
    from rows ``x`` at noise level ``alpha_prod``, or, for a denoiser that takes the timestep,
    overrides ``denoise_step(k, x)``; it sets ``clip_range`` to clip that prediction to
    ``[-clip_range, clip_range]`` where it is used (the scheduler's ``clip_sample``), and
    ``eps_from_clipped`` to derive DDIM's noise from the clipped prediction rather than the raw one.

    The step from ``x_k`` to ``x_{k-1}`` is Gaussian with mean ``a_k x0 + b_k x_k + c_k eps``, where
    ``x0`` is the (clipped) prediction and ``eps = (x_k - sqrt(alpha_k) x0_raw) / sqrt(1 - alpha_k)`` the
    noise it implies: DDPM's posterior mean (``c_k = 0``) or DDIM's ``sqrt(alpha_{k-1}) x0 +
    sqrt(1 - alpha_{k-1} - sigma_k^2) eps`` (``b_k = 0``), with ``sigma_k^2`` the DDPM posterior variance,
    times ``eta^2`` for DDIM. A step whose variance vanishes (the last one, into ``alpha = 1``) is a ``Delta``.

    The transition and the look-ahead ``predict_x0`` at a state share one denoiser call:
    ``denoise_step(k, x)`` is the call, and ``transition_from(k, x, denoised)`` and
    ``predict_x0_from(k, x, denoised)`` take its output; inference evaluates it once per step and
    carries it with the particles.

    :param int num_steps: number of inference steps.
    :param tuple event_shape: shape of one state.
    :param alphas_cumprod: the training schedule (default: 1000 linear betas, 1e-4 to 0.02).
    :param dtype: dtype of the states.
    :param float eta: ``None`` for DDPM steps, or DDIM's noise scale, positive (``eta = 0`` is deterministic
        and cannot be steered; ``eta = 1`` has DDPM's variance).
    :param bool set_alpha_to_one: DDIM's last step lands on ``alpha = 1`` (else on the first training
        timestep's ``alphas_cumprod[0]``), as diffusers' ``DDIMScheduler`` option of that name.
    """

    def __init__(self, num_steps, event_shape, alphas_cumprod=None, dtype=jnp.float32, eta=None,
                 set_alpha_to_one=True):
        if eta is not None and not eta > 0:
            raise ValueError(f"DDIM with eta = {eta!r} cannot be steered by SMC (eta = 0 is a deterministic sampler): "
                             "pass eta > 0 (eta = 1 matches DDPM's variance), or eta=None for DDPM steps")
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
        if eta is not None and not set_alpha_to_one:
            previous[1] = alphas_cumprod[0]
        beta = 1.0 - alpha_prod / previous
        with np.errstate(divide="ignore", invalid="ignore"):
            posterior_variance = (1.0 - previous) / (1.0 - alpha_prod) * beta
            if eta is None:
                coef_x0 = np.sqrt(previous) * beta / (1.0 - alpha_prod)
                coef_x = np.sqrt(1.0 - beta) * (1.0 - previous) / (1.0 - alpha_prod)
                coef_eps, variance = np.zeros_like(previous), posterior_variance
            else:
                variance = eta**2 * posterior_variance
                coef_x0, coef_x = np.sqrt(previous), np.zeros_like(previous)
                # round-off may leave a tiny negative where alpha_{k-1} is one
                coef_eps = np.sqrt(np.maximum(1.0 - previous - variance, 0.0))
            variance = np.maximum(variance, _VARIANCE_FLOOR)
        self.eta = eta
        self.deterministic = variance <= _VARIANCE_FLOOR
        self.deterministic[0] = False  # no step leaves x_0
        self.clip_range, self.eps_from_clipped = None, False
        self.alpha_prod = jnp.asarray(alpha_prod, dtype)
        self._coef_x0, self._coef_x = jnp.asarray(coef_x0, dtype), jnp.asarray(coef_x, dtype)
        self._coef_eps = jnp.asarray(coef_eps, dtype)
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
        x0 = self._clip(denoised)
        mean = self._coef_x0[k] * x0 + self._coef_x[k] * x
        if self.eta is not None:
            alpha_prod = self.alpha_prod[k]
            eps = (x - jnp.sqrt(alpha_prod) * (x0 if self.eps_from_clipped else denoised)) / jnp.sqrt(1 - alpha_prod)
            mean = mean + self._coef_eps[k] * eps
        event_dim = len(self.event_shape)
        # A traced k is one of the scanned steps, never the deterministic last one.
        if isinstance(k, (int, np.integer)) and self.deterministic[k]:
            return dist.Delta(mean, event_dim=event_dim)
        return dist.Normal(mean, self._std[k]).to_event(event_dim)

    def transition(self, k, x):
        return self.transition_from(k, x, self.denoise_step(k, x))
