"""The shipped digits diffusion model, run in JAX and loaded offline in one call.

* ``digits_kernel(num_steps=50)``: a :class:`~numpyro_twist.chains.DiffusersKernel` over the DDPM
  ``UNet2DModel`` trained on scikit-learn's 8x8 digits (images ``(1, 8, 8)`` in ``[-1, 1]``), the twin of
  ``pyro_twist.pretrained.digits_kernel``.

The weights are the ones pyro_twist ships (``pyro_twist/pretrained/digits/``), read from their
safetensors file without importing pyro_twist or torch.
"""
from pathlib import Path

import jax.numpy as jnp

from ..chains.diffusers_kernel import DiffusersKernel

DIGITS_DIR = Path(__file__).resolve().parents[2] / "pyro_twist" / "pretrained" / "digits"


def digits_kernel(num_steps=50, scheduler="ddpm", eta=1.0, dtype=jnp.float32):
    """The shipped digits DDPM as a JAX kernel of ``num_steps`` inference steps (``"ddpm"``, or ``"ddim"``
    with noise scale ``eta > 0``)."""
    return DiffusersKernel.from_pretrained(DIGITS_DIR, num_steps, scheduler=scheduler, eta=eta, dtype=dtype)


__all__ = ["DIGITS_DIR", "digits_kernel"]
