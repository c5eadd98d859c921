"""Pooling independent runs: weights by ESS, the tilted law and log Z kept, TRI-TSMC's learning runs recycled."""
import pyro
import pytest
import torch

from pyro_twist import TRITSMC, TwistedSMC, recycle
from pyro_twist.smc.weights import ess

from .conftest import REWARD, SEED, lg_model_a, lg_model_b


def _runs(kernel, num_runs, num_particles):
    model = lg_model_a(kernel, REWARD)
    return [TwistedSMC(model, num_particles, progress_bar=False).run() for _ in range(num_runs)]


def test_each_run_enters_with_its_share_of_the_ess(lg_kernel):
    runs = _runs(lg_kernel, 3, 200)
    pooled = recycle(runs)
    assert pooled.num_particles == 600
    shares = pooled.get_normalized_weights().reshape(3, 200).sum(-1)
    expected = torch.stack([ess(r.log_weights) for r in runs])
    assert torch.allclose(shares, expected / expected.sum(), atol=1e-12)
    # Within a run, the pooled weights keep the run's own proportions and its particles' paths.
    assert torch.allclose(pooled.get_normalized_weights()[:200] / shares[0], runs[0].get_normalized_weights())
    for site in ("x_0", f"x_{lg_kernel.num_steps}"):
        assert torch.equal(pooled.trajectories()[site][200:400], runs[1].trajectories()[site])


def test_one_run_pooled_is_that_run(lg_kernel):
    (run,) = _runs(lg_kernel, 1, 300)
    pooled = recycle([run])
    assert torch.allclose(pooled.get_normalized_weights(), run.get_normalized_weights())
    assert torch.allclose(pooled.log_evidence, run.log_evidence)
    assert torch.allclose(pooled.ess_final, run.ess_final)


def test_pooled_runs_keep_the_tilted_law_and_log_z(lg_kernel):
    # 8 bootstrap runs of 500 particles: the pooled weighted mean of x_0 and log Z_hat against
    # the closed forms, within 4 standard errors of the pool's ESS (mean) and 0.1 nats (log Z).
    pooled = recycle(_runs(lg_kernel, 8, 500))
    mean, cov = lg_kernel.tilted(REWARD)
    W = pooled.get_normalized_weights()
    estimate = (W[:, None] * pooled.trajectories()["x_0"]).sum(0)
    se = (cov.diagonal() / pooled.ess_final).sqrt()
    assert torch.all((estimate - mean).abs() < 4 * se)
    assert abs(pooled.log_evidence.item() - lg_kernel.log_normalizer(REWARD).item()) < 0.1


def test_runs_of_different_models_are_refused(lg_kernel):
    other = TwistedSMC(lg_model_b(lg_kernel, REWARD), 10, progress_bar=False).run()
    with pytest.raises(ValueError, match="recycle pools runs of one model"):
        recycle(_runs(lg_kernel, 1, 10) + [other])
    with pytest.raises(ValueError, match="at least one result"):
        recycle([])


def test_tri_tsmc_returns_its_learning_runs_pooled_with_the_final_run(lg_kernel):
    model = lg_model_a(lg_kernel, REWARD)
    pyro.set_rng_seed(SEED)
    tri = TRITSMC(model, num_particles=128, num_iterations=3, final_num_particles=256, recycle=True,
                  progress_bar=False)
    pooled = tri.run()
    assert pooled.num_particles == 3 * 128 + 256
    assert [r.num_particles for r in tri.learning_results] == [128] * 3
    assert all(r.transitions is None for r in tri.learning_results)
    shares = pooled.get_normalized_weights()[3 * 128:].sum()
    runs = tri.learning_results + [tri.final_result]
    expected = torch.stack([ess(r.log_weights) for r in runs])
    assert torch.allclose(shares, expected[-1] / expected.sum(), atol=1e-12)
    # the pool has more effective particles than the final run alone, and log Z_hat stays at the closed form
    assert pooled.ess_final > tri.final_result.ess_final
    assert abs(pooled.log_evidence.item() - lg_kernel.log_normalizer(REWARD).item()) < 0.05
    pyro.set_rng_seed(SEED)
    plain = TRITSMC(model, num_particles=128, num_iterations=3, final_num_particles=256, progress_bar=False)
    assert plain.run().num_particles == 256 and plain.learning_results == []
