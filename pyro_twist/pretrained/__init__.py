"""The shipped digits models, loaded offline in one call each.

* ``digits_kernel(num_steps=50)``: a :class:`~pyro_twist.DiffusersKernel` over a DDPM
  ``UNet2DModel`` trained on scikit-learn's 8x8 digits (images ``(1, 8, 8)`` in ``[-1, 1]``).
* ``digit_classifier()``: a :class:`DigitClassifier` of those images (the reward of the examples:
  ``classifier.log_prob(x0, label)``).
* ``load_digits(split)``: the train or test images and labels, with the split the models were trained on.
* ``digit_class_twist(kernel)``: a :class:`~pyro_twist.GaussianClassTwist` of the training split's digits,
  steering each run toward the digit it is given.

The weights lie in ``pyro_twist/pretrained/digits/`` (diffusers' ``save_pretrained`` layout) and
are rebuilt by ``python -m pyro_twist.pretrained.train_digits``.
"""
from pathlib import Path

from ..chains.diffusers_kernel import DiffusersKernel
from ..twists.gaussian_classes import GaussianClassTwist
from .classifier import DigitClassifier
from .data import load_digits

DIGITS_DIR = Path(__file__).resolve().parent / "digits"


def digits_kernel(num_steps=50, scheduler="ddpm", eta=1.0, device=None, **kwargs):
    """The shipped digits DDPM as a kernel of ``num_steps`` inference steps (``"ddpm"``, or ``"ddim"``
    with noise scale ``eta > 0``), on ``device``; ``kwargs`` go to :class:`~pyro_twist.DiffusersKernel`."""
    return DiffusersKernel.from_pretrained(DIGITS_DIR, num_steps, scheduler=scheduler, eta=eta, device=device,
                                           **kwargs)


def digit_classifier(device=None):
    """The shipped digit classifier (test accuracy in ``digits/training.json``), in eval mode on ``device``."""
    classifier = DigitClassifier.from_pretrained(DIGITS_DIR / "classifier", local_files_only=True,
                                                 low_cpu_mem_usage=False)
    return classifier.to(device).eval()


def digit_class_twist(kernel, guidance=1.0, floor=0.05):
    """The twist toward a digit from the training split's class Gaussians pushed through ``kernel``'s noise
    (:meth:`GaussianClassTwist.from_labelled`), for a model called with the digit, ``model(digit)``.
    ``guidance``: 1 to steer with it as it is, 0 to start ``TRITSMC``'s learning from the base chain.
    ``floor``: added to the class probability; 0.05 for a twist used as it is, ``LEARNING_FLOOR`` (0.002)
    for one that ``TRITSMC`` learns (see :class:`GaussianClassTwist`)."""
    images, labels = load_digits("train")
    return GaussianClassTwist.from_labelled(kernel.signal_variance, kernel.num_steps, images, labels,
                                            target=lambda digit: digit, guidance=guidance, floor=floor)


__all__ = ["DIGITS_DIR", "DigitClassifier", "digit_class_twist", "digit_classifier", "digits_kernel", "load_digits"]
