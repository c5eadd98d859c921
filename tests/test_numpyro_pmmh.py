"""numpyro_twist PMMH over a global noise level, against its exact posterior (the problem of test_pmmh.py)."""
import math

import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import MCMC

from numpyro_twist import PMMH, TwistedSMC, diffusion_chain
from numpyro_twist.arviz import from_mcmc

from .numpyro_common import LG_KERNEL

H = jnp.array([[1.0, 0.5, 0.0], [0.0, 1.0, -0.7], [0.3, 0.0, 1.0]])
PRIOR = (math.log(0.5), 0.75)  # LogNormal prior of the noise sd


def model(y):
    sigma = numpyro.sample("sigma", dist.LogNormal(*PRIOR))
    x0 = diffusion_chain("x", LG_KERNEL, (3,))
    numpyro.sample("y", dist.Normal(x0 @ H.T, sigma).to_event(1), obs=y)


@pytest.fixture(scope="module")
def problem():
    """y = H x_0 + N(0, sigma^2 I) from one draw of the chain (d = 3, K = 20), and the exact posterior mean
    and sd of sigma on a fine grid: p(y | sigma) = N(H m, H C H^T + sigma^2 I)."""
    mean, cov = LG_KERNEL.marginal()
    rng = np.random.default_rng(1)
    y = H @ (mean + np.linalg.cholesky(cov) @ rng.standard_normal(3)) + 0.5 * rng.standard_normal(3)
    grid = jnp.linspace(0.005, 5.0, 5000)
    log_post = dist.LogNormal(*PRIOR).log_prob(grid) + jax.vmap(
        lambda sigma: LG_KERNEL.log_marginal_likelihood(H.T, y, sigma))(grid)
    w = jax.nn.softmax(log_post)
    post_mean = float(w @ grid)
    return y, post_mean, float(jnp.sqrt(w @ (grid - post_mean) ** 2))


@pytest.fixture(scope="module")
def mcmc(problem):
    y, _, _ = problem
    mcmc = MCMC(PMMH(model, smc=TwistedSMC(model, 64)), num_warmup=500, num_samples=3000, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), y, extra_fields=("log_evidence", "accept_prob"))
    return mcmc


def test_pmmh_samples_the_exact_posterior_of_a_global_parameter(problem, mcmc):
    _, post_mean, post_sd = problem
    sigma = np.asarray(mcmc.get_samples(group_by_chain=True)["sigma"])
    ess = effective_sample_size(sigma)
    mean, sd = sigma.mean(), sigma.std()
    mcse_mean, mcse_sd = sd / math.sqrt(ess), sd / math.sqrt(2 * ess)
    accept_rate = float(np.mean(mcmc.get_extra_fields()["accept_prob"]))
    print(f"exact mean {post_mean:.4f} sd {post_sd:.4f}; PMMH mean {mean:.4f} sd {sd:.4f} (MCSE {mcse_mean:.4f}, "
          f"{mcse_sd:.4f}); ESS {ess:.0f}; acceptance {accept_rate:.3f}")
    assert abs(mean - post_mean) < 3 * mcse_mean
    assert abs(sd - post_sd) < 3 * mcse_sd
    assert split_gelman_rubin(sigma) < 1.01
    assert 0.1 < accept_rate < 0.5


def test_pmmh_run_converts_and_arviz_diagnoses_it(problem, mcmc):
    y, _, _ = problem
    tree = from_mcmc(mcmc)
    sigma = tree.posterior["sigma"]
    assert sigma.dims == ("chain", "draw") and sigma.shape == (2, 3000)
    assert np.array_equal(sigma.values, mcmc.get_samples(group_by_chain=True)["sigma"])
    log_evidence = tree.sample_stats["log_marginal_likelihood"].values
    assert log_evidence.shape == (2, 3000)
    # each draw's estimate is one of log p(sigma, y)'s at its own sigma: near the exact value
    exact = dist.LogNormal(*PRIOR).log_prob(sigma.values) + jax.vmap(jax.vmap(
        lambda s: LG_KERNEL.log_marginal_likelihood(H.T, y, s)))(sigma.values)
    assert np.median(np.abs(log_evidence - exact)) < 0.5
    assert list(arviz_stats.summary(tree).index) == ["sigma"]


def test_pmmh_needs_global_sites_before_a_chain():
    def no_globals():
        x0 = diffusion_chain("x", LG_KERNEL, (3,))
        numpyro.factor("reward", x0.sum(-1))

    with pytest.raises(ValueError, match="nothing for PMMH to sample"):
        MCMC(PMMH(no_globals), num_warmup=0, num_samples=2, progress_bar=False).run(jax.random.PRNGKey(0))

    def hand_written():
        scale = numpyro.sample("scale", dist.LogNormal(0.0, 1.0))
        x = numpyro.sample("x_1", dist.Normal(jnp.zeros(2), 1.0).to_event(1))
        x = numpyro.sample("x_0", dist.Normal(x, scale).to_event(1))
        numpyro.factor("reward", x.sum(-1))

    with pytest.raises(ValueError, match="written with markov_chain or diffusion_chain"):
        MCMC(PMMH(hand_written), num_warmup=0, num_samples=2, progress_bar=False).run(jax.random.PRNGKey(0))

    with pytest.raises(ValueError, match="built on the same model"):
        PMMH(model, smc=TwistedSMC(no_globals, 8))
