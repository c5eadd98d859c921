"""Results in ArviZ (DataTree groups, dimensions, values kept) and in pyro.infer.Predictive."""
import math

import arviz_stats
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, Predictive

from pyro_twist import PMMH, FKSteering, TwistedSMC, diffusion_chain
from pyro_twist.arviz import from_mcmc, from_smc
from pyro_twist.chains.linear_gaussian import random_linear_gaussian

from .conftest import SEED

Y = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)


@pytest.fixture(scope="module")
def kernel():
    return random_linear_gaussian(3, 20, seed=0)


def observed_model(kernel):
    def model(y):
        x0 = diffusion_chain("x", kernel, (3,))
        pyro.sample("y", dist.Normal(x0, 0.5).to_event(1), obs=y)
        pyro.factor("prefer", x0[..., 0])

    return model


def test_smc_runs_convert_with_their_groups_dimensions_and_values(kernel):
    model = observed_model(kernel)
    pyro.set_rng_seed(SEED)
    results = [FKSteering(model, 64, progress_bar=False).run(Y) for _ in range(3)]
    tree = from_smc(results)
    assert {"posterior", "sample_stats", "log_likelihood", "observed_data"} <= set(tree.children)
    x0 = tree.posterior["x_0"]
    assert x0.dims == ("chain", "draw", "x_0_dim_0") and x0.shape == (3, 64, 3)
    stats = tree.sample_stats
    assert stats["ess"].dims == ("chain", "step") and stats["ess"].shape == (3, 21)
    assert stats["resampled"].dtype == bool
    assert stats["log_marginal_likelihood"].values.tolist() == [r.log_evidence.item() for r in results]
    assert torch.equal(torch.as_tensor(tree.observed_data["y"].values), Y)
    for chain, result in enumerate(results):
        draws = torch.as_tensor(x0.values[chain])
        particles = result.trajectories()["x_0"]
        # every draw is one of the run's particles, and its log-likelihood is that particle's own
        match = (draws[:, None, :] == particles[None]).all(-1)
        assert match.any(1).all()
        expected = dist.Normal(draws, 0.5).to_event(1).log_prob(Y)
        assert torch.allclose(torch.as_tensor(tree.log_likelihood["y"].values[chain]), expected)
        assert torch.allclose(torch.as_tensor(tree.log_likelihood["prefer"].values[chain]), draws[:, 0])
    summary = arviz_stats.summary(tree)
    assert list(summary.index) == ["x_0[0]", "x_0[1]", "x_0[2]"]


def test_pmmh_output_converts_and_arviz_diagnoses_it(kernel):
    def model(y):
        sigma = pyro.sample("sigma", dist.LogNormal(torch.tensor(math.log(0.5), dtype=torch.float64), 0.75))
        x0 = diffusion_chain("x", kernel, (3,))
        pyro.sample("y", dist.Normal(x0, sigma).to_event(1), obs=y)

    pyro.set_rng_seed(SEED)
    pmmh = PMMH(model, smc=lambda conditioned: TwistedSMC(conditioned, 32, progress_bar=False))
    with pytest.warns(UserWarning, match="drawn sequentially"):
        mcmc = MCMC(pmmh, num_samples=100, warmup_steps=50, num_chains=2, disable_progbar=True)
    mcmc.run(Y)
    tree = from_mcmc(mcmc)
    sigma = tree.posterior["sigma"]
    assert sigma.dims == ("chain", "draw") and sigma.shape == (2, 100)
    assert torch.equal(torch.as_tensor(sigma.values), mcmc.get_samples(group_by_chain=True)["sigma"])
    assert tree.sample_stats["log_marginal_likelihood"].shape == (2, 100)
    assert list(arviz_stats.summary(tree).index) == ["sigma"]
    assert float(arviz_stats.ess(tree)["sigma"]) > 0
    assert math.isfinite(float(arviz_stats.rhat(tree)["sigma"]))

    predictive = Predictive(model, posterior_samples=mcmc.get_samples(50))(None)
    assert predictive["y"].shape == (50, 3)


def test_predictive_runs_on_steered_samples(kernel):
    model = observed_model(kernel)
    pyro.set_rng_seed(SEED)
    samples = FKSteering(model, 64, progress_bar=False).run(Y).get_samples()
    predictive = Predictive(model, posterior_samples=samples)(None)
    assert predictive["y"].shape == (64, 3)
    # the replicated data are drawn around each sample's own x_0
    assert (predictive["y"] - samples["x_0"]).abs().max() < 0.5 * 6
