"""numpyro_twist: Z_hat is unbiased on a linear-Gaussian chain for Feynman-Kac steering, every scheme."""
import jax.numpy as jnp
import numpyro
import pytest

from numpyro_twist import FKSteering, diffusion_chain
from numpyro_twist.smc import RESAMPLERS

from .numpyro_common import LG_KERNEL, REWARD, lg_model, z_ratio_mean_and_se


@pytest.mark.parametrize("scheme", sorted(RESAMPLERS))
@pytest.mark.parametrize("potential", ["diff", "max"])
def test_fk_steering_evidence_is_unbiased(potential, scheme):
    sampler = FKSteering(lg_model(LG_KERNEL, REWARD), 32, potential=potential, resampling=scheme, keep_paths=False)
    mean, se = z_ratio_mean_and_se(sampler, LG_KERNEL.log_normalizer(REWARD))
    # 100 passes of 32 particles: the mean of Z_hat / Z within 4 standard errors of 1, and those small
    assert abs(mean - 1) <= 4 * se, (mean, se)
    assert se < 0.05, se


def quadratic_log_normalizer(Q):
    """``log E[exp(a.x_0 - x_0' diag(Q) x_0 / 2)]`` for ``x_0 ~ N(m, C)``: a Gaussian integral."""
    mean, cov = LG_KERNEL.marginal()
    precision = jnp.linalg.inv(cov)
    shift = REWARD + precision @ mean
    tilted_precision = precision + jnp.diag(Q)
    _, log_det = jnp.linalg.slogdet(cov @ tilted_precision)
    return 0.5 * shift @ jnp.linalg.solve(tilted_precision, shift) - 0.5 * mean @ precision @ mean - 0.5 * log_det


@pytest.mark.parametrize("scheme", sorted(RESAMPLERS))
def test_fk_steering_evidence_is_unbiased_for_a_quadratic_reward(scheme):
    # With a linear reward, FK's "diff" increments depend on each step's noise only, not on the ancestors,
    # so the scheme cannot change Z_hat; a quadratic reward makes them depend on the particles' states.
    Q = jnp.array([0.5, 1.5, 0.8])

    def model():
        x0 = diffusion_chain("x", LG_KERNEL, (LG_KERNEL.dim,))
        numpyro.factor("reward", x0 @ REWARD - 0.5 * (Q * x0**2).sum(-1))

    mean, se = z_ratio_mean_and_se(FKSteering(model, 32, resampling=scheme, keep_paths=False),
                                   quadratic_log_normalizer(Q))
    assert abs(mean - 1) <= 4 * se, (mean, se)
    assert se < 0.05, se
