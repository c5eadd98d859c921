"""numpyro_twist on linear-Gaussian chains, against closed forms."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from numpyro_twist import TDS, BestOfN, FKSteering, ImportanceSampling, TwistedSMC, diffusion_chain

from .numpyro_common import LG_KERNEL, REWARD, lg_markov_model, lg_model


@pytest.mark.parametrize("form", [lg_model, lg_markov_model])
@pytest.mark.parametrize("num_particles", [1, 16])
def test_optimal_twist_is_a_zero_variance_sampler(form, num_particles):
    twist = LG_KERNEL.optimal_twist(REWARD)
    result = TwistedSMC(form(LG_KERNEL, REWARD), num_particles, twist=twist).run(jax.random.PRNGKey(1))
    assert result.log_evidence.dtype == jnp.float64
    assert abs(float(result.log_evidence) - float(LG_KERNEL.log_normalizer(REWARD))) < 1e-6
    assert np.allclose(result.ess, num_particles, atol=1e-6)
    assert not np.asarray(result.resampled).any()
    assert result.ess.shape == (LG_KERNEL.num_steps + 1,)


def test_optimal_twist_samples_the_tilted_law():
    twist = LG_KERNEL.optimal_twist(REWARD)
    result = TwistedSMC(lg_model(LG_KERNEL, REWARD), 4000, twist=twist).run(jax.random.PRNGKey(2))
    x0 = result.get_samples()["x_0"]
    mean, cov = (np.asarray(v) for v in LG_KERNEL.tilted(REWARD))
    se = np.sqrt(np.diag(cov) / x0.shape[0])
    assert np.all(np.abs(x0.mean(0) - mean) < 4 * se)
    assert np.allclose(np.cov(x0.T), cov, atol=0.1 * np.diag(cov).max())


@pytest.mark.parametrize("method", [TwistedSMC, FKSteering, TDS])
def test_inverse_problem_with_an_observed_site(method):
    """A likelihood after the chain: the steered posterior mean matches the Gaussian posterior."""
    H = jnp.array([[1.0, 0.0], [0.5, -1.0], [0.0, 0.7]])
    noise = 0.5
    y = jnp.array([1.2, -0.9])

    def model(y):
        x0 = diffusion_chain("x", LG_KERNEL, (LG_KERNEL.dim,))
        numpyro.sample("y", dist.Normal(x0 @ H, noise).to_event(1), obs=y)

    sampler = method(model, 512, keep_paths=False)
    keys = jax.random.split(jax.random.PRNGKey(3), 16)

    def weighted_mean(key):
        output = sampler.pure_run(key, y)
        return jax.nn.softmax(output.log_weights) @ output.states[-1]

    estimates = jax.jit(jax.vmap(weighted_mean))(keys)
    post_mean, post_cov = LG_KERNEL.posterior(H, y, noise)
    # Averaged over 16 runs of 512 particles, within 0.15 posterior standard deviations.
    error = np.abs(np.asarray(estimates.mean(0) - post_mean)) / np.sqrt(np.diag(post_cov))
    assert np.all(error < 0.15), error


def test_genealogy_gives_consistent_paths():
    """Each returned path is one trajectory: its states follow the chain's transitions."""
    result = FKSteering(lg_model(LG_KERNEL, 3 * REWARD), 64).run(jax.random.PRNGKey(4))
    assert np.asarray(result.resampled).all()
    paths = result.trajectories()
    assert list(paths) == [f"x_{k}" for k in range(LG_KERNEL.num_steps, -1, -1)]
    residuals = np.concatenate([
        (paths[f"x_{k - 1}"] - np.asarray(LG_KERNEL.transition(k, paths[f"x_{k}"]).mean)) / LG_KERNEL.s[k - 1]
        for k in range(1, LG_KERNEL.num_steps + 1)
    ])
    # standardised transition residuals of the stitched paths are N(0, 1)
    assert np.abs(residuals).max() < 6
    assert abs(residuals.std() - 1) < 0.1


def test_best_of_n_and_importance_sampling():
    model = lg_model(LG_KERNEL, REWARD)
    key = jax.random.PRNGKey(5)
    plain = ImportanceSampling(model, 64).run(key)
    assert not np.asarray(plain.resampled).any()
    x0 = plain.trajectories()["x_0"]
    # without resampling or twist the final log-weights are the rewards of ancestral samples
    assert np.allclose(plain.log_weights, x0 @ np.asarray(REWARD))
    best = BestOfN(model, 64).run(key)
    samples = best.get_samples(5)["x_0"]
    assert np.array_equal(samples, np.broadcast_to(x0[np.argmax(plain.log_weights)], (5, 3)))
    assert float(best.log_evidence) == float(plain.log_evidence)


def test_khat_is_low_for_the_exact_twist_and_high_for_a_poor_one(capsys):
    strong = 2.5 * REWARD
    model = lg_model(LG_KERNEL, strong)
    exact = TwistedSMC(model, 1024, twist=LG_KERNEL.optimal_twist(strong)).run(jax.random.PRNGKey(0))
    assert exact.pareto_khat < 0.7
    # the optimal twist of the opposite reward pushes every proposal away from the target
    poor = TwistedSMC(model, 1024, twist=LG_KERNEL.optimal_twist(-strong))
    for seed in range(3):
        with pytest.warns(UserWarning, match=r"heavy-tailed \(Pareto k-hat"):
            result = poor.run(jax.random.PRNGKey(seed))
        assert result.pareto_khat > 0.7
    result.print_summary()
    assert "unreliable" in capsys.readouterr().out


def test_evidence_with_an_error_bar_and_a_bayes_factor():
    from numpyro_twist import estimate_evidence, log_bayes_factor

    estimates, exact = {}, {}
    for scale in (1.0, 2.0):
        a = scale * REWARD
        sampler = FKSteering(lg_model(LG_KERNEL, a), 64)
        estimates[scale] = estimate_evidence(sampler, jax.random.PRNGKey(int(scale)), num_runs=32)
        exact[scale] = float(LG_KERNEL.log_normalizer(a))
        assert 0 < estimates[scale].log_evidence_se < 0.1
        assert abs(estimates[scale].log_evidence - exact[scale]) < 4 * estimates[scale].log_evidence_se + 0.01
        assert len(estimates[scale].runs) == len(estimates[scale].run_se) == 32
    value, se = log_bayes_factor(estimates[2.0], estimates[1.0])
    assert abs(value - (exact[2.0] - exact[1.0])) < 4 * se + 0.01
    with pytest.raises(ValueError, match="at least 2"):
        estimate_evidence(FKSteering(lg_model(LG_KERNEL, REWARD), 8), jax.random.PRNGKey(0), num_runs=1)


def test_evidence_from_passes_mapped_one_after_another_equals_estimate_evidence():
    from numpyro_twist import estimate_evidence, evidence_from_passes

    sampler = FKSteering(lg_model(LG_KERNEL, REWARD), 16, keep_paths=False)
    expected = estimate_evidence(sampler, jax.random.PRNGKey(3), num_runs=6)
    keys = jax.random.split(jax.random.PRNGKey(3), 6)  # the keys estimate_evidence splits
    outputs = jax.jit(lambda keys: jax.lax.map(sampler.pure_run, keys))(keys)
    evidence = evidence_from_passes(outputs)
    assert np.allclose(evidence.runs, expected.runs, rtol=0, atol=1e-10)
    assert np.allclose(evidence[:2], expected[:2], rtol=0, atol=1e-10)
    assert np.allclose(evidence.run_se, expected.run_se, rtol=0, atol=1e-10)
    assert outputs.states.shape == (6, 1, 16, LG_KERNEL.dim)  # the passes' final particles, for other estimates
    with pytest.raises(ValueError, match=r"at least 2 passes stacked along the first axis.*shape \(\)"):
        evidence_from_passes(sampler.pure_run(keys[0]))
