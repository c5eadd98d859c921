"""NeuralTwist over the look-ahead reward; recorded transition states; the proposal override."""
import pyro
import pytest
import torch

from pyro_twist import TDS, TRITSMC, GaussianMixture, GaussianMixtureKernel, NeuralTwist, TwistedSMC, diffusion_chain

from .conftest import SEED

DIRECTION = torch.tensor([1.0, 0.4], dtype=torch.float64)


def mixture_model(num_steps=30, scale=2.0):
    kernel = GaussianMixtureKernel(GaussianMixture.ring(), num_steps=num_steps)

    def model():
        x0 = diffusion_chain("x", kernel, (2,))
        pyro.factor("reward", x0 @ (scale * DIRECTION))

    return kernel, model


def test_untrained_lookahead_twist_is_the_twisted_diffusion_sampler():
    kernel, model = mixture_model()
    results = []
    twist = NeuralTwist(30, (2,), lookahead=True)
    # the same guidance bound for both (TDS bounds it by default)
    samplers = (TDS(model, 128, progress_bar=False),
                TwistedSMC(model, 128, twist=twist, progress_bar=False, max_shift=1.0))
    for sampler in samplers:
        pyro.set_rng_seed(SEED)
        kernel.num_evaluations = 0
        results.append((sampler.run(), kernel.num_evaluations))
    (tds, tds_count), (twisted, twisted_count) = results
    assert abs(tds.log_evidence.item() - twisted.log_evidence.item()) < 1e-9
    assert torch.allclose(tds.trajectories()["x_0"], twisted.trajectories()["x_0"], atol=1e-9)
    assert tds_count == twisted_count == 128 * 30  # one denoiser call per particle and step


def test_lookahead_twist_learns_and_reloads():
    kernel, model = mixture_model()
    pyro.set_rng_seed(SEED)
    tri = TRITSMC(model, twist=NeuralTwist(30, (2,), lookahead=True), num_particles=256, num_iterations=4,
                  progress_bar=False)
    tri.run()
    assert not torch.equal(tri.twist.lookahead_scale.detach(), torch.ones(31))  # alpha_k was fit
    # fit() keeps the held-out best, the start included: learning never lowers the held-out likelihood,
    # and on this tilt it raises the path ESS above the Twisted Diffusion Sampler's (iteration 0).
    assert max(h.ess for h in tri.history[1:]) > 1.2 * tri.history[0].ess
    loaded = NeuralTwist(30, (2,), lookahead=True)
    loaded.load_state_dict(tri.twist.state_dict())
    runs = []
    for twist in (tri.twist, loaded):
        pyro.set_rng_seed(SEED + 1)
        runs.append(TwistedSMC(model, 64, twist=twist, progress_bar=False).run().log_evidence.item())
    assert runs[0] == runs[1]


def test_lookahead_twist_refuses_paths_it_did_not_draw():
    kernel, model = mixture_model(num_steps=10)
    recorded = TwistedSMC(model, 16, record_transitions=True, progress_bar=False).run()
    twist = NeuralTwist(10, (2,), lookahead=True)
    with pytest.raises(ValueError, match="fits paths drawn with its own look-ahead"):
        twist.fit(recorded.transitions, recorded.log_weights, recorded.log_reward)
    with pytest.raises(ValueError, match="has no look-ahead reward.*set_lookahead"):
        twist.log_psi(3, torch.zeros(4, 2, dtype=torch.float64))


def test_recorded_states_are_the_states_each_step_was_drawn_from():
    kernel, model = mixture_model(num_steps=20)
    twist = NeuralTwist(20, (2,))
    torch.nn.init.normal_(twist.net[-1].weight)  # an arbitrary twist: uneven weights, so resampling happens
    pyro.set_rng_seed(SEED)
    result = TwistedSMC(model, 64, twist=twist, ess_threshold=0.9, record_transitions=True,
                        progress_bar=False).run()
    assert result.resampled.any()
    records = result.transitions
    assert records[0].state is None
    for record in records[1:]:
        transition = kernel.transition(record.step + 1, record.state)
        assert torch.allclose(transition.mean, record.base_mean if record.base_mean is not None else record.value)


def test_proposal_override_is_checked_and_used():
    kernel, model = mixture_model(num_steps=10)
    with pytest.raises(ValueError, match="proposal must be one of"):
        TwistedSMC(model, 8, proposal="langevin")
    twist = NeuralTwist(10, (2,))
    torch.nn.init.normal_(twist.net[-1].weight)
    result = TwistedSMC(model, 8, twist=twist, proposal="bootstrap", record_transitions=True,
                        progress_bar=False).run()
    assert all(torch.equal(r.base_mean, r.proposal_mean) for r in result.transitions if r.base_mean is not None)
