"""numpyro_twist's JAX forward pass of the shipped digits UNet and its DDPM kernel, against diffusers in torch."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
import torch

import numpyro_twist.pretrained as jax_pretrained
import pyro_twist.pretrained as torch_pretrained
from numpyro_twist import FKSteering, diffusion_chain
from numpyro_twist.chains.unet import load_unet, unet_apply

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def kernels():
    return torch_pretrained.digits_kernel(num_steps=50), jax_pretrained.digits_kernel(num_steps=50)


def test_jax_digits_kernel_loads_without_torch():
    code = "import sys, numpyro_twist.pretrained as p; p.digits_kernel(); sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_unet_epsilon_matches_diffusers(kernels):
    torch_kernel, _ = kernels
    params, config = load_unet(jax_pretrained.DIGITS_DIR / "unet")
    apply = jax.jit(unet_apply, static_argnums=3)
    rng = np.random.default_rng(0)
    for t in (0, 1, 20, 500, 980, 999):
        x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
        with torch.no_grad():
            expected = torch_kernel.unet(torch.from_numpy(x), t).sample.numpy()
        assert np.abs(np.asarray(apply(params, x, t, config)) - expected).max() < TOLERANCE, t
    # a timestep per image
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    t = np.array([3, 250, 640, 999])
    with torch.no_grad():
        expected = torch_kernel.unet(torch.from_numpy(x), torch.from_numpy(t)).sample.numpy()
    assert np.abs(np.asarray(apply(params, x, t, config)) - expected).max() < TOLERANCE


def test_schedule_matches_diffusers(kernels):
    torch_kernel, jax_kernel = kernels
    assert list(jax_kernel.timesteps) == torch_kernel.timesteps
    np.testing.assert_array_equal(np.asarray(jax_kernel._alphas_cumprod), torch_kernel.scheduler.alphas_cumprod.numpy())


@pytest.mark.parametrize("k", [50, 49, 30, 10, 2, 1])
def test_transition_and_predict_x0_match_pyro_twist(kernels, k):
    torch_kernel, jax_kernel = kernels
    x = np.random.default_rng(k).standard_normal((8, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        torch_step = torch_kernel.transition(k, torch.from_numpy(x))
        torch_x0 = torch_kernel.predict_x0(k, torch.from_numpy(x))
    jax_step, jax_x0 = jax_kernel.transition(k, jnp.asarray(x)), jax_kernel.predict_x0(k, jnp.asarray(x))
    assert np.abs(np.asarray(jax_x0) - torch_x0.numpy()).max() < TOLERANCE
    if k == 1:  # into x_0: deterministic in both
        assert type(torch_step).__name__ == type(jax_step).__name__ == "Delta"
        assert np.abs(np.asarray(jax_step.v) - torch_step.v.numpy()).max() < TOLERANCE
        return
    assert np.abs(np.asarray(jax_step.base_dist.loc) - torch_step.base_dist.loc.numpy()).max() < TOLERANCE
    assert np.abs(np.asarray(jax_step.base_dist.scale) ** 2 - torch_step.base_dist.scale.numpy() ** 2).max() < 1e-7


def test_fk_steering_on_digits_has_a_finite_evidence(kernels):
    _, kernel = kernels

    def model():
        x0 = diffusion_chain("x", kernel, kernel.event_shape)
        numpyro.factor("reward", 4.0 * x0.mean((-3, -2, -1)))  # brighter images

    result = FKSteering(model, 16).run(jax.random.PRNGKey(0))
    assert np.isfinite(float(result.log_evidence))
    samples = result.get_samples()["x_0"]
    assert samples.shape == (16, 1, 8, 8) and np.isfinite(np.asarray(samples)).all()
