"""TRITSMC's learning state saves and loads: a run interrupted after iteration 3 of 6 and started again
gives exactly what the uninterrupted run gives for the same seed."""
import pyro
import pytest
import torch

from pyro_twist import (TRITSMC, GaussianClassTwist, GaussianMixture, GaussianMixtureKernel, NeuralTwist,
                        diffusion_chain)
from pyro_twist.chains.linear_gaussian import random_linear_gaussian

from .conftest import SEED


def linear_gaussian_model():
    kernel = random_linear_gaussian(3, 20, seed=0)
    reward = torch.tensor([1.5, -1.0, 1.0], dtype=torch.float64)

    def model():
        x0 = diffusion_chain("x", kernel, (3,))
        pyro.factor("reward", x0 @ reward)

    return model


def ring_model():
    kernel = GaussianMixtureKernel(GaussianMixture.ring(), num_steps=20)
    direction = torch.tensor([1.0, 0.4], dtype=torch.float64)

    def model():
        x0 = diffusion_chain("x", kernel, (2,))
        pyro.factor("reward", x0 @ direction)

    return model


RING = GaussianMixture.ring()


def ring_class_model():
    """The ring's first component as the class to steer toward (reward: its posterior probability)."""
    kernel = GaussianMixtureKernel(RING, num_steps=20)

    def model():
        x0 = diffusion_chain("x", kernel, (2,))
        log_joint = RING._log_joint(x0, 1.0, 0.0)[0]
        pyro.factor("reward", log_joint[..., 0] - torch.logsumexp(log_joint, -1))

    return model


def class_twist():
    kernel = GaussianMixtureKernel(RING, num_steps=20)
    return GaussianClassTwist(kernel.signal_variance, 20, RING.means, torch.diag_embed(RING.variances),
                              RING.weights.log(), target=0, guidance=0.0)


class Interrupted(Exception):
    pass


def interrupt_after(tri, iterations):
    """Make ``tri.run()`` stop as a killed process would, once ``iterations`` iterations are done."""
    step = tri._step

    def interrupted_step(*args, **kwargs):
        if len(tri.history) == iterations:
            raise Interrupted
        return step(*args, **kwargs)

    tri._step = interrupted_step


CASES = {
    "linear-default": (linear_gaussian_model, {}),
    "neural-default": (ring_model, {}),
    "neural-given-recycled": (ring_model, {"recycle": True}),
    "class-given": (ring_class_model, {}),  # GaussianClassTwist: its fits pool every earlier fit's paths
}


@pytest.mark.parametrize("case", list(CASES))
def test_resume_after_iteration_3_of_6_equals_the_uninterrupted_run(tmp_path, case):
    make_model, options = CASES[case]
    model = make_model()

    def build(**extra):
        twist = None
        if "given" in case:
            twist = class_twist() if case.startswith("class") else NeuralTwist(20, (2,), num_fit_steps=30)
        return TRITSMC(model, twist=twist, num_particles=128, num_iterations=6, progress_bar=False,
                       **options, **extra)

    pyro.set_rng_seed(SEED)
    uninterrupted = build()
    expected = uninterrupted.run()

    path = tmp_path / "learning.pt"
    pyro.set_rng_seed(SEED)
    first = build(checkpoint=path)
    interrupt_after(first, 3)
    with pytest.raises(Interrupted):
        first.run()
    pyro.set_rng_seed(SEED + 12345)  # the checkpoint restores the generators, whatever they are now
    resumed = build(checkpoint=path)
    result = resumed.run()

    assert len(resumed.history) == 6
    assert [s.log_evidence for s in resumed.history] == [s.log_evidence for s in uninterrupted.history]
    assert [s.accepted for s in resumed.history] == [s.accepted for s in uninterrupted.history]
    assert result.log_evidence.item() == expected.log_evidence.item()
    assert torch.equal(result.log_weights, expected.log_weights)
    for name, value in uninterrupted.twist.state_dict().items():
        assert torch.equal(resumed.twist.state_dict()[name], value), name


def test_checkpoint_of_a_default_family_refuses_a_given_twist(tmp_path):
    model = ring_model()
    path = tmp_path / "learning.pt"
    pyro.set_rng_seed(SEED)
    TRITSMC(model, num_particles=64, num_iterations=2, checkpoint=path, progress_bar=False).run()
    with pytest.raises(ValueError, match="default twist family"):
        TRITSMC(model, twist=NeuralTwist(20, (2,)), num_particles=64, num_iterations=2, checkpoint=path,
                progress_bar=False).run()
