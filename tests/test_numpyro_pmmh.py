"""numpyro_twist PMMH over a global noise level, against its exact posterior (the problem of test_pmmh.py)."""
import math
import time

import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import MCMC

from numpyro_twist import PMMH, TRITSMC, NeuralTwist, TwistedSMC, diffusion_chain
from numpyro_twist.arviz import from_mcmc

from .conftest import SEED
from .numpyro_common import LG_KERNEL

H = jnp.array([[1.0, 0.5, 0.0], [0.0, 1.0, -0.7], [0.3, 0.0, 1.0]])
PRIOR = (math.log(0.5), 0.75)  # LogNormal prior of the noise sd
# a sharper observation: a noise sd of 0.05 under LogNormal(log 0.07, 0.5), where bootstrap's estimate is noisy
SHARP_PRIOR = (math.log(0.07), 0.5)


def noise_model(prior):
    """The chain (d = 3, K = 20) seen through y = H x_0 + N(0, sigma^2 I), sigma ~ LogNormal(*prior) unknown."""

    def model(y):
        sigma = numpyro.sample("sigma", dist.LogNormal(*prior))
        x0 = diffusion_chain("x", LG_KERNEL, (3,))
        numpyro.sample("y", dist.Normal(x0 @ H.T, sigma).to_event(1), obs=y)

    return model


model = noise_model(PRIOR)


def observation_and_posterior(noise_sd, prior):
    """y from one draw of the chain with noise of sd ``noise_sd``, and the exact posterior mean and sd of sigma
    on a fine grid: p(y | sigma) = N(H m, H C H^T + sigma^2 I)."""
    mean, cov = LG_KERNEL.marginal()
    rng = np.random.default_rng(1)
    y = H @ (mean + np.linalg.cholesky(cov) @ rng.standard_normal(3)) + noise_sd * rng.standard_normal(3)
    grid = jnp.linspace(0.001, 5.0, 10000)
    log_post = dist.LogNormal(*prior).log_prob(grid) + jax.vmap(
        lambda sigma: LG_KERNEL.log_marginal_likelihood(H.T, y, sigma))(grid)
    w = jax.nn.softmax(log_post)
    post_mean = float(w @ grid)
    return y, post_mean, float(jnp.sqrt(w @ (grid - post_mean) ** 2))


@pytest.fixture(scope="module")
def problem():
    return observation_and_posterior(0.5, PRIOR)


def run_pmmh(kernel, y, num_samples, seed=0):
    """Two vectorized chains of ``num_samples`` draws after 500 warmup steps: the run, and its ESS of sigma per
    second (compiling, and a twist's pilot and learning, included)."""
    mcmc = MCMC(kernel, num_warmup=500, num_samples=num_samples, num_chains=2, chain_method="vectorized",
                progress_bar=False)
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), y, extra_fields=("log_evidence", "accept_prob"))
    sigma = np.asarray(mcmc.get_samples(group_by_chain=True)["sigma"])
    return mcmc, effective_sample_size(sigma) / (time.perf_counter() - start)


def accept_rate(mcmc):
    return float(np.mean(mcmc.get_extra_fields()["accept_prob"]))


def check_exact(mcmc, post_mean, post_sd, name):
    """PMMH's posterior mean and sd of sigma within 3 Monte Carlo standard errors of the exact ones, R-hat < 1.01."""
    sigma = np.asarray(mcmc.get_samples(group_by_chain=True)["sigma"])
    ess = effective_sample_size(sigma)
    mean, sd = sigma.mean(), sigma.std()
    mcse_mean, mcse_sd = sd / math.sqrt(ess), sd / math.sqrt(2 * ess)
    rhat = split_gelman_rubin(sigma)
    print(f"{name}: exact mean {post_mean:.4f} sd {post_sd:.4f}; PMMH mean {mean:.4f} sd {sd:.4f} (MCSE "
          f"{mcse_mean:.4f}, {mcse_sd:.4f}); ESS {ess:.0f}, R-hat {rhat:.4f}; acceptance {accept_rate(mcmc):.3f}")
    assert abs(mean - post_mean) < 3 * mcse_mean
    assert abs(sd - post_sd) < 3 * mcse_sd
    assert rhat < 1.01


@pytest.fixture(scope="module")
def mcmc(problem):
    y, _, _ = problem
    return run_pmmh(PMMH(model, smc=TwistedSMC(model, 64)), y, 3000)[0]


def test_pmmh_samples_the_exact_posterior_of_a_global_parameter(problem, mcmc):
    _, post_mean, post_sd = problem
    check_exact(mcmc, post_mean, post_sd, "bootstrap N = 64")
    assert 0.1 < accept_rate(mcmc) < 0.5


def log_noise_sd(values):
    """The amortised twist's context: PMMH gives it the global sites' values."""
    return jnp.log(values["sigma"]).reshape(1)


def test_a_twist_learned_over_the_global_parameter_mixes_faster():
    # With y sharp, bootstrap's log Z_hat at N = 32 is noisy enough to make the chain sticky; a neural twist with
    # log sigma as its context, learned at 16 draws of a pilot chain, serves every sigma the chain visits.
    # Measured (seeds 0, 1, 2), ESS per second with compiling, pilot and learning: 23.3, 19.0, 25.1 against
    # bootstrap's 7.5, 3.2, 0.4; acceptance 0.23-0.25 against 0.08-0.12; the learned twist's chains within 0.8
    # MCSE of the exact mean and 2.3 of the sd, R-hat 1.0023, 1.0008, 1.0074; log Z_hat's sd at the posterior
    # mean 1.4-1.6 against 8.5. The test takes ~50 s on one core.
    sharp_model = noise_model(SHARP_PRIOR)
    y, post_mean, post_sd = observation_and_posterior(0.05, SHARP_PRIOR)
    bootstrap = PMMH(sharp_model, smc=TwistedSMC(sharp_model, 32))
    # the pilot runs bootstrap at N = 256, less sticky, so that the 16 draws learnt at spread over the posterior;
    # every step of the chain itself runs N = 32
    learned = PMMH(sharp_model, smc=TwistedSMC(sharp_model, 256), learn_twist=TRITSMC(
        sharp_model, twist=NeuralTwist(20, (3,), jax.random.PRNGKey(SEED), context_dim=1, num_fit_steps=40),
        num_particles=256, num_iterations=16, final_num_particles=32, progress_bar=False), context=log_noise_sd)
    bootstrap_mcmc, bootstrap_rate = run_pmmh(bootstrap, y, 6000, SEED)
    learned_mcmc, learned_rate = run_pmmh(learned, y, 6000, SEED)
    print(f"N = 32, ESS per second: bootstrap {bootstrap_rate:.1f} (acceptance {accept_rate(bootstrap_mcmc):.3f}), "
          f"learned twist {learned_rate:.1f} (acceptance {accept_rate(learned_mcmc):.3f})")
    check_exact(learned_mcmc, post_mean, post_sd, "learned twist")
    assert learned_rate > bootstrap_rate
    # at the posterior mean, the learned twist's log Z_hat spreads far less than bootstrap's; 100 runs each
    at_mean, keys = {"sigma": jnp.log(post_mean)}, jax.random.split(jax.random.PRNGKey(1), 100)
    first_chains_twist = jax.tree.map(lambda leaf: leaf[0], learned_mcmc.last_state.twist)
    spread = {name: float(np.std(jax.jit(jax.vmap(
        lambda key: kernel.log_target(key, at_mean, (y,), {}, twist)[1]))(keys)))
        for name, kernel, twist in (("bootstrap", bootstrap, None), ("learned", learned, first_chains_twist))}
    print(f"log Z_hat sd at the posterior mean: {spread}")
    assert spread["learned"] < 0.5 * spread["bootstrap"]


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


def test_learn_twist_names_what_it_needs():
    def learner(twist, on=model):
        return TRITSMC(on, twist=twist, num_particles=8, num_iterations=16, progress_bar=False)

    with_context = NeuralTwist(20, (3,), jax.random.PRNGKey(0), context_dim=1)
    with pytest.raises(ValueError, match="pass learn_twist=TRITSMC"):
        PMMH(model, context=log_noise_sd)
    with pytest.raises(ValueError, match="a TRITSMC built on the same model"):
        PMMH(model, learn_twist=learner(with_context, on=noise_model(PRIOR)), context=log_noise_sd)
    with pytest.raises(ValueError, match="takes a context of size 1: pass PMMH\\(..., context="):
        PMMH(model, learn_twist=learner(with_context))
    with pytest.raises(ValueError, match="takes none: give TRITSMC a twist with one"):
        PMMH(model, learn_twist=learner(None), context=log_noise_sd)
    kernel = PMMH(model, smc=TwistedSMC(model, 8), learn_twist=learner(with_context), context=log_noise_sd)
    with pytest.raises(ValueError, match="num_warmup must be at least 64, got 40"):
        MCMC(kernel, num_warmup=40, num_samples=2, progress_bar=False).run(jax.random.PRNGKey(0), jnp.zeros(3))
