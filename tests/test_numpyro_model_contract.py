"""numpyro_twist's model contract: plain NumPyro without inference, and named errors for models it cannot run."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer import Predictive

from numpyro_twist import FKSteering, TwistedSMC, diffusion_chain, markov_chain

from .numpyro_common import LG_KERNEL, REWARD, lg_markov_model, lg_model

KEY = jax.random.PRNGKey(0)


def test_without_inference_the_chain_is_ancestral_sampling():
    samples = Predictive(lg_model(LG_KERNEL, REWARD), num_samples=3)(KEY)
    assert {f"x_{k}" for k in range(LG_KERNEL.num_steps + 1)} <= set(samples)
    assert samples["x_0"].shape == (3, LG_KERNEL.dim)
    fixed = jnp.ones(LG_KERNEL.dim)
    trace = handlers.trace(handlers.seed(handlers.condition(lg_markov_model(LG_KERNEL, REWARD), {"x_5": fixed}),
                                         0)).get_trace()
    assert np.array_equal(trace["x_5"]["value"], fixed) and trace["x_5"]["is_observed"]


def test_a_model_without_chain_is_refused():
    def model():
        numpyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="the model has no chain"):
        TwistedSMC(model, 4).run(KEY)


def test_a_random_site_before_the_chain_is_refused():
    def model():
        scale = numpyro.sample("scale", dist.LogNormal(0.0, 1.0))
        x0 = markov_chain("x", LG_KERNEL.prior(), lambda k, x: dist.Normal(x, scale).to_event(1), 3)
        numpyro.factor("reward", x0 @ REWARD)

    with pytest.raises(ValueError, match="site 'scale' is random per particle but stands before the chain"):
        TwistedSMC(model, 4).run(KEY)


def test_a_second_chain_is_refused():
    def model():
        x0 = diffusion_chain("x", LG_KERNEL)
        diffusion_chain("z", LG_KERNEL)
        numpyro.factor("reward", x0 @ REWARD)

    with pytest.raises(ValueError, match="second chain 'z' after the chain 'x'"):
        TwistedSMC(model, 4).run(KEY)


def test_a_state_without_event_dimensions_is_refused():
    def model():
        x0 = markov_chain("x", dist.Normal(jnp.zeros(3), 1.0), lambda k, x: dist.Normal(x, 0.1), 3)
        numpyro.factor("reward", x0.sum(-1))

    with pytest.raises(ValueError, match=r"first state of the chain has batch shape.*\.to_event"):
        TwistedSMC(model, 4).run(KEY)


def test_a_twist_of_the_wrong_shape_is_refused():
    class SummedOverParticles:
        def log_psi(self, k, x):
            return x.sum()

    with pytest.raises(ValueError, match=r"returned shape \(\) for 4 particles"):
        TwistedSMC(lg_model(LG_KERNEL, REWARD), 4, twist=SummedOverParticles()).run(KEY)
    with pytest.raises(TypeError, match="log_psi"):
        TwistedSMC(lg_model(LG_KERNEL, REWARD), 4, twist=object())


def test_a_reward_that_rules_out_every_particle_is_named():
    def model():
        x0 = diffusion_chain("x", LG_KERNEL)
        numpyro.factor("impossible", jnp.where(x0[..., 0] > 100.0, 0.0, -jnp.inf))

    with pytest.raises(ValueError, match="all particles have zero weight.*after the reward sites"):
        TwistedSMC(model, 8).run(KEY)


def test_lookahead_needs_a_kernel_and_a_missing_reward_warns():
    with pytest.raises(ValueError, match="FKSteering needs look-ahead rewards.*not built from a kernel"):
        FKSteering(lg_markov_model(LG_KERNEL, REWARD), 4).run(KEY)

    def no_reward():
        diffusion_chain("x", LG_KERNEL)

    with pytest.warns(UserWarning, match="no numpyro.factor or observed site after its chain"):
        TwistedSMC(no_reward, 4).run(KEY)


def test_bad_options_are_named():
    model = lg_model(LG_KERNEL, REWARD)
    with pytest.raises(ValueError, match="unknown resampling scheme"):
        TwistedSMC(model, 4, resampling="bogus")
    with pytest.raises(ValueError, match="ess_threshold must lie in"):
        TwistedSMC(model, 4, ess_threshold=2.0)
    with pytest.raises(ValueError, match="proposal must be one of"):
        TwistedSMC(model, 4, proposal="langevin")
    with pytest.raises(ValueError, match="unknown potential"):
        FKSteering(model, 4, potential="min")
