"""A denoiser called in chunks of rows gives the run it gives in one call, and never sees more rows.

The UNet runs in float64: in float32 its convolutions already differ by about 1e-6 with the
number of images in a call, and the look-ahead gradients of TDS carry that to 1e-4 over a run.
"""
import copy

import pyro
import pytest
import torch
from diffusers import DDPMScheduler

from pyro_twist import TDS, DiffusersKernel, FKSteering, TwistedSMC, diffusion_chain

from .conftest import SEED

NUM_PARTICLES, BATCH_SIZE, NUM_STEPS = 10, 3, 5  # 3 does not divide 10: the last chunk is short
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def unet64(unet):
    return copy.deepcopy(unet).double()


def run(unet, method, batch_size):
    kernel = DiffusersKernel(unet, DDPMScheduler(num_train_timesteps=1000), num_steps=NUM_STEPS,
                             batch_size=batch_size)
    rows_seen, rows_differentiated = [], []
    denoise = kernel.denoise

    def counting_denoise(t, x):
        rows_seen.append(x.shape[0])
        return denoise(t, x)

    kernel.denoise = counting_denoise

    def model():
        x0 = diffusion_chain("img", kernel, (1, 8, 8))
        if x0.requires_grad:  # a look-ahead reward on the way to its gradient
            rows_differentiated.append(x0.shape[0])
        pyro.factor("reward", -8.0 * ((x0 - 0.3) ** 2).mean((-1, -2, -3)))

    pyro.set_rng_seed(SEED)
    result = method(model, NUM_PARTICLES, progress_bar=False).run()
    return result, kernel.num_evaluations, rows_seen, rows_differentiated


@pytest.mark.parametrize("method", [TwistedSMC, FKSteering, TDS])
def test_chunked_denoiser_gives_the_same_run(unet64, method):
    whole, whole_count, whole_rows, whole_gradients = run(unet64, method, None)
    chunked, chunked_count, chunked_rows, chunked_gradients = run(unet64, method, BATCH_SIZE)
    assert max(whole_rows) == NUM_PARTICLES and max(chunked_rows) == BATCH_SIZE
    if method is TDS:  # its proposals differentiate the look-ahead reward through the denoiser
        assert max(whole_gradients) == NUM_PARTICLES and max(chunked_gradients) == BATCH_SIZE
    assert abs(whole.log_evidence.item() - chunked.log_evidence.item()) < TOLERANCE
    assert torch.allclose(whole.log_weights, chunked.log_weights, rtol=0, atol=TOLERANCE)
    assert torch.equal(whole.resampled, chunked.resampled)
    whole_x0, chunked_x0 = whole.trajectories()["img_0"], chunked.trajectories()["img_0"]
    assert torch.allclose(whole_x0, chunked_x0, rtol=0, atol=TOLERANCE)
    # One evaluation per particle and step, counted per row: the look-ahead at x_k and the
    # transition from the resampled x_k share theirs, in chunks as in one call.
    assert whole_count == chunked_count == NUM_PARTICLES * NUM_STEPS
    assert whole.resampled.any() or method is TwistedSMC  # the shared evaluations were found again


def test_batch_size_must_be_positive(unet):
    with pytest.raises(ValueError, match="batch_size must be a positive integer or None, got 0"):
        DiffusersKernel(unet, DDPMScheduler(num_train_timesteps=1000), num_steps=NUM_STEPS, batch_size=0)
