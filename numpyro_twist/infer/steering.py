"""The reference steering methods, under TwistedSMC's ``run()`` and result.

Feynman-Kac steering (Singhal et al., 2025) and the Twisted Diffusion Sampler
(Wu et al., 2023) take their look-ahead potentials from the model's own reward
sites, evaluated on the kernel's ``predict_x0`` estimate of the final state.
"""
import warnings

import jax.numpy as jnp

from ..twists.lookahead import LookaheadTwist, check_potential
from .lookahead import lookahead_parts
from .twisted_smc import TwistedSMC


class ImportanceSampling(TwistedSMC):
    """Sequential importance sampling: the (optionally twisted) proposal, never resampling."""

    def __init__(self, model, num_particles, twist=None, keep_paths=True, devices=None):
        super().__init__(model, num_particles, twist=twist, ess_threshold=0.0, keep_paths=keep_paths, devices=devices)


class BestOfN(TwistedSMC):
    """Draw N samples from the base chain and keep the one with the highest reward.

    ``log_evidence`` is the plain importance-sampling estimate; the returned weights put all
    mass on the best particle.
    """

    def __init__(self, model, num_particles, keep_paths=True, devices=None):
        super().__init__(model, num_particles, ess_threshold=0.0, keep_paths=keep_paths, devices=devices)

    def run(self, rng_key, *args, **kwargs):
        result = super().run(rng_key, *args, **kwargs)
        best = jnp.full_like(result.log_weights, -jnp.inf).at[jnp.argmax(result.log_weights)].set(0.0)
        result.log_weights = best
        return result


class _LookaheadSMC(TwistedSMC):
    """Twisted SMC whose twist is the model's reward at the kernel's ``predict_x0``."""

    potential = "diff"
    lookahead_proposal = "bootstrap"

    def _twist_for_run(self, twist, kernel, args, kwargs):
        predict_x0, reward = lookahead_parts(kernel, self.model, args, kwargs, type(self).__name__)
        return LookaheadTwist(predict_x0, reward, potential=self.potential, proposal=self.lookahead_proposal)


class FKSteering(_LookaheadSMC):
    """Feynman-Kac steering: bootstrap proposals, potentials from the look-ahead reward.

    :param str potential: ``"diff"`` (difference of successive look-ahead rewards), ``"max"``
        (their running maximum) or ``"sum"`` (their running sum). The final weight divides the
        last potential out, so every choice targets the reward-tilted distribution; ``"sum"``
        warns, since its final weights degenerate.
    :param resampling_steps: the steps ``k`` at which to resample (default: every step).
    :param float ess_threshold: resample at those steps when ESS < ``ess_threshold * N`` (default 1: always).
    """

    def __init__(self, model, num_particles, potential="diff", resampling="systematic", ess_threshold=1.0,
                 resampling_steps=None, keep_paths=True, devices=None):
        super().__init__(model, num_particles, resampling=resampling, ess_threshold=ess_threshold,
                         resampling_steps=resampling_steps, keep_paths=keep_paths, devices=devices)
        self.potential = check_potential(potential)
        if potential == "sum":
            warnings.warn(
                "FKSteering(potential='sum') tilts the particles by the running sum of look-ahead rewards, about "
                "K times the reward after K steps, and divides that sum out only at the last step, so the final "
                "weights degenerate. Z_hat stays unbiased, but its mean is carried by rare paths. Use 'diff' or "
                "'max'.",
                stacklevel=2,
            )


class TDS(_LookaheadSMC):
    """The Twisted Diffusion Sampler: twist ``exp(reward(predict_x0(k, x_k)))``, proposal
    ``N(mu + sigma^2 grad log psi_k(x_k), sigma^2)``, exact importance weights.

    :param float max_shift: the guidance ``sigma^2 grad log psi_k`` is scaled down where its norm
        exceeds ``max_shift`` times the norm of ``sigma`` (``None``: unbounded): the gradient of a sharp
        reward through the denoiser can be far larger than a step can follow; the weights stay exact.
    """

    lookahead_proposal = "gradient_at_state"

    def __init__(self, model, num_particles, resampling="systematic", ess_threshold=0.5, max_shift=1.0,
                 keep_paths=True, devices=None):
        super().__init__(model, num_particles, resampling=resampling, ess_threshold=ess_threshold,
                         max_shift=max_shift, keep_paths=keep_paths, devices=devices)

