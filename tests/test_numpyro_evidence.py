"""numpyro_twist: Z_hat is unbiased on a linear-Gaussian chain, for every method and resampling scheme."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_twist import FKSteering, LinearTwist, TwistedSMC
from numpyro_twist.smc import RESAMPLERS

from .numpyro_common import LG_KERNEL, REWARD, lg_model, log_evidence_over_keys

REPEATS = 100


def sampler_for(method, scheme):
    model = lg_model(LG_KERNEL, REWARD)
    if method == "bootstrap":
        return TwistedSMC(model, 32, resampling=scheme, ess_threshold=1.0, keep_paths=False)
    if method.startswith("fk"):
        return FKSteering(model, 32, potential=method[3:], resampling=scheme, keep_paths=False)
    # An imperfect twist whose error changes from step to step (a uniformly scaled optimal twist
    # would put all its error into the last weight): adaptive resampling triggers at some steps only.
    optimal = LG_KERNEL.optimal_twist(REWARD)
    scale = 0.5 + 0.4 * jnp.cos(jnp.arange(LG_KERNEL.num_steps + 1.0))
    return TwistedSMC(model, 32, twist=LinearTwist(scale[:, None] * optimal.weight, optimal.bias), resampling=scheme,
                      ess_threshold=0.9, keep_paths=False)


@pytest.mark.parametrize("scheme", sorted(RESAMPLERS))
@pytest.mark.parametrize("method", ["bootstrap", "fk_diff", "fk_max", "varying_twist"])
def test_evidence_is_unbiased(method, scheme):
    log_z = LG_KERNEL.log_normalizer(REWARD)
    ratio = np.exp(np.asarray(log_evidence_over_keys(sampler_for(method, scheme), 0, REPEATS)) - float(log_z))
    mean, se = ratio.mean(), ratio.std(ddof=1) / math.sqrt(REPEATS)
    # 100 passes of 32 particles: the mean of Z_hat / Z within 4 standard errors of 1, and those small
    assert abs(mean - 1) <= 4 * se, (mean, se)
    assert se < 0.05, se


def test_adaptive_resampling_happens_at_some_steps_only():
    result = sampler_for("varying_twist", "systematic").run(jax.random.PRNGKey(0))
    assert 0 < result.num_resampling < LG_KERNEL.num_steps + 1
