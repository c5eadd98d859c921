"""Denoising kernels: DDPM and DDIM (eta > 0) transitions from a scheduler's ``alphas_cumprod``.

diffusers' ``scheduler.step()`` draws the next state but does not return the
transition's mean and variance, which twisted SMC needs (proposal densities,
twisted means). This module computes them from ``alphas_cumprod`` exactly as
``step()`` does, around an ``x_0`` predictor supplied by a subclass. The schedule is
read once into Python numbers, so that a step makes no tensor outside the states' device.
"""
import pyro.distributions as dist
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from .row_cache import RowCache

# diffusers clamps the DDPM posterior variance at this floor; a step at the floor
# adds no noise worth a density, so it is a deterministic step.
_VARIANCE_FLOOR = 1e-20


class DenoisingKernel:
    """A reverse-diffusion kernel for ``diffusion_chain``.

    State ``x_k`` (``k`` steps to go) sits at the scheduler's timestep
    ``timesteps[num_steps - k]``; ``x_0`` is the clean sample.

    :param scheduler: a diffusers ``DDPMScheduler`` or ``DDIMScheduler``; the kernel keeps a copy
        (``kernel.scheduler``) and never changes the one passed in.
    :param int num_steps: number of inference steps (``set_timesteps`` of that copy).
    :param tuple event_shape: shape of one state.
    :param float eta: DDIM noise scale; must be positive (``eta = 0`` is deterministic).
    :param dtype: dtype of the states.
    :param int batch_size: the most rows the denoiser sees in one call (``None``: all), which
        bounds its memory for any number of particles; look-ahead gradients through it are
        taken on as many rows at a time.

    A subclass provides ``denoise(t, x)`` and ``device``, where its denoiser and the states live.
    """

    def __init__(self, scheduler, num_steps, event_shape, eta=1.0, dtype=torch.float32, batch_size=None):
        if isinstance(scheduler, DDPMScheduler):
            self.kind = "ddpm"
            if scheduler.config.variance_type not in ("fixed_small", "fixed_large"):
                raise ValueError(
                    f"variance_type {scheduler.config.variance_type!r} is not supported: "
                    "use 'fixed_small' or 'fixed_large'"
                )
        elif isinstance(scheduler, DDIMScheduler):
            self.kind = "ddim"
            if not eta > 0:
                raise ValueError(
                    "DDIM with eta = 0 is a deterministic sampler and cannot be steered by SMC: "
                    "pass eta > 0 (eta = 1 matches DDPM's variance)"
                )
        else:
            raise TypeError(
                f"{type(scheduler).__name__} is not supported: use DDPMScheduler or DDIMScheduler"
            )
        if scheduler.config.thresholding:
            raise ValueError("dynamic thresholding is not supported: set thresholding=False")
        if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        # A copy of the user's scheduler: set_timesteps below must not reach another kernel built on it.
        scheduler = self.scheduler = type(scheduler).from_config(scheduler.config)
        self.eta = float(eta)
        self.event_shape = tuple(event_shape)
        self.event_dim = len(self.event_shape)
        self.dtype = dtype
        self.batch_size = None if batch_size is None else int(batch_size)
        self._alphas_cumprod = scheduler.alphas_cumprod.tolist()
        self._alpha_prod_after_last = float(scheduler.one if self.kind == "ddpm" else scheduler.final_alpha_cumprod)
        scheduler.set_timesteps(num_steps)
        self.num_steps = len(scheduler.timesteps)
        self.timesteps = [int(t) for t in scheduler.timesteps]
        self._previous_timesteps = [self._previous_timestep(t) for t in self.timesteps]
        self.num_evaluations = 0
        self._last_evaluation = RowCache()

    def denoise(self, t, x):
        """The unclipped prediction of ``x_0`` from rows ``x`` at timestep ``t`` (one denoiser call)."""
        raise NotImplementedError

    @property
    def device(self):
        """The device of the denoiser, where the chain's states live."""
        raise NotImplementedError

    def prior(self, shape=None):
        if shape is not None and tuple(shape) != self.event_shape:
            raise ValueError(f"this kernel's states have shape {self.event_shape}, not {tuple(shape)}")
        zeros = torch.zeros(self.event_shape, dtype=self.dtype, device=self.device)
        return dist.Normal(zeros, float(self.scheduler.init_noise_sigma)).to_event(self.event_dim)

    def timestep(self, k):
        return self.timesteps[self.num_steps - k]

    def signal_variance(self, k):
        """``alpha_bar`` of step ``k``: the forward process gives ``x_k = sqrt(alpha_bar) x_0 +
        sqrt(1 - alpha_bar) noise`` (1 at ``k = 0``, where the state is the data)."""
        return 1.0 if k == 0 else self._alpha_prod(self.timestep(k))

    def _previous_timestep(self, t):
        if self.kind == "ddpm":
            return int(self.scheduler.previous_timestep(t))
        return t - self.scheduler.config.num_train_timesteps // self.scheduler.num_inference_steps

    def _alpha_prod(self, t):
        return self._alphas_cumprod[t] if t >= 0 else self._alpha_prod_after_last

    def _predict(self, t, x):
        # A look-ahead at x_k and the transition from the resampled x_k evaluate the
        # denoiser on the same rows: the second call finds them in the last evaluation.
        rows = x.reshape((-1,) + self.event_shape)
        x0 = self._last_evaluation.get(t, rows)
        if x0 is None:
            self.num_evaluations += rows.shape[0]
            if self.batch_size is None or rows.shape[0] <= self.batch_size:
                x0 = self.denoise(t, rows)
            else:
                x0 = torch.cat([self.denoise(t, chunk) for chunk in rows.split(self.batch_size)])
            self._last_evaluation.put(t, rows, x0)
        return x0.reshape(x.shape)

    def clear_cache(self):
        """Forget the last denoiser evaluation (after changing the denoiser's weights)."""
        self._last_evaluation.clear()

    def _clip(self, x0):
        config = self.scheduler.config
        if config.clip_sample:
            return x0.clamp(-config.clip_sample_range, config.clip_sample_range)
        return x0

    def predict_x0(self, k, x):
        """The denoiser's estimate of ``x_0`` from ``x_k = x`` (``x`` itself at ``k = 0``)."""
        if k == 0:
            return x
        return self._clip(self._predict(self.timestep(k), x))

    def denoising_mse(self, images, generator=None):
        """The denoiser's mean squared error per element at every step, ``(num_steps + 1, *event_shape)``:
        row ``k`` averages ``(predict_x0(k, x_k) - x_0)^2`` over ``images`` (``x_0``, a leading batch
        dimension) noised to ``x_k = sqrt(a_k) x_0 + sqrt(1 - a_k) eps``; row 0 is zero. Where the denoiser
        is the posterior mean ``E[x_0 | x_k]``, this is the average variance of ``x_0`` given ``x_k``: the
        look-ahead's uncertainty, ``TDS(..., x0_variance=lambda k: mse[k])``."""
        images = torch.as_tensor(images, dtype=self.dtype, device=self.device)
        if tuple(images.shape[1:]) != self.event_shape:
            raise ValueError(f"images must have shape (M, *{self.event_shape}), got {tuple(images.shape)}")
        rows = [torch.zeros(self.event_shape, dtype=self.dtype, device=self.device)]
        with torch.no_grad():
            for k in range(1, self.num_steps + 1):
                a = self._alpha_prod(self.timestep(k))
                noise = torch.randn(images.shape, generator=generator, dtype=self.dtype, device=self.device)
                rows.append((self.predict_x0(k, a**0.5 * images + (1 - a) ** 0.5 * noise) - images).square().mean(0))
        return torch.stack(rows)

    def transition(self, k, x):
        t, t_prev = self.timestep(k), self._previous_timesteps[self.num_steps - k]
        x0_raw = self._predict(t, x)
        x0 = self._clip(x0_raw)
        alpha_prod = self._alpha_prod(t)
        alpha_prod_prev = self._alpha_prod(t_prev)
        if self.kind == "ddpm":
            beta = 1 - alpha_prod / alpha_prod_prev
            mean = (alpha_prod_prev**0.5 * beta / (1 - alpha_prod)) * x0 + (
                (1 - beta) ** 0.5 * (1 - alpha_prod_prev) / (1 - alpha_prod)
            ) * x
            variance = max((1 - alpha_prod_prev) / (1 - alpha_prod) * beta, _VARIANCE_FLOOR)
            if self.scheduler.config.variance_type == "fixed_large":
                variance = beta
            deterministic = t == 0 or variance <= _VARIANCE_FLOOR
        else:
            variance = (1 - alpha_prod_prev) / (1 - alpha_prod) * (1 - alpha_prod / alpha_prod_prev)
            std = self.eta * variance**0.5
            x0_for_eps = x0 if self.scheduler.config.get("use_clipped_model_output", False) else x0_raw
            eps = (x - alpha_prod**0.5 * x0_for_eps) / (1 - alpha_prod) ** 0.5
            # round-off may leave a tiny negative where alpha_prod_prev is one
            mean = alpha_prod_prev**0.5 * x0 + max(1 - alpha_prod_prev - std**2, 0.0) ** 0.5 * eps
            variance = std**2
            deterministic = variance <= 0
        if deterministic:
            return dist.Delta(mean, event_dim=self.event_dim)
        return dist.Normal(mean, variance**0.5).to_event(self.event_dim)
