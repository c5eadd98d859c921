"""The shipped digits models, run in JAX and loaded offline in one call each.

* ``digits_kernel(num_steps=50)``: a :class:`~numpyro_twist.chains.DiffusersKernel` over the DDPM
  ``UNet2DModel`` trained on scikit-learn's 8x8 digits (images ``(1, 8, 8)`` in ``[-1, 1]``), the twin of
  ``pyro_twist.pretrained.digits_kernel``.
* ``digit_classifier()``: a :class:`DigitClassifier` of those images, the twin of
  ``pyro_twist.pretrained.digit_classifier``: ``classifier.log_prob(x0, label)`` is the reward
  ``log p(label | x0)`` that steers the model toward a digit, e.g.
  ``numpyro.factor("reward", classifier.log_prob(x0, 3))`` after the chain.

The weights are the ones pyro_twist ships (``pyro_twist/pretrained/digits/``), read from their
safetensors files without importing pyro_twist or torch.
"""
from pathlib import Path

import jax.numpy as jnp

from ..chains.diffusers_kernel import DiffusersKernel
from .classifier import DigitClassifier

DIGITS_DIR = Path(__file__).resolve().parents[2] / "pyro_twist" / "pretrained" / "digits"


def digits_kernel(num_steps=50, scheduler="ddpm", eta=1.0, dtype=jnp.float32):
    """The shipped digits DDPM as a JAX kernel of ``num_steps`` inference steps (``"ddpm"``, or ``"ddim"``
    with noise scale ``eta > 0``)."""
    return DiffusersKernel.from_pretrained(DIGITS_DIR, num_steps, scheduler=scheduler, eta=eta, dtype=dtype)


def digit_classifier(dtype=jnp.float32):
    """The shipped digit classifier (test accuracy in ``digits/training.json``) as a JAX :class:`DigitClassifier`."""
    return DigitClassifier.from_pretrained(DIGITS_DIR / "classifier", dtype=dtype)


__all__ = ["DIGITS_DIR", "DigitClassifier", "digit_classifier", "digits_kernel"]
