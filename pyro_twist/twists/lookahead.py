"""Look-ahead twists: the reward at the denoiser's estimate of the final state."""
import torch

POTENTIALS = ("diff", "max", "sum")


def check_potential(potential):
    if potential not in POTENTIALS:
        raise ValueError(f"unknown potential {potential!r}: use one of {POTENTIALS}")
    return potential


class LookaheadTwist:
    """``log psi_k(x) = log_reward(predict_x0(k, x))``, optionally accumulated along the path.

    With ``potential="diff"`` the twist is the look-ahead reward itself, so the
    incremental weights are its differences (Feynman-Kac steering's ``diff``, and
    the Twisted Diffusion Sampler's twist). ``"max"`` and ``"sum"`` carry the
    running maximum or sum of the look-ahead rewards along each particle's path.
    Inference always ends with the exact correction ``reward - log psi_0``.

    :param predict_x0: ``predict_x0(k, x)``, the kernel's denoiser.
    :param log_reward: ``log_reward(x0)``, one value per particle.
    :param str potential: ``"diff"``, ``"max"`` or ``"sum"``.
    :param str proposal: ``"bootstrap"`` (the base transition) or ``"gradient_at_state"``
        (the base mean shifted by variance times the gradient of ``log psi_k`` at ``x_k``).
    :param int batch_size: the most rows whose ``log psi`` inference differentiates at once
        (``None``: all): each row's value depends on that row alone, so chunks bound the memory
        of the backward pass through the denoiser without changing the result.
    :param x0_variance: ``None``, or ``x0_variance(k)``: the variance of ``x_0`` given ``x_k`` (a number,
        or a tensor of the state's shape), passed on as ``log_reward(x0, x0_variance(k))``.
    """

    def __init__(self, predict_x0, log_reward, potential="diff", proposal="bootstrap", batch_size=None,
                 x0_variance=None):
        self.predict_x0, self.log_reward = predict_x0, log_reward
        self.potential, self.proposal = check_potential(potential), proposal
        self.batch_size = batch_size
        self.x0_variance = x0_variance

    def log_psi(self, k, x):
        if self.x0_variance is None:
            return self.log_reward(self.predict_x0(k, x))
        return self.log_reward(self.predict_x0(k, x), self.x0_variance(k))

    def combine(self, previous, log_psi):
        """The path's potential from its previous one and the look-ahead at the new state."""
        if self.potential == "max":
            return torch.maximum(previous, log_psi)
        if self.potential == "sum":
            return previous + log_psi
        return log_psi
