"""TRI-TSMC learns the zero-variance sampler of a linear-Gaussian chain."""
import io
import math

import pyro
import pytest
import torch

from pyro_twist import TRITSMC, LinearTwist, TwistedSMC
from pyro_twist.chains.linear_gaussian import random_linear_gaussian

from .conftest import SEED, lg_model_a

DIM, NUM_STEPS, N = 4, 50, 256


@pytest.fixture(scope="module")
def strong_problem():
    kernel = random_linear_gaussian(DIM, NUM_STEPS, seed=0)
    _, cov = kernel.marginal()
    direction = torch.tensor([1.0, -0.6, 0.3, 0.8], dtype=torch.float64)
    a = direction * math.sqrt(12.0 / (direction @ cov @ direction))  # Var(reward) = 12 under the base chain
    return kernel, a, lg_model_a(kernel, a), kernel.log_normalizer(a).item()


@pytest.fixture(scope="module")
def learned(strong_problem):
    _, _, model, _ = strong_problem
    pyro.set_rng_seed(SEED)
    tri = TRITSMC(model, num_particles=N, num_iterations=8, progress_bar=False)
    tri.run()
    return tri


def test_converges_to_the_zero_variance_sampler(strong_problem, learned):
    _, _, model, log_z = strong_problem
    pyro.set_rng_seed(SEED + 1)
    final = torch.stack([TwistedSMC(model, N, twist=learned.twist, progress_bar=False).run().log_evidence
                         for _ in range(20)])
    bootstrap = torch.stack([TwistedSMC(model, N, progress_bar=False).run().log_evidence for _ in range(20)])
    print(f"log Z = {log_z:.4f}; learned twist: mean {final.mean():.4f} sd {final.std():.4f}; "
          f"bootstrap: mean {bootstrap.mean():.4f} sd {bootstrap.std():.4f}")
    assert final.std() <= 0.05
    assert abs(final.mean().item() - log_z) <= 0.05
    assert bootstrap.std() >= 10 * final.std()


def test_history_reports_each_iteration(learned):
    history = learned.history
    assert len(history) == 8
    for stats in history:
        assert 0 < stats.tau <= 1
        assert stats.kl <= learned.kl_budget + 1e-9
        assert stats.denoiser_evaluations == N * NUM_STEPS
        assert stats.ess_per_step.shape == (NUM_STEPS + 1,)
        assert stats.seconds > 0
    # The first step is held back by the budget; learning then makes full steps at high ESS.
    assert history[0].tau < 1 and abs(history[0].kl - learned.kl_budget) < 1e-6
    assert history[-1].tau == 1.0 and history[-1].ess > 0.9 * N
    assert history[-1].mean_reward > history[0].mean_reward


def test_saved_and_loaded_twist_reproduces_the_run(strong_problem, learned):
    _, _, model, _ = strong_problem
    buffer = io.BytesIO()
    torch.save(learned.twist.state_dict(), buffer)
    buffer.seek(0)
    loaded = LinearTwist(NUM_STEPS, (DIM,)).double()
    loaded.load_state_dict(torch.load(buffer))
    runs = []
    for twist in (learned.twist, loaded):
        pyro.set_rng_seed(SEED + 7)
        runs.append(TwistedSMC(model, N, twist=twist, progress_bar=False).run())
    assert runs[0].log_evidence.item() == runs[1].log_evidence.item()
    # Reused without learning, it keeps the ESS it reached.
    reused_ess = torch.stack([TwistedSMC(model, N, twist=loaded, ess_threshold=0.0, progress_bar=False).run().ess_final
                              for _ in range(5)])
    assert reused_ess.mean() > 0.9 * learned.history[-1].ess


def test_starting_from_the_optimal_twist_stays_there(strong_problem):
    kernel, a, model, log_z = strong_problem
    optimal = kernel.optimal_twist(a)
    optimal.smoothing = 2.0
    tri = TRITSMC(model, twist=optimal, num_particles=N, num_iterations=4, progress_bar=False)
    result = tri.run()
    first = tri.history[0]
    assert first.tau == 1.0 and first.kl < 1e-9
    assert abs(first.ess - N) < 1e-6
    assert abs(first.log_evidence - log_z) < 1e-6
    # The weights are uniform, so the control-variate projection leaves the twist where it is.
    for stats in tri.history[1:]:
        assert abs(stats.log_evidence - log_z) < 1e-6
    assert abs(result.log_evidence.item() - log_z) < 1e-6


def test_bad_arguments(strong_problem):
    _, _, model, _ = strong_problem

    class FixedTwist:
        def log_psi(self, k, x):
            return x.sum(-1)

    with pytest.raises(TypeError, match="needs fit\\(transitions, log_weights, log_reward\\)"):
        TRITSMC(model, twist=FixedTwist())
    with pytest.raises(ValueError, match="kl_budget must be positive"):
        TRITSMC(model, kl_budget=0.0)
