"""A denoising kernel over a diffusers ``UNet2DModel`` and its scheduler."""
from pathlib import Path

from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from .denoising import DenoisingKernel


class DiffusersKernel(DenoisingKernel):
    """Reverse transitions of a diffusers ``UNet2DModel`` under a DDPM or DDIM scheduler.

    :param unet: a ``UNet2DModel`` (unconditional).
    :param scheduler: a ``DDPMScheduler`` or ``DDIMScheduler``; its ``prediction_type``
        (``epsilon``, ``sample``, ``v_prediction``) and ``clip_sample`` are honoured.
    :param int num_steps: number of inference steps.
    :param float eta: DDIM noise scale (> 0).
    :param int batch_size: the most images the UNet sees in one call (``None``: all of them).

    States live on the UNet's device (``kernel.device``) with its dtype.
    """

    def __init__(self, unet, scheduler, num_steps, eta=1.0, batch_size=None):
        config = unet.config
        event_shape = (config.in_channels, config.sample_size, config.sample_size)
        super().__init__(scheduler, num_steps, event_shape, eta=eta, dtype=unet.dtype, batch_size=batch_size)
        self.unet = unet
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"unknown prediction_type {self.prediction_type!r}")

    @classmethod
    def from_pretrained(cls, path, num_steps, scheduler="ddpm", eta=1.0, device=None, **kwargs):
        """Load a local diffusers pipeline folder (``unet/`` and ``scheduler/`` subfolders).

        ``kwargs`` go to the constructor (``batch_size``, say). Only local folders are read, never the
        network: a model from the Hub is downloaded by you first (``huggingface_hub.snapshot_download``),
        then loaded from its folder.
        """
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"DiffusersKernel.from_pretrained: no folder {str(folder)!r}. It loads a local diffusers "
                "pipeline folder (with unet/ and scheduler/ inside) and never downloads: check the path, or "
                "download the model first (huggingface_hub.snapshot_download) and pass the folder it returns."
            )
        missing = [sub for sub in ("unet", "scheduler") if not (folder / sub).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"DiffusersKernel.from_pretrained: {str(folder)!r} has no {' or '.join(m + '/' for m in missing)} "
                "subfolder; a diffusers pipeline folder holds the UNet in unet/ and the scheduler in scheduler/"
            )
        if scheduler not in ("ddpm", "ddim"):
            raise ValueError(f"scheduler must be 'ddpm' or 'ddim', got {scheduler!r}")
        unet = UNet2DModel.from_pretrained(folder, subfolder="unet", local_files_only=True, low_cpu_mem_usage=False)
        scheduler_cls = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}[scheduler]
        schedule = scheduler_cls.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
        return cls(unet.to(device).eval(), schedule, num_steps, eta, **kwargs)

    @property
    def device(self):
        # the first parameter's device: diffusers' unet.device walks every parameter, once per step here
        return next(self.unet.parameters()).device

    def denoise(self, t, x):
        output = self.unet(x.to(self.unet.dtype), t).sample.to(x.dtype)
        alpha_prod = self._alpha_prod(t)
        if self.prediction_type == "epsilon":
            return (x - (1 - alpha_prod) ** 0.5 * output) / alpha_prod**0.5
        if self.prediction_type == "sample":
            return output
        return alpha_prod**0.5 * x - (1 - alpha_prod) ** 0.5 * output
