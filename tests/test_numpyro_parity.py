"""pyro_twist and numpyro_twist on the same problems: the same closed forms, kernels and evidence."""
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pyro
import pytest
import torch

import numpyro
import numpyro_twist
import pyro_twist
from numpyro_twist.chains import LinearGaussianKernel

from .numpyro_common import REWARD

REPEATS = 40


@pytest.fixture(scope="module")
def kernels():
    """The Pyro tests' linear-Gaussian chain in both backends, from the same numbers."""
    torch_kernel = pyro_twist.chains.random_linear_gaussian(3, 20, seed=0)
    jax_kernel = LinearGaussianKernel(*(jnp.asarray(v.numpy()) for v in (torch_kernel.A, torch_kernel.b,
                                                                          torch_kernel.s)))
    return torch_kernel, jax_kernel


def test_closed_forms_agree(kernels):
    torch_kernel, jax_kernel = kernels
    a = torch.tensor(np.asarray(REWARD))
    assert abs(torch_kernel.log_normalizer(a).item() - float(jax_kernel.log_normalizer(REWARD))) < 1e-12
    torch_twist, jax_twist = torch_kernel.optimal_twist(a), jax_kernel.optimal_twist(REWARD)
    assert np.allclose(torch_twist.weight.detach().numpy(), jax_twist.weight, atol=1e-12)
    assert np.allclose(torch_twist.bias.detach().numpy(), jax_twist.bias, atol=1e-12)


@pytest.mark.filterwarnings("ignore:.*Pareto k-hat")
@pytest.mark.parametrize("method", ["TwistedSMC", "FKSteering"])
def test_log_evidence_agrees_within_monte_carlo_error(kernels, method):
    torch_kernel, jax_kernel = kernels
    a = torch.tensor(np.asarray(REWARD))

    def pyro_model():
        x0 = pyro_twist.diffusion_chain("x", torch_kernel, (3,))
        pyro.factor("reward", x0 @ a)

    def numpyro_model():
        x0 = numpyro_twist.diffusion_chain("x", jax_kernel, (3,))
        numpyro.factor("reward", x0 @ REWARD)

    options = {"ess_threshold": 1.0} if method == "TwistedSMC" else {}
    pyro_sampler = getattr(pyro_twist, method)(pyro_model, 32, progress_bar=False, **options)
    pyro.set_rng_seed(0)
    torch_runs = np.array([pyro_sampler.run().log_evidence.item() for _ in range(REPEATS)])
    jax_sampler = getattr(numpyro_twist, method)(numpyro_model, 32, keep_paths=False, **options)
    keys = jax.random.split(jax.random.PRNGKey(0), REPEATS)
    jax_runs = np.asarray(jax.jit(jax.vmap(lambda key: jax_sampler.pure_run(key).log_evidence))(keys))
    # the same estimator: equal means of log Z_hat within 4 standard errors of their difference
    difference_se = math.sqrt(torch_runs.var(ddof=1) / REPEATS + jax_runs.var(ddof=1) / REPEATS)
    assert abs(torch_runs.mean() - jax_runs.mean()) <= 4 * difference_se, (torch_runs.mean(), jax_runs.mean())
    assert 0.5 < jax_runs.std(ddof=1) / torch_runs.std(ddof=1) < 2.0


def test_ddpm_mixture_kernels_have_the_same_transitions():
    from pyro_twist.chains import GaussianMixture as TorchMixture
    from pyro_twist.chains import GaussianMixtureKernel as TorchKernel

    torch_kernel = TorchKernel(TorchMixture.ring(), num_steps=30)
    jax_kernel = numpyro_twist.GaussianMixtureKernel(numpyro_twist.GaussianMixture.ring(), num_steps=30)
    x = np.random.default_rng(0).normal(size=(16, 2)) * 2
    for k in (30, 17, 2, 1):
        torch_law = torch_kernel.transition(k, torch.from_numpy(x))
        jax_law = jax_kernel.transition(k, jnp.asarray(x))
        assert np.allclose(torch_law.mean.numpy(), jax_law.mean, rtol=1e-5, atol=1e-6), k
        if k > 1:
            assert np.allclose(torch_law.variance.numpy(), jax_law.variance, rtol=1e-5), k
        assert np.allclose(torch_kernel.predict_x0(k, torch.from_numpy(x)).numpy(), jax_kernel.predict_x0(k, x),
                           rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("package, forbidden", [("numpyro_twist", "torch"), ("pyro_twist", "jax"),
                                                ("numpyro_twist.arviz", "torch"), ("pyro_twist.arviz", "jax"),
                                                ("twist_core.learning", "torch"), ("twist_core.learning", "jax"),
                                                ("twist_core.arviz", "torch"), ("twist_core.arviz", "jax")])
def test_each_backend_imports_only_its_own_framework(package, forbidden):
    code = f"import sys, {package}; sys.exit({forbidden!r} in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("shape", [0.3, 0.9])
def test_diagnostics_agree_between_backends(shape):
    # the same weights give the same Pareto k-hat and standard error in both backends
    from twist_core.pareto import pareto_khat as host_khat
    from numpyro_twist.smc.weights import log_evidence_se as jax_se
    from pyro_twist.smc.pareto import pareto_khat as torch_khat
    from pyro_twist.smc.weights import log_evidence_se as torch_se

    log_w = -shape * np.log(np.random.default_rng(0).uniform(size=1000))
    assert abs(host_khat(log_w) - torch_khat(torch.tensor(log_w))) < 1e-10
    assert abs(host_khat(log_w) - shape) < 0.3
    assert host_khat(np.zeros(100)) == torch_khat(torch.zeros(100)) == -math.inf
    assert abs(jax_se([300.0, 700.0], 1000) - torch_se([300.0, 700.0], 1000)) < 1e-12


def test_weights_within_a_percent_have_no_tail_in_either_backend():
    # FK steering on the digits model in float32 can skip its last resampling and end with weights a few
    # thousandths of a nat apart: ESS N, and a k-hat fitted to those differences read 1.3-1.5 (the fit does
    # not see the scale). Weights that close carry the estimate alike; the same shape over nats is a tail.
    from twist_core.pareto import pareto_khat as host_khat
    from pyro_twist.smc.pareto import pareto_khat as torch_khat

    uniform = np.random.default_rng(0).uniform(size=256)
    close = (-2.0 - 1e-3 * np.log(uniform)).astype(np.float32)  # an exponential spread of log-weights, scaled down
    assert host_khat(close) == torch_khat(torch.tensor(close)) == -math.inf
    spread = -0.9 * np.log(uniform)
    assert host_khat(spread) > 0.5 and abs(host_khat(spread) - torch_khat(torch.tensor(spread))) < 1e-10



def test_trust_region_agrees_between_backends():
    # heavy-tailed, asymmetric path log-weights, some of them zero weight
    from numpyro_twist.smc import trust_region as jax_tr
    from pyro_twist.smc import trust_region as torch_tr

    rng = np.random.default_rng(1)
    log_R = np.concatenate([3.0 * rng.standard_normal(300), 8.0 * rng.gumbel(size=200)])
    finite = log_R.copy()
    log_R[::37] = -np.inf
    for tau in (0.0, 0.1, 0.7, 1.0):
        assert abs(float(jax_tr.escort_kl(finite, tau)) - torch_tr.escort_kl(torch.tensor(finite), tau).item()) < 1e-10
        chi_square = torch_tr.chi_square_to_target(torch.tensor(finite), tau).item()  # up to e^30 here: relative
        assert float(jax_tr.chi_square_to_target(finite, tau)) == pytest.approx(chi_square, rel=1e-10, abs=1e-10)
    for lam in (0.0, 0.5, 4.0):
        assert abs(float(jax_tr.dual_objective(finite, lam, 0.3))
                   - torch_tr.dual_objective(torch.tensor(finite), lam, 0.3).item()) < 1e-10
    for weights in (finite, log_R):
        for budget in (0.01, 0.5, 3.0, 50.0):
            step = jax_tr.trust_region_step(weights, budget)
            reference = torch_tr.trust_region_step(torch.tensor(weights), budget)
            assert abs(float(step.tau) - reference.tau) < 1e-10, (budget, float(step.tau), reference.tau)
            assert abs(float(step.kl) - reference.kl) < 1e-10
            assert float(step.kl) <= budget + 1e-12
            assert np.array_equal(np.isinf(step.log_weights), np.isinf(reference.log_weights.numpy()))
            kept = np.isfinite(weights)
            assert np.allclose(np.asarray(step.log_weights)[kept], reference.log_weights.numpy()[kept], rtol=0,
                               atol=1e-10)
    with pytest.raises(ValueError, match="all -inf or contain NaN"):
        jax_tr.trust_region_step(np.full(4, -np.inf), 0.5)
    with pytest.raises(ValueError, match="kl_budget must be positive"):
        jax_tr.trust_region_step(finite, 0.0)


@pytest.mark.parametrize("smoothing", [0.0, 2.0])
def test_linear_twist_fit_agrees_between_backends(smoothing):
    # the same records in both backends' forms; the last step (k = 0) deterministic, fit by regression
    from numpyro_twist.infer.steps import TransitionRecord as JaxRecord
    from pyro_twist.infer.twisted_smc import TransitionRecord as TorchRecord

    num_steps, n, dim = 6, 64, 3
    rng = np.random.default_rng(2)
    value, base_mean, proposal_mean = rng.standard_normal((3, num_steps + 1, n, dim))
    base_variance = rng.uniform(0.1, 1.0, (num_steps + 1, n, dim))
    gaussian = np.arange(num_steps, -1, -1) > 0  # records run over k = K..0
    log_weights, log_reward = 2.0 * rng.standard_normal(n), rng.standard_normal(n)
    weight, bias = rng.standard_normal((num_steps + 1, dim)), rng.standard_normal(num_steps + 1)

    jax_records = JaxRecord(value, base_mean, base_variance, proposal_mean, gaussian, np.zeros((num_steps + 1, n)))
    fitted = numpyro_twist.LinearTwist(weight, bias, smoothing).fit(jax_records, log_weights, log_reward)
    torch_records = [
        TorchRecord(num_steps - i, torch.tensor(value[i]), None,
                    *((torch.tensor(m[i]) for m in (base_mean, base_variance, proposal_mean)) if gaussian[i]
                      else (None, None, None)), None)
        for i in range(num_steps + 1)
    ]
    reference = pyro_twist.LinearTwist(num_steps, (dim,), torch.tensor(weight), torch.tensor(bias), smoothing)
    reference.fit(torch_records, torch.tensor(log_weights), torch.tensor(log_reward))
    assert np.allclose(np.asarray(fitted.weight), reference.weight.detach().numpy(), rtol=0, atol=1e-10)
    assert np.allclose(np.asarray(fitted.bias), reference.bias.detach().numpy(), rtol=0, atol=1e-10)
    assert not np.allclose(np.asarray(fitted.weight), weight)  # the fit moved every step


def test_resampling_ess_agrees_between_backends():
    from numpyro_twist.infer.tri_tsmc import resampling_ess as jax_resampling_ess
    from pyro_twist.infer.tri_tsmc import resampling_ess as torch_resampling_ess
    from types import SimpleNamespace

    rng = np.random.default_rng(3)
    step_log_w = np.cumsum(0.2 * rng.standard_normal((21, 128)), 0)  # a path's weight accumulates over steps
    step_log_w[5:, 7] = -np.inf
    final = step_log_w[-1] + 0.5 * rng.standard_normal(128)
    value = jax_resampling_ess(SimpleNamespace(log_weights=jnp.asarray(final), num_particles=128,
                                               transitions=SimpleNamespace(log_weights=jnp.asarray(step_log_w))))
    reference = torch_resampling_ess(SimpleNamespace(log_weights=torch.tensor(final),
                                                     step_log_weights=list(torch.tensor(step_log_w))))
    assert 1 < value < 128 and abs(value - reference) < 1e-9 * reference
