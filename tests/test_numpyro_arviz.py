"""numpyro_twist results in ArviZ: the DataTree groups, dimensions and values of pyro_twist.arviz."""
import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray

from numpyro_twist import TwistedSMC, diffusion_chain, recycle
from numpyro_twist.arviz import from_smc

from .numpyro_common import LG_KERNEL

Y = jnp.array([0.3, -0.2, 0.5])
NUM_RUNS, NUM_PARTICLES = 3, 64


def model(y):
    x0 = diffusion_chain("x", LG_KERNEL, (3,))
    numpyro.sample("y", dist.Normal(x0, 0.5).to_event(1), obs=y)
    numpyro.factor("prefer", x0[..., 0])
    numpyro.sample("z", dist.Normal(x0[..., 1], 1.0))


@pytest.fixture(scope="module")
def results():
    sampler = TwistedSMC(model, NUM_PARTICLES)
    return [sampler.run(jax.random.PRNGKey(run), Y) for run in range(NUM_RUNS)]


def test_smc_runs_convert_with_their_groups_dimensions_and_values(results):
    tree = from_smc(results)
    assert set(tree.children) == {"posterior", "sample_stats", "log_likelihood", "observed_data"}
    assert set(tree.posterior.data_vars) == {"x_0", "z"}
    x0 = tree.posterior["x_0"]
    assert x0.dims == ("chain", "draw", "x_0_dim_0") and x0.shape == (NUM_RUNS, NUM_PARTICLES, 3)
    stats = tree.sample_stats
    assert stats["ess"].dims == ("chain", "step") and stats["ess"].shape == (NUM_RUNS, LG_KERNEL.num_steps + 1)
    assert stats["resampled"].dtype == bool
    assert stats["log_marginal_likelihood"].values.tolist() == [float(r.log_evidence) for r in results]
    assert stats["log_marginal_likelihood_se"].values.tolist() == [r.log_evidence_se for r in results]
    assert np.array_equal(tree.observed_data["y"].values, Y)
    assert set(tree.log_likelihood.data_vars) == {"y", "prefer"}
    for chain, result in enumerate(results):
        # the draws are the run's particles at its own draws by weight, each with its own log-likelihood
        index = result.draw_indices(NUM_PARTICLES)
        draws = x0.values[chain]
        assert np.array_equal(draws, result.trajectories()["x_0"][index])
        assert np.array_equal(tree.posterior["z"].values[chain], result.trajectories()["z"][index])
        expected = dist.Normal(draws, 0.5).to_event(1).log_prob(Y)
        assert np.allclose(tree.log_likelihood["y"].values[chain], expected, rtol=1e-12)
        assert np.allclose(tree.log_likelihood["prefer"].values[chain], draws[:, 0], rtol=1e-12)
        assert np.array_equal(stats["ess"].values[chain], result.ess)
    summary = arviz_stats.summary(tree)
    assert list(summary.index) == ["x_0[0]", "x_0[1]", "x_0[2]", "z"]


def test_a_group_read_back_from_netcdf_keeps_its_values(results, tmp_path):
    tree = from_smc(results)
    for group in ("posterior", "log_likelihood", "observed_data"):
        path = tmp_path / f"{group}.nc"
        tree[group].to_dataset().to_netcdf(path, engine="scipy")  # netCDF3: one file per group
        with xarray.open_dataset(path, engine="scipy") as read:
            xarray.testing.assert_identical(read, tree[group].to_dataset())


def test_draws_follow_the_key_and_pooled_runs_convert(results):
    key = jax.random.PRNGKey(7)
    first, again = from_smc(results, rng_key=key), from_smc(results, rng_key=key)
    assert np.array_equal(first.posterior["x_0"].values, again.posterior["x_0"].values)
    assert not np.array_equal(first.posterior["x_0"].values, from_smc(results).posterior["x_0"].values)
    pooled = from_smc(recycle(results), sites=["x_0"], num_draws=100)
    assert pooled.posterior["x_0"].shape == (1, 100, 3)
    assert pooled.log_likelihood["y"].shape == (1, 100)


def test_an_unknown_site_is_named_in_the_error(results):
    with pytest.raises(ValueError, match="site 'w' is not in the result"):
        from_smc(results, sites=["w"])
