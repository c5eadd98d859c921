"""Devices and dtypes: everything inference makes lives on the device of the chain's states.

A CPU-only machine cannot put a tensor on the wrong GPU, so the check works the other way round:
every tensor factory called while inference runs (torch.zeros(n), torch.arange(n), torch.tensor(...),
...) that neither names its device nor takes it from a tensor it converts is recorded, with the place
it was called from, and made on the ``meta`` device, which no computation with the model's CPU
tensors accepts. (A plain ``with torch.device("meta")`` cannot serve: under it Pyro's own
``pyro.factor`` copies its CPU log-factor to ``meta`` through ``torch.as_tensor``.) Models, kernels
and twists are built before the check starts, and the test models name their devices.

Reads from the device stall an accelerator's queue; they are counted the same way.
"""
import math
import traceback
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from diffusers import DDPMScheduler
from torch.overrides import TorchFunctionMode

import pyro_twist
from pyro_twist import (TDS, TRITSMC, DiffusersKernel, FKSteering, GaussianMixture, GaussianMixtureKernel,
                        ImportanceSampling, NeuralTwist, TwistedSMC, diffusion_chain, recycle)
from pyro_twist.smc import RESAMPLERS
from pyro_twist.smc.weights import checked_ess

from .conftest import REWARD, lg_model_a

DEVICE = torch.device("cpu")
FACTORIES = frozenset({torch.arange, torch.as_tensor, torch.asarray, torch.empty, torch.eye, torch.full,
                       torch.linspace, torch.logspace, torch.ones, torch.rand, torch.randint, torch.randn,
                       torch.randperm, torch.scalar_tensor, torch.tensor, torch.zeros})
PACKAGE = str(Path(pyro_twist.__file__).parent)


class StrayFactories(TorchFunctionMode):
    """Records, and makes on ``meta``, every factory call that leaves its device to the default."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        converts_a_tensor = func in (torch.as_tensor, torch.asarray) and isinstance(args[0], torch.Tensor)
        if func in FACTORIES and kwargs.get("device") is None and not converts_a_tensor:
            kwargs["device"] = "meta"
            frames = traceback.extract_stack()[:-1]
            ours = [f for f in frames if f.filename.startswith(PACKAGE)] or frames
            self.calls.append(f"torch.{func.__name__} at {ours[-1].filename}:{ours[-1].lineno} ({ours[-1].line})")
        return func(*args, **kwargs)


class HostReads(TorchFunctionMode):
    """Counts the tensor values read to the host (``.item()``, ``.tolist()``, ``bool(t)``, ...)."""

    READS = frozenset({torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
                       torch.Tensor.__int__, torch.Tensor.__index__})

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += func in self.READS
        return func(*args, **(kwargs or {}))


def audited(run):
    """``run()`` under :class:`StrayFactories`; fails naming each stray factory call."""
    strays = StrayFactories()
    try:
        with strays:
            output = run()
    except Exception as error:
        if not strays.calls:
            raise
        pytest.fail(f"tensors made off the states' device: {strays.calls}; the run then stopped: {error}")
    assert not strays.calls, f"tensors made off the states' device: {strays.calls}"
    return output


def result_tensors(result):
    samples = result.get_samples()
    paths = result.trajectories()
    ancestors = [a for a in result.ancestors if a is not None]
    return [result.log_evidence, result.log_weights, result.ess, result.resampled, result.log_reward,
            *ancestors, *paths.values(), *samples.values()]


def check_run(run):
    """Runs and reads a result under the check; every tensor of the result is on the states' device."""
    tensors = audited(lambda: result_tensors(run()))
    assert {t.device for t in tensors} == {DEVICE}


@pytest.fixture(scope="module")
def image_kernel(unet):
    # batch_size 3 of 7 particles: chunked denoiser calls and look-ahead gradients run too
    return DiffusersKernel(unet, DDPMScheduler(num_train_timesteps=1000), num_steps=4, batch_size=3)


def image_model(kernel):
    target = torch.full((1, 8, 8), 0.5, device=DEVICE)

    def model():
        x0 = diffusion_chain("img", kernel, (1, 8, 8))
        pyro.factor("reward", -((x0 - target) ** 2).sum((-1, -2, -3)))

    return model


def hand_written_model(direction):
    def model():
        x = pyro.sample("x_3", dist.Normal(torch.zeros(2, dtype=torch.float64, device=DEVICE), 1.0).to_event(1))
        for k in pyro.markov(range(3, 0, -1)):
            x = pyro.sample(f"x_{k - 1}", dist.Normal(0.9 * x + 0.1, 0.5).to_event(1))
        pyro.sample("y", dist.Normal(x @ direction, 0.5), obs=torch.tensor(1.0, dtype=torch.float64, device=DEVICE))

    return model


def test_the_check_catches_a_tensor_made_on_the_default_device():
    with pytest.raises(pytest.fail.Exception, match=r"torch.zeros at .*test_devices.py"):
        audited(lambda: torch.zeros(3) + torch.ones(3, device=DEVICE))


def test_bootstrap_and_linear_twist(lg_kernel):
    model = lg_model_a(lg_kernel, REWARD)
    twist = lg_kernel.optimal_twist(REWARD)
    check_run(lambda: TwistedSMC(model, 16, progress_bar=False).run())
    check_run(lambda: TwistedSMC(model, 16, twist=twist, progress_bar=False).run())
    check_run(lambda: TwistedSMC(model, 16, twist=twist, proposal="newton", progress_bar=False).run())


@pytest.mark.parametrize("scheme", sorted(RESAMPLERS))
def test_every_resampling_scheme(lg_kernel, scheme):
    model = lg_model_a(lg_kernel, REWARD)
    check_run(lambda: TwistedSMC(model, 16, resampling=scheme, ess_threshold=1.0, progress_bar=False).run())


def test_hand_written_chain():
    model = hand_written_model(torch.tensor([1.0, -0.5], dtype=torch.float64))
    check_run(lambda: TwistedSMC(model, 16, ess_threshold=1.0, progress_bar=False).run())


def test_linear_gaussian_learning_and_recycling(lg_kernel):
    model = lg_model_a(lg_kernel, REWARD)
    check_run(lambda: TRITSMC(model, num_particles=16, num_iterations=2, recycle=True, progress_bar=False).run())


@pytest.mark.parametrize("method", [FKSteering, TDS, ImportanceSampling])
def test_image_samplers(image_kernel, method):
    check_run(lambda: method(image_model(image_kernel), 7, progress_bar=False).run())


def test_lookahead_neural_twist(image_kernel):
    twist = NeuralTwist(image_kernel.num_steps, (1, 8, 8), lookahead=True, num_fit_steps=3)
    model = image_model(image_kernel)
    check_run(lambda: TRITSMC(model, twist=twist, num_particles=7, num_iterations=1, progress_bar=False).run())


def test_default_neural_twist_family_follows_the_states(image_kernel):
    tri = TRITSMC(image_model(image_kernel), num_particles=7, num_iterations=2, recycle=True, progress_bar=False)
    check_run(tri.run)
    assert isinstance(tri.twist, NeuralTwist)
    assert {p.device for p in tri.twist.parameters()} == {DEVICE}


def test_gaussian_mixture_kernel_and_recycle():
    kernel = GaussianMixtureKernel(GaussianMixture.ring(device=DEVICE), num_steps=6, batch_size=5)
    direction = torch.tensor([1.0, 0.4], dtype=torch.float64, device=DEVICE)

    def model():
        pyro.factor("reward", diffusion_chain("x", kernel, (2,)) @ direction)

    check_run(lambda: recycle([FKSteering(model, 12, progress_bar=False).run(),
                               TDS(model, 12, progress_bar=False).run()]))


def test_states_keep_their_dtype_and_log_weights_are_float64(lg_kernel, image_kernel):
    lg = TwistedSMC(lg_model_a(lg_kernel, REWARD), 8, progress_bar=False).run()
    images = TDS(image_model(image_kernel), 7, progress_bar=False).run()
    assert {v.dtype for v in lg.trajectories().values()} == {torch.float64}
    assert {v.dtype for v in images.trajectories().values()} == {torch.float32}
    for result in (lg, images):
        assert result.log_weights.dtype == result.log_evidence.dtype == result.ess.dtype == torch.float64


@pytest.mark.parametrize("scheme", ["systematic", "stratified", "multinomial"])
def test_one_read_from_the_device_per_step(lg_kernel, scheme):
    # The weights' checks and the resampling decision share one number, the ESS; residual
    # resampling reads one more (how many copies it placed). Pyro's validation of
    # distributions reads its own, so it is off here.
    model = lg_model_a(lg_kernel, REWARD)
    twist = lg_kernel.optimal_twist(REWARD)
    for sampler in (TwistedSMC(model, 16, resampling=scheme, ess_threshold=1.0, progress_bar=False),
                    TwistedSMC(model, 16, twist=twist, progress_bar=False)):
        reads = HostReads()
        with pyro.validation_enabled(False), reads:
            sampler.run()
        assert reads.count == lg_kernel.num_steps + 2  # each chain site, and the reward sites at the end


@pytest.mark.parametrize("bad, message", [
    (math.nan, "NaN log-weights at step 3"),
    (math.inf, "a log-weight is \\+inf at step 3"),
    (-math.inf, "all particles have zero weight \\(log-weight -inf\\) at step 3"),
])
def test_the_one_number_read_names_every_problem(bad, message):
    log_w = torch.tensor([0.5, -1.0, bad], dtype=torch.float64)
    if bad == -math.inf:
        log_w[:] = bad
    with pytest.raises(ValueError, match=message):
        checked_ess(log_w, "at step 3")
    assert checked_ess(torch.tensor([0.0, 0.0, -math.inf], dtype=torch.float64), "at step 3") == pytest.approx(2.0)
