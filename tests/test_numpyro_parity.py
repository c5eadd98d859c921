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


@pytest.mark.parametrize("package, forbidden", [("numpyro_twist", "torch"), ("pyro_twist", "jax")])
def test_each_backend_imports_only_its_own_framework(package, forbidden):
    code = f"import sys, {package}; sys.exit({forbidden!r} in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("shape", [0.3, 0.9])
def test_diagnostics_agree_between_backends(shape):
    # the same weights give the same Pareto k-hat and standard error in both backends
    from numpyro_twist.smc.pareto import pareto_khat as jax_khat
    from numpyro_twist.smc.weights import log_evidence_se as jax_se
    from pyro_twist.smc.pareto import pareto_khat as torch_khat
    from pyro_twist.smc.weights import log_evidence_se as torch_se

    log_w = -shape * np.log(np.random.default_rng(0).uniform(size=1000))
    assert abs(jax_khat(log_w) - torch_khat(torch.tensor(log_w))) < 1e-10
    assert abs(jax_khat(log_w) - shape) < 0.3
    assert jax_khat(np.zeros(100)) == torch_khat(torch.zeros(100)) == -math.inf
    assert abs(jax_se([300.0, 700.0], 1000) - torch_se([300.0, 700.0], 1000)) < 1e-12
