"""A denoising kernel over a diffusers ``UNet2DModel`` and its scheduler."""
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from .denoising import DenoisingKernel


class DiffusersKernel(DenoisingKernel):
    """Reverse transitions of a diffusers ``UNet2DModel`` under a DDPM or DDIM scheduler.

    :param unet: a ``UNet2DModel`` (unconditional).
    :param scheduler: a ``DDPMScheduler`` or ``DDIMScheduler``; its ``prediction_type``
        (``epsilon``, ``sample``, ``v_prediction``) and ``clip_sample`` are honoured.
    :param int num_steps: number of inference steps.
    :param float eta: DDIM noise scale (> 0).
    """

    def __init__(self, unet, scheduler, num_steps, eta=1.0):
        config = unet.config
        event_shape = (config.in_channels, config.sample_size, config.sample_size)
        super().__init__(scheduler, num_steps, event_shape, eta=eta, dtype=unet.dtype)
        self.unet = unet
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"unknown prediction_type {self.prediction_type!r}")

    @classmethod
    def from_pretrained(cls, path, num_steps, scheduler="ddpm", eta=1.0):
        """Load a local diffusers pipeline folder (``unet/`` and ``scheduler/`` subfolders)."""
        unet = UNet2DModel.from_pretrained(path, subfolder="unet")
        scheduler_cls = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}[scheduler]
        return cls(unet.eval(), scheduler_cls.from_pretrained(path, subfolder="scheduler"), num_steps, eta)

    def denoise(self, t, x):
        flat = x.reshape((-1,) + x.shape[-3:])
        output = self.unet(flat.to(self.unet.dtype), t).sample.to(x.dtype).reshape(x.shape)
        alpha_prod = self.scheduler.alphas_cumprod[t].to(x.dtype)
        if self.prediction_type == "epsilon":
            return (x - (1 - alpha_prod) ** 0.5 * output) / alpha_prod**0.5
        if self.prediction_type == "sample":
            return output
        return alpha_prod**0.5 * x - (1 - alpha_prod) ** 0.5 * output
