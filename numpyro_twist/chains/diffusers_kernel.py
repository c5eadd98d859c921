"""A denoising kernel over a diffusers ``UNet2DModel`` run in JAX (:mod:`.unet`), and its DDPM or DDIM scheduler."""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .denoising import DenoisingKernel, cosine_alphas_cumprod, linear_alphas_cumprod
from .unet import load_unet, unet_apply

SCHEDULERS = ("ddpm", "ddim")


def scheduler_alphas_cumprod(config, scheduler="ddpm"):
    """``alphas_cumprod`` of a ``DDPMScheduler`` or ``DDIMScheduler`` config (a dict); raises on the options
    the kernel lacks (DDIM has no ``variance_type``: its variance is ``eta``'s)."""
    expected = {"thresholding": False, "timestep_spacing": "leading", "steps_offset": 0,
                "rescale_betas_zero_snr": False, "trained_betas": None}
    if scheduler == "ddpm":
        expected["variance_type"] = "fixed_small"
    for key, value in expected.items():
        if config.get(key, value) != value:
            raise ValueError(f"the JAX DiffusersKernel supports {key}={value!r} only, got {config[key]!r}")
    schedule = config.get("beta_schedule", "linear")
    num_train = config.get("num_train_timesteps", 1000)
    if schedule == "linear":
        return linear_alphas_cumprod(num_train, config.get("beta_start", 1e-4), config.get("beta_end", 0.02))
    if schedule == "squaredcos_cap_v2":
        return cosine_alphas_cumprod(num_train)
    raise ValueError(f"beta_schedule {schedule!r} is not supported: use 'linear' or 'squaredcos_cap_v2'")


class DiffusersKernel(DenoisingKernel):
    """DDPM or DDIM reverse transitions of a diffusers ``UNet2DModel`` whose forward pass runs in JAX.

    The twin of ``pyro_twist.DiffusersKernel`` (DDPM with the ``fixed_small`` variance, or DDIM with
    ``eta > 0``): the UNet's output at step ``k``'s timestep gives ``x_0`` by the scheduler's
    ``prediction_type``, clipped to ``[-clip_sample_range, clip_sample_range]`` when ``clip_sample`` is set.

    :param params: the UNet's parameters (:func:`~numpyro_twist.chains.unet.load_unet`).
    :param config: its :class:`~numpyro_twist.chains.unet.UNetConfig`.
    :param dict scheduler_config: the scheduler's config (``scheduler_config.json``), read as a
        ``DDPMScheduler``'s or a ``DDIMScheduler``'s (``set_alpha_to_one``) by ``scheduler``.
    :param int num_steps: number of inference steps.
    :param str scheduler: ``"ddpm"`` or ``"ddim"``.
    :param float eta: DDIM noise scale (> 0); unused by DDPM.
    """

    def __init__(self, params, config, scheduler_config, num_steps, scheduler="ddpm", eta=1.0):
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        dtype = params["conv_in"]["weight"].dtype
        event_shape = (config.in_channels, config.sample_size, config.sample_size)
        alphas_cumprod = scheduler_alphas_cumprod(scheduler_config, scheduler)
        ddim = scheduler == "ddim"
        super().__init__(num_steps, event_shape, alphas_cumprod, dtype=dtype, eta=eta if ddim else None,
                         set_alpha_to_one=scheduler_config.get("set_alpha_to_one", True))
        self._alphas_cumprod = jnp.asarray(alphas_cumprod, dtype)
        self.params, self.config = params, config
        self.prediction_type = scheduler_config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"unknown prediction_type {self.prediction_type!r}")
        self.clip_range = (float(scheduler_config.get("clip_sample_range", 1.0))
                           if scheduler_config.get("clip_sample", True) else None)
        self.eps_from_clipped = ddim and scheduler_config.get("use_clipped_model_output", False)
        # the timestep of x_k, k = 0..K (k = 0, the clean sample, is never denoised: any timestep will do)
        self.timestep_of_step = jnp.asarray(np.concatenate([[0], self.timesteps[::-1]]), jnp.int32)
        self._unet = jax.jit(unet_apply, static_argnums=3)

    @classmethod
    def from_pretrained(cls, path, num_steps, scheduler="ddpm", eta=1.0, dtype=jnp.float32):
        """Load a local diffusers pipeline folder (``unet/`` and ``scheduler/`` subfolders), its scheduler read
        as ``scheduler`` (``"ddpm"`` or ``"ddim"``, as ``pyro_twist``'s); never downloads."""
        folder = Path(path).expanduser()
        missing = [sub for sub in ("unet", "scheduler") if not (folder / sub).is_dir()]
        if missing:
            raise FileNotFoundError(f"DiffusersKernel.from_pretrained: {str(folder)!r} has no "
                                    f"{' or '.join(m + '/' for m in missing)} subfolder")
        params, config = load_unet(folder / "unet", dtype)
        scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        return cls(params, config, scheduler_config, num_steps, scheduler, eta)

    def unet(self, x, timesteps):
        """The UNet's output at rows ``x`` ``(N, C, H, W)`` and ``timesteps`` (scalar or ``(N,)``)."""
        return self._unet(self.params, x, timesteps, self.config)

    def denoise_timestep(self, t, x):
        """The prediction of ``x_0`` from ``x`` at timestep ``t``, unclipped (the kernel clips where it uses it)."""
        rows = x.reshape((-1,) + self.event_shape)
        output = self.unet(rows, t).astype(x.dtype).reshape(x.shape)
        alpha_prod = self._alphas_cumprod[t].astype(x.dtype)
        if self.prediction_type == "epsilon":
            return (x - jnp.sqrt(1 - alpha_prod) * output) / jnp.sqrt(alpha_prod)
        if self.prediction_type == "sample":
            return output
        return jnp.sqrt(alpha_prod) * x - jnp.sqrt(1 - alpha_prod) * output

    def denoise_step(self, k, x):
        return self.denoise_timestep(self.timestep_of_step[k], x)

    def denoise(self, alpha_prod, x):
        """``denoise_timestep`` at the training timestep whose noise level is nearest ``alpha_prod``."""
        t = jnp.argmin(jnp.abs(self._alphas_cumprod - alpha_prod))
        return self.denoise_timestep(t, x)
