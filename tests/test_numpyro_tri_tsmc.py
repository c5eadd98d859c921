"""numpyro_twist's TRI-TSMC learns the zero-variance sampler of a linear-Gaussian chain, as pyro_twist's does."""
import math
import warnings
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import torch

from numpyro_twist import TRITSMC, LinearTwist, NeuralTwist, TwistedSMC, markov_chain
from numpyro_twist.infer.tri_tsmc import default_twist
from twist_core.learning import Candidate, Measurement
from numpyro_twist.chains import random_linear_gaussian
from pyro_twist.smc.trust_region import trust_region_step as torch_trust_region_step
from numpyro_twist.smc.trust_region import trust_region_step

from .numpyro_common import lg_model

DIM, NUM_STEPS, N = 4, 50, 256


@pytest.fixture(scope="module")
def strong_problem():
    """pyro_twist's test problem: a reward whose variance under the base chain is 12 (bootstrap ESS ~ 1%)."""
    kernel = random_linear_gaussian(DIM, NUM_STEPS, seed=0)
    _, cov = kernel.marginal()
    direction = jnp.array([1.0, -0.6, 0.3, 0.8])
    a = direction * math.sqrt(12.0 / (direction @ cov @ direction))
    return kernel, a, lg_model(kernel, a), float(kernel.log_normalizer(a))


@pytest.fixture(scope="module")
def learning(strong_problem):
    """TRI-TSMC from the base chain, and what its run() returned: the learning runs pooled with the final run."""
    _, _, model, _ = strong_problem
    tri = TRITSMC(model, num_particles=N, num_iterations=8, recycle=True, progress_bar=False)
    return tri, tri.run(jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def learned(learning):
    return learning[0]


def test_converges_to_the_zero_variance_sampler(strong_problem, learned):
    _, _, _, log_z = strong_problem
    assert learned.final.twist is learned.twist
    keys = jax.random.split(jax.random.PRNGKey(1), 20)
    final = np.array([float(learned.final.run(key).log_evidence) for key in keys])
    print(f"log Z = {log_z:.4f}; learned twist: mean {final.mean():.4f} sd {final.std(ddof=1):.4f}; "
          f"per-iteration ESS {[round(stats.ess, 1) for stats in learned.history]}")
    assert final.std(ddof=1) <= 0.05
    assert abs(final.mean() - log_z) <= 0.05
    assert abs(float(learned.final_result.log_evidence) - log_z) <= 0.05


def test_recycling_pools_the_learning_runs_with_the_final_run(strong_problem, learning):
    _, _, _, log_z = strong_problem
    tri, pooled = learning
    runs = tri.learning_results + [tri.final_result]
    assert len(runs) == 9 and pooled.num_particles == 9 * N
    # each run's weight is proportional to its ESS, which makes the pool's ESS the sum of the runs'
    assert abs(float(pooled.ess_final) - sum(float(run.ess_final) for run in runs)) < 1e-6
    assert abs(float(jax.nn.logsumexp(pooled.log_weights))) < 1e-12
    print(f"pooled log Z_hat {float(pooled.log_evidence):.4f} +- {pooled.log_evidence_se:.4f}, final run "
          f"{float(tri.final_result.log_evidence):.4f} +- {tri.final_result.log_evidence_se:.4f}, log Z {log_z:.4f}")
    assert abs(float(pooled.log_evidence) - log_z) <= 0.05
    paths = pooled.trajectories()
    assert paths["x_50"].shape == (9 * N, DIM)
    assert np.array_equal(paths["x_0"][:N], runs[0].trajectories()["x_0"])
    assert np.array_equal(paths["x_17"][-N:], tri.final_result.trajectories()["x_17"])


def test_history_reports_each_iteration(learned):
    history = learned.history
    assert len(history) == 8
    for stats in history:
        assert 0 < stats.tau <= 1 and stats.accepted
        assert stats.kl <= learned.kl_budget + 1e-9
        assert stats.denoiser_evaluations == N * NUM_STEPS
        assert stats.ess_per_step.shape == (NUM_STEPS + 1,)
        assert stats.seconds > 0
    # The first step is held back by the budget; learning then makes full steps at high ESS.
    assert history[0].tau < 1 and abs(history[0].kl - learned.kl_budget) < 1e-6
    assert history[-1].tau == 1.0 and history[-1].ess > 0.9 * N
    assert history[-1].mean_reward > history[0].mean_reward


def test_learned_weights_approach_the_optimal_twist(strong_problem, learned):
    kernel, a, _, _ = strong_problem
    optimal = kernel.optimal_twist(a).weight
    relative = np.linalg.norm(learned.twist.weight - optimal, axis=1) / np.linalg.norm(optimal, axis=1)
    # measured: at most 0.19 (at steps near k = K, where the chain's noise hides the reward most), 0.06 on average;
    # the start (the base chain, w = 0) is at 1
    assert relative.max() < 0.3 and relative.mean() < 0.1, relative


def test_a_new_twist_runs_the_compiled_pass(strong_problem, learned):
    kernel, a, _, log_z = strong_problem
    assert learned.learner._compiled_with_twist._cache_size() == 1  # eight learning passes, one compilation
    optimal = kernel.optimal_twist(a)
    sampler = TwistedSMC(learned.model, N)
    runs = []
    for twist in (learned.twist, LinearTwist(optimal.weight, optimal.bias, smoothing=learned.twist.smoothing)):
        sampler.twist = twist
        runs.append(float(sampler.run(jax.random.PRNGKey(3)).log_evidence))
    assert sampler._compiled_with_twist._cache_size() == 1
    # the second twist is the one that ran, not a constant of the first compilation: the optimal twist is exact
    assert abs(runs[1] - log_z) < 1e-9 and runs[0] != runs[1]


@pytest.mark.parametrize("kl_budget", [0.05, 0.5, 2.0])
@pytest.mark.filterwarnings("ignore:.*Pareto k-hat")
def test_trust_region_agrees_with_pyro_on_path_weights(learned, kl_budget):
    learner = learned.learner
    learner.twist = LinearTwist.zeros(NUM_STEPS, (DIM,), smoothing=learned.twist.smoothing)  # the base chain
    log_R = learner.run(jax.random.PRNGKey(5)).log_weights  # heavy-tailed path weights
    step = trust_region_step(log_R, kl_budget)
    reference = torch_trust_region_step(torch.from_numpy(np.array(log_R)), kl_budget)
    assert float(step.tau) < 1
    assert abs(float(step.tau) - reference.tau) < 1e-10
    assert abs(float(step.kl) - reference.kl) < 1e-10
    assert np.allclose(np.asarray(step.log_weights), reference.log_weights.numpy(), rtol=0, atol=1e-10)


@jax.tree_util.register_pytree_node_class
class GarbageFit(LinearTwist):
    """A twist whose fit ignores the paths and returns a large random twist."""

    def fit(self, transitions, log_weights, log_reward):
        key = jax.random.PRNGKey(int(1e3 * abs(float(self.weight.sum()))) % 1000)
        return GarbageFit(5.0 * jax.random.normal(key, self.weight.shape), self.bias)


def test_the_guard_keeps_the_start_when_fits_are_worse(strong_problem):
    kernel, a, model, log_z = strong_problem
    optimal = kernel.optimal_twist(a)
    start = GarbageFit(optimal.weight, optimal.bias)
    tri = TRITSMC(model, twist=start, num_particles=N, num_iterations=4, progress_bar=False)
    with pytest.warns(UserWarning, match="no learned twist measured better than the twist it started from"):
        result = tri.run(jax.random.PRNGKey(2))
    assert tri.twist is start
    assert [stats.accepted for stats in tri.history] == [True, False, True, False]
    assert abs(float(result.log_evidence) - log_z) < 1e-9


def test_default_family_beyond_linear_gaussian_kernels(strong_problem):
    kernel, a, model, _ = strong_problem

    def markov_model():
        x0 = markov_chain("x", kernel.prior(), kernel.transition, kernel.num_steps)
        numpyro.factor("reward", x0 @ a)

    key = jax.random.PRNGKey(0)
    assert isinstance(default_twist(TRITSMC(model).learner, key, (), {}), LinearTwist)
    # the same chain written as a markov_chain has no kernel to tell it is linear-Gaussian
    twist = default_twist(TRITSMC(markov_model).learner, key, (), {})
    assert isinstance(twist, NeuralTwist) and twist.num_steps == NUM_STEPS and twist.event_shape == (DIM,)

    def discrete_model():
        z = markov_chain("z", dist.Categorical(probs=jnp.array([0.5, 0.5])),
                         lambda k, z: dist.Categorical(probs=jnp.array([[0.9, 0.1], [0.2, 0.8]])[z]), 5)
        numpyro.factor("reward", 1.0 * z)

    with pytest.raises(NotImplementedError, match="states of dtype int64.*Pass TRITSMC a twist of your own"):
        default_twist(TRITSMC(discrete_model).learner, key, (), {})


def test_bad_arguments(strong_problem):
    _, _, model, _ = strong_problem

    class FixedTwist:
        def log_psi(self, k, x):
            return x.sum(-1)

    with pytest.raises(TypeError, match="needs fit\\(transitions, log_weights, log_reward\\)"):
        TRITSMC(model, twist=FixedTwist())
    with pytest.raises(ValueError, match="kl_budget must be positive"):
        TRITSMC(model, kl_budget=0.0)


def test_final_run_that_disagrees_with_learning_warns(strong_problem):
    _, _, model, _ = strong_problem
    tri = TRITSMC(model, progress_bar=False)
    best = Candidate(None, [Measurement(1.0, 0.02, 0.9, 0.5, 0.2), Measurement(1.01, 0.02, 0.9, 0.5, 0.2)])
    with pytest.warns(UserWarning, match="disagrees with the learning runs'"):
        tri._check_agreement(best, SimpleNamespace(log_evidence=1.3, log_evidence_se=0.02))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tri._check_agreement(best, SimpleNamespace(log_evidence=1.06, log_evidence_se=0.02))
