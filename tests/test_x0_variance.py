"""Look-ahead twists at an uncertain x_0 (``x0_variance``): exact evidence on a linear-Gaussian chain
observed with noise, lower spread than the look-ahead at the estimate alone, and clear errors."""
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_twist import TDS, FKSteering, diffusion_chain
from pyro_twist.chains.linear_gaussian import random_linear_gaussian
from pyro_twist.infer.evidence import estimate_evidence

from .conftest import SEED

SIGMA = 0.1  # a sharp likelihood: the look-ahead at the estimate alone is far too confident at high noise


@pytest.fixture(scope="module")
def observed_chain():
    kernel = random_linear_gaussian(3, 20, seed=0)
    mean, cov = kernel.marginal()
    generator = torch.Generator().manual_seed(1)
    x_true = mean + torch.linalg.cholesky(cov) @ torch.randn(3, generator=generator, dtype=torch.float64)
    y = x_true + SIGMA * torch.randn(3, generator=generator, dtype=torch.float64)

    def model(y):
        x0 = diffusion_chain("x", kernel, (3,))
        pyro.sample("y", dist.Normal(x0, SIGMA).to_event(1), obs=y)

    exact = kernel.log_marginal_likelihood(torch.eye(3, dtype=torch.float64), y, SIGMA).item()
    return kernel, model, y, exact


@pytest.mark.parametrize("sampler", [TDS, FKSteering])
def test_evidence_is_exact_and_spreads_less_than_at_the_estimate(observed_chain, sampler):
    kernel, model, y, exact = observed_chain
    pyro.set_rng_seed(SEED)
    widened = estimate_evidence(sampler(model, 32, progress_bar=False, x0_variance=kernel.x0_variance), y,
                                num_runs=40)
    plain = estimate_evidence(sampler(model, 32, progress_bar=False), y, num_runs=40)
    spread = {name: torch.tensor(e.runs).std().item() for name, e in (("widened", widened), ("plain", plain))}
    print(f"{sampler.__name__}: exact log Z {exact:.3f}, widened {widened.log_evidence:.3f} +- "
          f"{widened.log_evidence_se:.3f}; sd of log Z_hat {spread}")
    assert abs(widened.log_evidence - exact) < 4 * widened.log_evidence_se + 0.01
    assert spread["widened"] < 0.7 * spread["plain"]


def test_x0_variance_needs_gaussian_sites_that_observe_x0(observed_chain):
    kernel, _, y, _ = observed_chain

    def with_factor(y):
        x0 = diffusion_chain("x", kernel, (3,))
        pyro.factor("reward", -(x0 - y).square().sum(-1))

    def projected(y):
        x0 = diffusion_chain("x", kernel, (3,))
        pyro.sample("y", dist.Normal(x0[..., :2], SIGMA).to_event(1), obs=y[:2])

    with pytest.raises(ValueError, match="'reward' after the chain is a Unit.*widens Gaussian observations"):
        TDS(with_factor, 8, progress_bar=False, x0_variance=kernel.x0_variance).run(y)
    with pytest.raises(ValueError, match="'y' observes data of shape \\(2,\\), not the chain's state shape"):
        FKSteering(projected, 8, progress_bar=False, x0_variance=kernel.x0_variance).run(y)
