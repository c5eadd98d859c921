"""Particle marginal Metropolis-Hastings over a global noise level, against its exact posterior."""
import math
import time

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, Predictive
from pyro.ops.stats import effective_sample_size, split_gelman_rubin

from pyro_twist import TRITSMC, TwistedSMC, diffusion_chain
from pyro_twist.chains.linear_gaussian import random_linear_gaussian
from pyro_twist.infer.evidence import estimate_evidence, log_bayes_factor
from pyro_twist.infer.pmmh import PMMH

from .conftest import SEED

H = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, -0.7], [0.3, 0.0, 1.0]], dtype=torch.float64)
PRIOR = (math.log(0.5), 0.75)  # LogNormal prior of the noise sd


@pytest.fixture(scope="module")
def problem():
    """A linear-Gaussian chain (d = 3, K = 20) seen through y = H x_0 + N(0, sigma^2 I), sigma unknown."""
    kernel = random_linear_gaussian(3, 20, seed=0)
    mean, cov = kernel.marginal()
    generator = torch.Generator().manual_seed(1)
    x_true = mean + torch.linalg.cholesky(cov) @ torch.randn(3, generator=generator, dtype=torch.float64)
    y = H @ x_true + 0.5 * torch.randn(3, generator=generator, dtype=torch.float64)

    def model(y):
        sigma = pyro.sample("sigma", dist.LogNormal(torch.tensor(PRIOR[0], dtype=torch.float64), PRIOR[1]))
        x0 = diffusion_chain("x", kernel, (3,))
        pyro.sample("y", dist.Normal(x0 @ H.T, sigma).to_event(1), obs=y)

    # p(y | sigma) = N(H m, H C H^T + sigma^2 I): the exact posterior of sigma on a fine grid
    grid = torch.linspace(0.005, 5.0, 5000, dtype=torch.float64)
    log_post = dist.LogNormal(PRIOR[0], PRIOR[1]).log_prob(grid) + torch.stack(
        [dist.MultivariateNormal(H @ mean, H @ cov @ H.T + s**2 * torch.eye(3, dtype=torch.float64)).log_prob(y)
         for s in grid])
    w = torch.softmax(log_post, 0)
    post_mean = (w * grid).sum().item()
    post_sd = (w * (grid - post_mean) ** 2).sum().sqrt().item()
    return model, y, post_mean, post_sd


@pytest.mark.parametrize("twist", ["bootstrap", "learned"])
def test_pmmh_samples_the_exact_posterior_of_a_global_parameter(problem, twist):
    model, y, post_mean, post_sd = problem
    pyro.set_rng_seed(SEED)
    learn_twist = None
    if twist == "learned":  # a log-linear twist learned half-way through warmup, then kept
        learn_twist = lambda conditioned: TRITSMC(conditioned, num_particles=256, num_iterations=6,  # noqa: E731
                                                  final_num_particles=64, progress_bar=False)
    kernel = PMMH(model, smc=lambda conditioned: TwistedSMC(conditioned, 64, progress_bar=False),
                  learn_twist=learn_twist)
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="drawn sequentially"):  # two chains on a machine of two cores
        mcmc = MCMC(kernel, num_samples=3000, warmup_steps=500, num_chains=2, disable_progbar=True)
    mcmc.run(y)
    seconds = time.perf_counter() - start
    sigma = mcmc.get_samples(group_by_chain=True)["sigma"]
    ess = effective_sample_size(sigma).item()
    mean, sd = sigma.mean().item(), sigma.std().item()
    mcse_mean, mcse_sd = sd / math.sqrt(ess), sd / math.sqrt(2 * ess)
    print(f"{twist}: exact mean {post_mean:.4f} sd {post_sd:.4f}; PMMH mean {mean:.4f} sd {sd:.4f} (MCSE "
          f"{mcse_mean:.4f}, {mcse_sd:.4f}); ESS {ess:.0f}, {ess / seconds:.1f} per second; acceptance "
          f"{kernel.accept_rate:.3f}")
    assert abs(mean - post_mean) < 3 * mcse_mean
    assert abs(sd - post_sd) < 3 * mcse_sd
    assert split_gelman_rubin(sigma).item() < 1.01
    assert 0.1 < kernel.accept_rate < 0.5
    if twist == "learned":
        # at the posterior mean, the learned twist's log Z_hat spreads less than bootstrap's at the same N
        # (measured 0.20 against 0.29); 100 runs each
        at_mean = {"sigma": torch.tensor(post_mean, dtype=torch.float64)}
        spread = {}
        for name, sampler in (("bootstrap", kernel.smc), ("learned", kernel._sampler)):
            conditioned = pyro.condition(model, data=at_mean)
            spread[name] = torch.tensor([sampler(conditioned).run(y).log_evidence.item() for _ in range(100)]).std()
        print(f"log Z_hat sd at the posterior mean: {spread}")
        assert spread["learned"] < 0.85 * spread["bootstrap"]

    predictive = Predictive(model, posterior_samples=mcmc.get_samples(200))(None)
    assert predictive["y"].shape == (200, 3)
    assert predictive["x_0"].shape == (200, 3)


def test_pmmh_needs_global_sites_before_a_chain(lg_kernel):
    def no_globals():
        x0 = diffusion_chain("x", lg_kernel, (lg_kernel.dim,))
        pyro.factor("reward", x0.sum(-1))

    with pytest.raises(ValueError, match="nothing for PMMH to sample"):
        MCMC(PMMH(no_globals), num_samples=2, warmup_steps=0, disable_progbar=True).run()

    def hand_written():
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        x = pyro.sample("x_1", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        x = pyro.sample("x_0", dist.Normal(x, scale).to_event(1))
        pyro.factor("reward", x.sum(-1))

    with pytest.raises(ValueError, match="written with markov_chain or diffusion_chain"):
        MCMC(PMMH(hand_written), num_samples=2, warmup_steps=0, disable_progbar=True).run()


def test_evidence_with_an_error_bar_and_a_bayes_factor(problem):
    # Two noise levels fixed: each model's evidence N(y; H m, H C H^T + sigma^2 I) is closed form.
    model, y, _, _ = problem
    kernel = random_linear_gaussian(3, 20, seed=0)
    mean, cov = kernel.marginal()
    estimates, exact = {}, {}
    pyro.set_rng_seed(SEED)
    for sigma in (0.4, 1.0):
        fixed = pyro.condition(model, data={"sigma": torch.tensor(sigma, dtype=torch.float64)})
        prior = dist.LogNormal(PRIOR[0], PRIOR[1]).log_prob(torch.tensor(sigma, dtype=torch.float64))
        # the conditioned prior term is part of Z_hat: take it out to compare with the likelihood alone
        evidence = estimate_evidence(TwistedSMC(fixed, 64, progress_bar=False), y, num_runs=16)
        estimates[sigma] = evidence._replace(log_evidence=evidence.log_evidence - prior.item(),
                                             runs=[r - prior.item() for r in evidence.runs])
        exact[sigma] = dist.MultivariateNormal(
            H @ mean, H @ cov @ H.T + sigma**2 * torch.eye(3, dtype=torch.float64)).log_prob(y).item()
        assert 0 < estimates[sigma].log_evidence_se < 0.2
        assert abs(estimates[sigma].log_evidence - exact[sigma]) < 4 * estimates[sigma].log_evidence_se + 0.01
    value, se = log_bayes_factor(estimates[0.4], estimates[1.0])
    assert abs(value - (exact[0.4] - exact[1.0])) < 4 * se + 0.01
    with pytest.raises(ValueError, match="at least 2"):
        estimate_evidence(TwistedSMC(model, 8, progress_bar=False), y, num_runs=1)
