"""numpyro_twist's DDIM kernels (eta > 0) against pyro_twist's and against diffusers' own DDIM step."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

import numpyro_twist
import numpyro_twist.pretrained as jax_pretrained
import pyro_twist.pretrained as torch_pretrained
from pyro_twist.chains import GaussianMixture as TorchMixture
from pyro_twist.chains import GaussianMixtureKernel as TorchMixtureKernel

from . import numpyro_common  # noqa: F401  (float64)

NUM_STEPS = 25  # 1000 training timesteps in strides of 40


def mixture_kernels(eta, set_alpha_to_one):
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=set_alpha_to_one)
    torch_kernel = TorchMixtureKernel(TorchMixture.ring(), NUM_STEPS, scheduler=scheduler, eta=eta)
    jax_kernel = numpyro_twist.GaussianMixtureKernel(numpyro_twist.GaussianMixture.ring(), NUM_STEPS, eta=eta,
                                                     set_alpha_to_one=set_alpha_to_one)
    return torch_kernel, jax_kernel


def assert_same_step(torch_step, jax_step, tolerance):
    assert type(torch_step).__name__ == type(jax_step).__name__
    if type(jax_step).__name__ == "Delta":
        assert np.abs(np.asarray(jax_step.v) - torch_step.v.numpy()).max() < tolerance
        return
    assert np.abs(np.asarray(jax_step.mean) - torch_step.mean.numpy()).max() < tolerance
    assert np.abs(np.asarray(jax_step.variance) - torch_step.variance.numpy()).max() < tolerance


@pytest.mark.parametrize("eta, set_alpha_to_one", [(1.0, True), (0.3, True), (0.6, False)])
def test_ddim_mixture_kernels_have_pyro_twists_transitions(eta, set_alpha_to_one):
    torch_kernel, jax_kernel = mixture_kernels(eta, set_alpha_to_one)
    assert list(jax_kernel.timesteps) == torch_kernel.timesteps
    x = np.random.default_rng(0).normal(size=(16, 2)) * 2
    for k in (25, 24, 13, 2, 1):
        assert_same_step(torch_kernel.transition(k, torch.from_numpy(x)), jax_kernel.transition(k, jnp.asarray(x)),
                         1e-6)


@pytest.mark.parametrize("k", [25, 24, 13, 2, 1])
def test_ddim_strides_follow_diffusers_step(k):
    eta = 0.8
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False)
    scheduler.set_timesteps(NUM_STEPS)
    kernel = numpyro_twist.GaussianMixtureKernel(numpyro_twist.GaussianMixture.ring(), NUM_STEPS, eta=eta,
                                                 set_alpha_to_one=False)
    rng = np.random.default_rng(k)
    x, noise = rng.normal(size=(16, 2)) * 2, rng.normal(size=(16, 2))
    t = int(scheduler.timesteps[NUM_STEPS - k])
    assert t == 40 * (k - 1)  # x_k sits at timestep 40 (k - 1); its step lands 40 timesteps earlier
    alpha_prod = float(scheduler.alphas_cumprod[t])
    x0 = np.asarray(kernel.denoise_step(k, jnp.asarray(x)))
    epsilon = (x - alpha_prod**0.5 * x0) / (1 - alpha_prod) ** 0.5
    expected = scheduler.step(torch.from_numpy(epsilon), t, torch.from_numpy(x), eta=eta,
                              variance_noise=torch.from_numpy(noise)).prev_sample.numpy()
    law = kernel.transition(k, jnp.asarray(x))
    assert np.abs(np.asarray(law.mean + jnp.sqrt(law.variance) * noise) - expected).max() < 1e-6


@pytest.mark.parametrize("k", [20, 19, 8, 1])
def test_ddim_digits_kernel_has_pyro_twists_transitions(k):
    # the UNet's clipped prediction gives the mean's x_0, its raw one the noise: both in float64
    torch_kernel = torch_pretrained.digits_kernel(num_steps=20, scheduler="ddim", eta=0.5)
    torch_kernel.unet.double()
    jax_kernel = jax_pretrained.digits_kernel(num_steps=20, scheduler="ddim", eta=0.5, dtype=jnp.float64)
    x = np.random.default_rng(k).standard_normal((8, 1, 8, 8)) * 1.5
    with torch.no_grad():
        torch_step = torch_kernel.transition(k, torch.from_numpy(x))
    assert_same_step(torch_step, jax_kernel.transition(k, jnp.asarray(x)), 1e-6)


def test_ddim_needs_positive_eta():
    with pytest.raises(ValueError, match="eta = 0 is a deterministic sampler"):
        numpyro_twist.GaussianMixtureKernel(numpyro_twist.GaussianMixture.ring(), NUM_STEPS, eta=0.0)
