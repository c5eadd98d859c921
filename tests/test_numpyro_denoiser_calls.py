"""numpyro_twist calls a kernel's denoiser once per step: the look-ahead twist and the next transition share it."""
import jax
import jax.extend.core
import jax.numpy as jnp
import numpyro
import pytest

import numpyro_twist.pretrained
from numpyro_twist import TDS, FKSteering, GaussianMixture, GaussianMixtureKernel, TwistedSMC, diffusion_chain

from . import numpyro_common  # noqa: F401  (float64)

DIRECTION = jnp.array([1.0, 0.4])
BRIGHTNESS = 20.0  # strong enough that resampling copies particles at every step

# log_evidence of these passes (key 3) before the denoiser's output was carried between steps, when each
# step called it once for the transition and once for the look-ahead
BEFORE = {"bootstrap": 1.6885678772436217, "fk": 1.9280585835502482, "fk_max": 2.10403079596903,
          "tds": 1.6316663341760016, "digits_fk": -7.05132026588179, "digits_tds": -7.260817176714417}

METHODS = {
    "bootstrap": lambda model, n: TwistedSMC(model, n),
    "fk": lambda model, n: FKSteering(model, n),
    "fk_max": lambda model, n: FKSteering(model, n, potential="max"),
    # resampling at every step, so that the carried denoiser outputs must follow their particles
    "tds": lambda model, n: TDS(model, n, ess_threshold=1.0),
}


class CountingMixtureKernel(GaussianMixtureKernel):
    """The ring's DDPM, counting the places its denoiser is traced into a computation."""

    num_traced = 0

    def denoise(self, alpha_prod, x):
        CountingMixtureKernel.num_traced += 1
        return super().denoise(alpha_prod, x)


def mixture_model(kernel):
    def model():
        x0 = diffusion_chain("x", kernel, (2,))
        numpyro.factor("reward", x0 @ DIRECTION)

    return model


def digits_model(kernel):
    def model():
        x0 = diffusion_chain("x", kernel, (1, 8, 8))
        numpyro.factor("reward", BRIGHTNESS * x0.mean((-1, -2, -3)))

    return model


@pytest.mark.parametrize("method", ["bootstrap", "fk", "fk_max", "tds"])
def test_one_denoiser_call_per_step(method):
    sampler = METHODS[method](mixture_model(CountingMixtureKernel(GaussianMixture.ring(), num_steps=30)), 64)
    CountingMixtureKernel.num_traced = 0
    jax.make_jaxpr(sampler.pure_run)(jax.random.PRNGKey(3))
    # the first state's, then the scan body's once for all the steps; x_0 is its own look-ahead
    assert CountingMixtureKernel.num_traced == 2


@pytest.mark.parametrize("method", ["bootstrap", "fk", "fk_max", "tds"])
def test_results_are_those_of_two_calls_per_step(method):
    kernel = GaussianMixtureKernel(GaussianMixture.ring(), num_steps=30)
    result = METHODS[method](mixture_model(kernel), 64).run(jax.random.PRNGKey(3))
    assert abs(float(result.log_evidence) - BEFORE[method]) < 1e-10


def unet_calls(jaxpr):
    """The UNet's forward passes in ``jaxpr``, each call site counted once (a ``scan`` body once)."""
    count = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("pjit", "jit") and eqn.params["name"] == "unet_apply":
            count += 1
        else:
            count += sum(unet_calls(sub) for sub in jax.extend.core.jaxprs_in_params(eqn.params))
    return count


@pytest.fixture(scope="module")
def digits_kernel():
    return numpyro_twist.pretrained.digits_kernel(num_steps=6, dtype=jnp.float64)


@pytest.mark.parametrize("method", ["fk", "tds"])
def test_digits_unet_runs_once_per_step_with_the_same_results(digits_kernel, method):
    sampler = METHODS[method](digits_model(digits_kernel), 16)
    jaxpr = jax.make_jaxpr(sampler.pure_run)(jax.random.PRNGKey(3)).jaxpr
    # FK: the first state's and the scan body's forward pass; TDS adds each one's backward pass
    assert unet_calls(jaxpr) == {"fk": 2, "tds": 4}[method]
    result = sampler.run(jax.random.PRNGKey(3))
    assert abs(float(result.log_evidence) - BEFORE[f"digits_{method}"]) < 1e-10
