"""Twisted SMC on linear-Gaussian chains, against closed forms."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_twist import TDS, BestOfN, FKSteering, ImportanceSampling, TwistedSMC, diffusion_chain
from pyro_twist.smc import RESAMPLERS

from .conftest import REWARD, lg_model_a, lg_model_b

REPEATS = 60


def z_ratio_mean_and_se(sampler, log_z, repeats=REPEATS):
    log_z_hat = torch.stack([sampler.run().log_evidence for _ in range(repeats)])
    ratio = torch.exp(log_z_hat - log_z)
    return ratio.mean().item(), (ratio.std() / math.sqrt(repeats)).item()


@pytest.mark.parametrize("scheme", sorted(RESAMPLERS))
@pytest.mark.parametrize("method", ["bootstrap", "fk_diff", "fk_max", "half_optimal_twist"])
def test_evidence_is_unbiased(lg_kernel, method, scheme):
    a = REWARD
    model = lg_model_a(lg_kernel, a)
    log_z = lg_kernel.log_normalizer(a)
    if method == "bootstrap":
        sampler = TwistedSMC(model, 32, resampling=scheme, ess_threshold=1.0, progress_bar=False)
    elif method.startswith("fk"):
        sampler = FKSteering(model, 32, potential=method[3:], resampling=scheme, progress_bar=False)
    else:  # an imperfect twist: weights vary and adaptive resampling triggers
        optimal = lg_kernel.optimal_twist(a)
        with torch.no_grad():
            optimal.weight.mul_(0.5)
        sampler = TwistedSMC(model, 32, twist=optimal, resampling=scheme, ess_threshold=0.9, progress_bar=False)
    mean, se = z_ratio_mean_and_se(sampler, log_z)
    assert abs(mean - 1) <= 3 * se, (mean, se)


@pytest.mark.parametrize("form", [lg_model_a, lg_model_b])
@pytest.mark.parametrize("num_particles", [1, 16])
def test_optimal_twist_is_a_zero_variance_sampler(lg_kernel, form, num_particles):
    a = REWARD
    twist = lg_kernel.optimal_twist(a)
    result = TwistedSMC(form(lg_kernel, a), num_particles, twist=twist, progress_bar=False).run()
    assert result.log_evidence.dtype == torch.float64
    assert abs(result.log_evidence.item() - lg_kernel.log_normalizer(a).item()) < 1e-6
    assert torch.allclose(result.ess, torch.full_like(result.ess, num_particles), atol=1e-6)
    assert not result.resampled.any()
    assert result.ess.shape == (lg_kernel.num_steps + 1,)


def test_optimal_twist_samples_the_tilted_law(lg_kernel):
    a = REWARD
    result = TwistedSMC(lg_model_b(lg_kernel, a), 4000, twist=lg_kernel.optimal_twist(a), progress_bar=False).run()
    x0 = result.get_samples()["x_0"]
    mean, cov = lg_kernel.tilted(a)
    se = (cov.diagonal() / x0.shape[0]).sqrt()
    assert torch.all((x0.mean(0) - mean).abs() < 4 * se)
    assert torch.allclose(torch.cov(x0.T), cov, atol=0.1 * cov.diagonal().max())


@pytest.mark.parametrize("method", [TwistedSMC, FKSteering, TDS])
def test_inverse_problem_with_an_observed_site(lg_kernel, method):
    """A likelihood after the chain: the steered posterior mean matches the Gaussian posterior."""
    H = torch.tensor([[1.0, 0.0], [0.5, -1.0], [0.0, 0.7]], dtype=torch.float64)
    noise = 0.5
    y = torch.tensor([1.2, -0.9], dtype=torch.float64)

    def model(y):
        x0 = diffusion_chain("x", lg_kernel, (lg_kernel.dim,))
        pyro.sample("y", dist.Normal(x0 @ H, noise).to_event(1), obs=y)

    post_mean, post_cov = lg_kernel.posterior(H, y, noise)
    estimates = []
    for _ in range(16):
        result = method(model, 512, progress_bar=False).run(y)
        w = result.get_normalized_weights()
        estimates.append(w @ result.trajectories()["x_0"])
    estimates = torch.stack(estimates)
    # Averaged over 16 runs of 512 particles, within 0.15 posterior standard deviations.
    error = (estimates.mean(0) - post_mean).abs() / post_cov.diagonal().sqrt()
    assert torch.all(error < 0.15), error


def test_genealogy_gives_consistent_paths(lg_kernel):
    """Each returned path is one trajectory: its states follow the chain's transitions."""
    a = 3 * REWARD
    result = FKSteering(lg_model_a(lg_kernel, a), 64, progress_bar=False).run()
    assert result.resampled.all()
    paths = result.trajectories()
    assert list(paths) == [f"x_{k}" for k in range(lg_kernel.num_steps, -1, -1)]
    # Standardised transition residuals of the stitched paths are N(0, 1).
    residuals = torch.cat([
        (paths[f"x_{k - 1}"] - lg_kernel.transition(k, paths[f"x_{k}"]).mean) / lg_kernel.s[k - 1]
        for k in range(1, lg_kernel.num_steps + 1)
    ])
    assert residuals.abs().max() < 6
    assert abs(residuals.std().item() - 1) < 0.1


def test_best_of_n_and_importance_sampling(lg_kernel):
    a = REWARD
    model = lg_model_a(lg_kernel, a)
    pyro.set_rng_seed(3)
    plain = ImportanceSampling(model, 64, progress_bar=False).run()
    assert not plain.resampled.any()
    # Without resampling or twist the final log-weights are the rewards of ancestral samples.
    assert torch.allclose(plain.log_weights, plain.trajectories()["x_0"] @ a)
    pyro.set_rng_seed(3)
    best = BestOfN(model, 64, progress_bar=False).run()
    samples = best.get_samples(5)["x_0"]
    top = plain.trajectories()["x_0"][plain.log_weights.argmax()]
    assert torch.equal(samples, top.expand(5, -1))
    assert best.log_evidence.item() == plain.log_evidence.item()


def quadratic_optimal_twist(kernel, Q, a):
    """Per-dimension backward recursion of ``log psi*_k(x) = -P_k x^2 / 2 + c_k x + d_k`` for the reward
    ``-Q x_0^2 / 2 + a x_0`` on a chain with diagonal ``A``: a Gaussian integral at each step."""
    A = kernel.A.diagonal(dim1=-2, dim2=-1)
    P, c, d = [Q], [a], [torch.zeros((), dtype=Q.dtype)]
    for k in range(1, kernel.num_steps + 1):
        v, b = kernel.s[k - 1] ** 2, kernel.b[k - 1]
        denom = 1 + v * P[-1]
        d.append(d[-1] + ((-0.5 * P[-1] * b**2 + c[-1] * b + 0.5 * v * c[-1] ** 2) / denom
                          - 0.5 * torch.log(denom)).sum())
        P.append(A[k - 1] ** 2 * P[-1] / denom)
        c.append(A[k - 1] * (c[-1] - P[-2] * b) / denom)
    log_z = d[-1] + (0.5 * c[-1] ** 2 / (1 + P[-1]) - 0.5 * torch.log(1 + P[-1])).sum()

    class QuadraticTwist:
        proposal = "newton"

        def log_psi(self, k, x):
            return (-0.5 * P[k] * x**2 + c[k] * x).sum(-1) + d[k]

    return QuadraticTwist(), log_z


@pytest.mark.parametrize("num_particles", [1, 8])
def test_newton_proposal_is_exact_for_a_log_quadratic_twist(lg_kernel, num_particles):
    Q = torch.tensor([0.5, 1.5, 0.8], dtype=torch.float64)

    def model():
        x0 = diffusion_chain("x", lg_kernel, (lg_kernel.dim,))
        pyro.factor("reward", -0.5 * (Q * x0**2).sum(-1) + x0 @ REWARD)

    twist, log_z = quadratic_optimal_twist(lg_kernel, Q, REWARD)
    result = TwistedSMC(model, num_particles, twist=twist, progress_bar=False).run()
    assert abs(result.log_evidence.item() - log_z.item()) < 1e-6
    assert torch.allclose(result.ess, torch.full_like(result.ess, num_particles), atol=1e-6)
    # The same twist with a first-order (gradient) proposal is not exact.
    twist.proposal = "gradient"
    first_order = torch.stack([TwistedSMC(model, num_particles, twist=twist, progress_bar=False).run().log_evidence
                               for _ in range(5)])
    assert first_order.std() > 1e-3
