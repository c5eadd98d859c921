"""Bad input stops with a message that names the problem and the fix."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_twist import FKSteering, LinearTwist, TDS, TwistedSMC, diffusion_chain, markov_chain

from .conftest import REWARD, lg_model_a, lg_model_b


def test_model_without_chain(lg_kernel):
    def model():
        pyro.factor("reward", torch.tensor(1.0))

    with pytest.raises(ValueError, match="the model has no chain"):
        TwistedSMC(model, 4, progress_bar=False).run()


def test_model_without_reward_warns_and_samples(lg_kernel):
    def model():
        return diffusion_chain("x", lg_kernel, (lg_kernel.dim,))

    with pytest.warns(UserWarning, match="no pyro.factor or observed site after its chain"):
        result = TwistedSMC(model, 8, progress_bar=False).run()
    assert result.log_evidence.item() == 0.0
    assert torch.allclose(result.log_weights, torch.zeros(8, dtype=torch.float64))


def test_all_weights_zero_names_the_site(lg_kernel):
    def model():
        x0 = diffusion_chain("x", lg_kernel, (lg_kernel.dim,))
        pyro.factor("constraint", torch.where(x0[..., 0] > 50.0, 0.0, -math.inf))

    with pytest.raises(ValueError, match="all particles have zero weight .* after the reward sites"):
        TwistedSMC(model, 8, progress_bar=False).run()


class _BrokenTwist:
    def __init__(self, bad_step, value):
        self.bad_step, self.value = bad_step, value

    def log_psi(self, k, x):
        out = torch.zeros(x.shape[0], dtype=x.dtype)
        return out + self.value if k == self.bad_step else out


@pytest.mark.parametrize("value, message", [
    (math.inf, "a log-weight is \\+inf"),
    (math.nan, "NaN log-weights"),
])
def test_bad_twist_weights_name_step_and_site(lg_kernel, value, message):
    model = lg_model_b(lg_kernel, REWARD)
    with pytest.raises(ValueError, match=f"{message} at chain site 'x_5' \\(step k=5\\)"):
        TwistedSMC(model, 8, twist=_BrokenTwist(5, value), progress_bar=False).run()


def test_per_particle_site_before_the_chain(lg_kernel):
    def model():
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        x0 = diffusion_chain("x", lg_kernel, (lg_kernel.dim,))
        pyro.factor("reward", scale * x0.sum(-1))

    with pytest.raises(ValueError, match="site 'scale' is random per particle but stands before the chain 'x'"):
        TwistedSMC(model, 8, progress_bar=False).run()


def test_lookahead_needs_predict_x0(lg_kernel):
    def hand_made():
        x0 = markov_chain("x", lg_kernel.prior(), lg_kernel.transition, lg_kernel.num_steps)
        pyro.factor("reward", x0 @ REWARD)

    message = "FKSteering needs look-ahead rewards, but the chain is not built from a kernel"
    with pytest.raises(ValueError, match=message):
        FKSteering(hand_made, 8, progress_bar=False).run()

    class NoDenoiser:
        num_steps = lg_kernel.num_steps
        prior = staticmethod(lg_kernel.prior)
        transition = staticmethod(lg_kernel.transition)

    def no_denoiser():
        x0 = diffusion_chain("x", NoDenoiser(), (lg_kernel.dim,))
        pyro.factor("reward", x0 @ REWARD)

    with pytest.raises(ValueError, match="TDS needs look-ahead rewards, but the kernel NoDenoiser has no predict_x0"):
        TDS(no_denoiser, 8, progress_bar=False).run()


@pytest.mark.parametrize("num_particles", [0, -3, 2.5])
def test_non_positive_num_particles(lg_kernel, num_particles):
    with pytest.raises(ValueError, match="num_particles must be a positive integer"):
        TwistedSMC(lg_model_a(lg_kernel, REWARD), num_particles)


def test_unknown_resampling_scheme(lg_kernel):
    with pytest.raises(ValueError, match="unknown resampling scheme 'sytematic'"):
        TwistedSMC(lg_model_a(lg_kernel, REWARD), 8, resampling="sytematic")


def test_unknown_fk_potential(lg_kernel):
    with pytest.raises(ValueError, match="unknown potential 'mean'"):
        FKSteering(lg_model_a(lg_kernel, REWARD), 8, potential="mean")


def test_state_without_event_dims(lg_kernel):
    def model():
        x = markov_chain("x", dist.Normal(torch.zeros(3), 1.0), lambda k, x: dist.Normal(x, 0.1), 4)
        pyro.factor("reward", x.sum(-1))

    with pytest.raises(ValueError, match="site x_4 dim -1, 8 vs 3.*leading dimension: declare .* with .to_event"):
        TwistedSMC(model, 8, progress_bar=False).run()


def test_reward_with_extra_batch_dims(lg_kernel):
    def model():
        x0 = diffusion_chain("x", lg_kernel, (lg_kernel.dim,))
        pyro.sample("y", dist.Normal(x0, 1.0), obs=torch.zeros(3))

    with pytest.raises(ValueError, match="site y dim -1, 8 vs 3.*to_event"):
        TwistedSMC(model, 8, progress_bar=False).run()


def test_twist_without_log_psi(lg_kernel):
    with pytest.raises(TypeError, match="log_psi"):
        TwistedSMC(lg_model_a(lg_kernel, REWARD), 8, twist=object())


def test_linear_twist_shapes():
    with pytest.raises(ValueError, match="LinearTwist: weight must have shape \\(5, 3\\)"):
        LinearTwist(4, (3,), weight=torch.zeros(4, 3))


def test_second_chain_is_refused(lg_kernel):
    def model():
        x0 = diffusion_chain("x", lg_kernel, (lg_kernel.dim,))
        y0 = diffusion_chain("y", lg_kernel, (lg_kernel.dim,))
        pyro.factor("reward", (x0 + y0) @ REWARD)

    with pytest.raises(ValueError, match="site 'y_20' belongs to a second chain 'y' after the chain 'x'"):
        TwistedSMC(model, 8, progress_bar=False).run()
