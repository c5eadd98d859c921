"""Shared problems for the numpyro_twist tests: float64, and the linear-Gaussian chain of the Pyro tests."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro

from numpyro_twist import diffusion_chain, markov_chain
from numpyro_twist.chains import random_linear_gaussian

jax.config.update("jax_enable_x64", True)

DIM, NUM_STEPS = 3, 20
# An asymmetric linear reward: unequal magnitudes and mixed signs.
REWARD = jnp.array([0.8, -0.5, 0.3])
LG_KERNEL = random_linear_gaussian(DIM, NUM_STEPS, seed=0)


def lg_model(kernel, a):
    """The library's chain helper over a kernel, then a linear reward."""

    def model():
        x0 = diffusion_chain("x", kernel, (kernel.dim,))
        numpyro.factor("reward", x0 @ a)
        return x0

    return model


def lg_markov_model(kernel, a):
    """The same chain written with markov_chain from its init law and transition."""

    def model():
        x0 = markov_chain("x", kernel.prior(), kernel.transition, kernel.num_steps)
        numpyro.factor("reward", x0 @ a)
        return x0

    return model


def log_evidence_over_keys(sampler, seed, repeats, *args):
    """``log_evidence`` of ``repeats`` independent passes, one compiled vmap over their keys."""
    keys = jax.random.split(jax.random.PRNGKey(seed), repeats)
    return jax.jit(jax.vmap(lambda key: sampler.pure_run(key, *args).log_evidence))(keys)


def z_ratio_mean_and_se(sampler, log_z, seed=0, repeats=100):
    """Mean of ``Z_hat / Z`` over ``repeats`` passes, and its standard error."""
    ratio = np.exp(np.asarray(log_evidence_over_keys(sampler, seed, repeats)) - float(log_z))
    return ratio.mean(), ratio.std(ddof=1) / math.sqrt(repeats)
