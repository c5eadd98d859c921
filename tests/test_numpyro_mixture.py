"""numpyro_twist on the 8-mode ring: an exact-denoiser DDPM steered toward a linear reward."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest

from numpyro_twist import TDS, FKSteering, GaussianMixture, GaussianMixtureKernel, ImportanceSampling, diffusion_chain

from . import numpyro_common  # noqa: F401  (float64)

DIRECTION = jnp.array([1.0, 0.4])
MIXTURE = GaussianMixture.ring()
KERNEL = GaussianMixtureKernel(MIXTURE, num_steps=30)
NUM_PARTICLES = 512


def model(direction):
    x0 = diffusion_chain("x", KERNEL, (2,))
    numpyro.factor("reward", x0 @ direction)


def total_variation(p, q):
    return 0.5 * float(jnp.abs(p - q).sum())


@pytest.fixture(scope="module")
def base_tv():
    """Base sampling (the chain's own particles, unweighted) against the tilted mode weights."""
    result = ImportanceSampling(model, NUM_PARTICLES, keep_paths=False).run(jax.random.PRNGKey(0), DIRECTION)
    x0 = result.trajectories()["x_0"]
    # the exact denoiser makes the chain's x_0 the mixture itself: equal mode weights
    assert total_variation(MIXTURE.mode_weights(x0), MIXTURE.weights) < 0.1
    return total_variation(MIXTURE.mode_weights(x0), MIXTURE.tilted(DIRECTION).weights)


@pytest.mark.parametrize("method", [FKSteering, TDS])
def test_steering_moves_the_mode_weights_toward_the_tilted_mixture(method, base_tv):
    result = method(model, NUM_PARTICLES, keep_paths=False).run(jax.random.PRNGKey(1), DIRECTION)
    tilted = MIXTURE.tilted(DIRECTION)
    steered_tv = total_variation(MIXTURE.mode_weights(result.get_samples()["x_0"]), tilted.weights)
    # base sampling is 0.6 away in total variation (equal weights against two heavy modes)
    assert base_tv > 0.5
    assert steered_tv < 0.15, (steered_tv, base_tv)
    log_z = float(MIXTURE.log_normalizer(DIRECTION))
    assert abs(float(result.log_evidence) - log_z) < 0.5, (float(result.log_evidence), log_z)


def test_last_step_is_deterministic_and_the_others_gaussian():
    x = jnp.zeros((4, 2))
    assert type(KERNEL.transition(1, x)).__name__ == "Delta"
    assert bool(KERNEL.deterministic[1]) and not KERNEL.deterministic[2:].any()
    assert np.all(np.asarray(KERNEL.transition(2, x).variance) > 0)
