import os

import pyro
import pytest
import torch

from pyro_twist import diffusion_chain
from pyro_twist.chains.linear_gaussian import random_linear_gaussian

DIM, NUM_STEPS = 3, 20
# An asymmetric linear reward: unequal magnitudes and mixed signs.
REWARD = torch.tensor([0.8, -0.5, 0.3], dtype=torch.float64)
# Statistical tests use a fixed seed; set PYRO_TWIST_TEST_SEED to check that they hold for others too.
SEED = int(os.environ.get("PYRO_TWIST_TEST_SEED", "0"))


@pytest.fixture(autouse=True)
def fresh_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(SEED)
    yield


@pytest.fixture(scope="session")
def unet():
    """A small randomly initialised UNet2DModel for 1x8x8 images."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).eval()


@pytest.fixture(scope="session")
def lg_kernel():
    return random_linear_gaussian(DIM, NUM_STEPS, seed=0)


def lg_model_a(kernel, a):
    """Form (a): the library's chain helper, then a linear reward."""

    def model():
        x0 = diffusion_chain("x", kernel, (kernel.dim,))
        pyro.factor("reward", x0 @ a)
        return x0

    return model


def lg_model_b(kernel, a):
    """Form (b): a hand-written Markov loop whose sites hold the whole state."""

    def model():
        x = pyro.sample("x_K", kernel.prior())
        for k in pyro.markov(range(kernel.num_steps, 0, -1)):
            x = pyro.sample(f"x_{k - 1}", kernel.transition(k, x))
        pyro.factor("reward", x @ a)
        return x

    return model
