"""numpyro_twist: Z_hat is unbiased on a linear-Gaussian chain, bootstrap and twisted with adaptive resampling."""
import jax
import jax.numpy as jnp
import pytest

from numpyro_twist import LinearTwist, TwistedSMC
from numpyro_twist.smc import RESAMPLERS

from .numpyro_common import LG_KERNEL, REWARD, lg_model, z_ratio_mean_and_se


def varying_twist_sampler(scheme):
    """An imperfect twist whose error changes from step to step (a uniformly scaled optimal twist would
    put all its error into the last weight): adaptive resampling triggers at some steps only."""
    optimal = LG_KERNEL.optimal_twist(REWARD)
    scale = 0.5 + 0.4 * jnp.cos(jnp.arange(LG_KERNEL.num_steps + 1.0))
    twist = LinearTwist(scale[:, None] * optimal.weight, optimal.bias)
    return TwistedSMC(lg_model(LG_KERNEL, REWARD), 32, twist=twist, resampling=scheme, ess_threshold=0.9,
                      keep_paths=False)


@pytest.mark.parametrize("scheme", sorted(RESAMPLERS))
def test_bootstrap_evidence_is_unbiased(scheme):
    sampler = TwistedSMC(lg_model(LG_KERNEL, REWARD), 32, resampling=scheme, ess_threshold=1.0, keep_paths=False)
    mean, se = z_ratio_mean_and_se(sampler, LG_KERNEL.log_normalizer(REWARD))
    # 100 passes of 32 particles: the mean of Z_hat / Z within 4 standard errors of 1, and those small
    assert abs(mean - 1) <= 4 * se, (mean, se)
    assert se < 0.05, se


@pytest.mark.parametrize("scheme", sorted(RESAMPLERS))
def test_adaptively_resampled_twisted_evidence_is_unbiased(scheme):
    sampler = varying_twist_sampler(scheme)
    mean, se = z_ratio_mean_and_se(sampler, LG_KERNEL.log_normalizer(REWARD))
    # 100 passes of 32 particles: the mean of Z_hat / Z within 4 standard errors of 1, and those small
    assert abs(mean - 1) <= 4 * se, (mean, se)
    assert se < 0.05, se


def test_adaptive_resampling_happens_at_some_steps_only():
    result = varying_twist_sampler("systematic").run(jax.random.PRNGKey(0))
    assert 0 < result.num_resampling < LG_KERNEL.num_steps + 1
