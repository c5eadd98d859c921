"""Hard constraints (``pyro.factor(name, torch.where(ok, 0., -inf))``): zero weight for the particles they
rule out, and an unbiased evidence for every sampler, against a Gaussian probability in closed form."""
import math

import pyro
import pytest
import torch

from pyro_twist import TDS, TRITSMC, FKSteering, GaussianMixture, GaussianMixtureKernel, TwistedSMC, diffusion_chain
from pyro_twist.infer.twisted_smc import floor_zero_twist

from .conftest import DIM, SEED, random_linear_gaussian

# x_0[0] > mean + 0.5 sd on the linear-Gaussian chain: Z = P(standard normal > 0.5).
SHIFT_IN_SD = 0.5
Z = 0.5 * math.erfc(SHIFT_IN_SD / math.sqrt(2))


def half_space_model(kernel):
    mean, cov = kernel.marginal()
    threshold = (mean[0] + SHIFT_IN_SD * cov[0, 0].sqrt()).item()

    def model():
        x0 = diffusion_chain("x", kernel, (kernel.dim,))
        pyro.factor("constraint", torch.where(x0[..., 0] > threshold, 0.0, -math.inf).double())

    return model, threshold


SAMPLERS = {
    "bootstrap": lambda model: TwistedSMC(model, 64, progress_bar=False),
    **{
        f"FK-{potential}-{name}": (lambda model, p=potential, s=setting: FKSteering(model, 64, potential=p,
                                                                                 progress_bar=False, **s))
        for potential in ("diff", "max")
        for name, setting in {
            "always": {}, "ess-0.5": {"ess_threshold": 0.5}, "never": {"ess_threshold": 0.0},
            "every-5th-step": {"resampling_steps": range(0, 20, 5)},
        }.items()
    },
    "TDS": lambda model: TDS(model, 64, progress_bar=False),
    "TRITSMC": lambda model: TRITSMC(model, num_particles=256, num_iterations=2, progress_bar=False),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_hard_constraint_evidence_is_unbiased_and_samples_satisfy_it(lg_kernel, name):
    # Z_hat / Z averaged over 100 independent runs; the tolerance is 4 standard errors of that mean,
    # and the standard error itself must be small enough for the check to mean something.
    # Before zero twists were floored, FK steering returned Z_hat / Z of about 0.1 and TDS crashed.
    model, threshold = half_space_model(lg_kernel)
    ratios, violating_mass = [], 0.0
    for rep in range(100):
        pyro.set_rng_seed(1000 * SEED + rep)
        result = SAMPLERS[name](model).run()
        ratios.append(result.log_evidence.exp().item() / Z)
        x0 = result.trajectories()["x_0"]
        violating_mass += result.get_normalized_weights()[x0[:, 0] <= threshold].sum().item()
    ratios = torch.tensor(ratios)
    se = (ratios.std() / math.sqrt(len(ratios))).item()
    assert violating_mass == 0.0
    assert se < 0.05
    assert abs(ratios.mean().item() - 1.0) < 4 * se, (ratios.mean().item(), se)


@pytest.mark.parametrize("setting",
                         [{}, {"ess_threshold": 0.5}, {"ess_threshold": 0.0}, {"resampling_steps": (0, 2, 4)}],
                         ids=["always", "ess-0.5", "never", "every-2nd-step"])
def test_fk_sum_potential_with_a_hard_constraint_is_unbiased_on_accepted_samples(setting):
    # The running sum's final correction exp(-sum of look-ahead rewards) is exact but heavy-tailed in the
    # number of steps (its warning says so): on the 20-step chain the typical Z_hat / Z is about 0.4 even at
    # N = 4096, the mean carried by rare paths. On 5 steps the tail is light enough to check the mean.
    kernel = random_linear_gaussian(DIM, 5, seed=0)
    model, threshold = half_space_model(kernel)
    ratios, violating_mass = [], 0.0
    for rep in range(200):
        pyro.set_rng_seed(1000 * SEED + rep)
        with pytest.warns(UserWarning, match="degenerate"):
            sampler = FKSteering(model, 64, potential="sum", progress_bar=False, **setting)
        result = sampler.run()
        ratios.append(result.log_evidence.exp().item() / Z)
        x0 = result.trajectories()["x_0"]
        violating_mass += result.get_normalized_weights()[x0[:, 0] <= threshold].sum().item()
    ratios = torch.tensor(ratios)
    se = (ratios.std() / math.sqrt(len(ratios))).item()
    assert violating_mass == 0.0
    assert se < 0.05
    assert abs(ratios.mean().item() - 1.0) < 4 * se, (ratios.mean().item(), se)


def test_neural_twist_learns_with_a_hard_constraint():
    # The 8-mode ring, a linear reward and x_0[0] > 0: TRITSMC's default neural twist once failed
    # with "state_dict of None" (its fit's loss was NaN on the ruled-out paths).
    mixture = GaussianMixture.ring()
    kernel = GaussianMixtureKernel(mixture, num_steps=50)
    direction = torch.tensor([1.0, 0.4], dtype=torch.float64)

    def model():
        x0 = diffusion_chain("x", kernel, (2,))
        pyro.factor("reward", x0 @ direction)
        pyro.factor("constraint", torch.where(x0[..., 0] > 0, 0.0, -math.inf).double())

    # Z = sum_c w_c E_c[exp(a.x) 1{x[0] > 0}], per component a Gaussian integral.
    means, variances = mixture.means, mixture.variances
    tilted_first = (means[:, 0] + variances[:, 0] * direction[0]) / variances[:, 0].sqrt()
    log_z = torch.logsumexp(mixture.weights.log() + means @ direction + (variances * direction**2).sum(-1) / 2
                            + torch.special.log_ndtr(tilted_first), 0).item()
    tri = TRITSMC(model, num_particles=256, num_iterations=4, progress_bar=False)
    result = tri.run()
    x0, weights = result.trajectories()["x_0"], result.get_normalized_weights()
    assert weights[x0[:, 0] <= 0].sum().item() == 0.0
    # The 50-step chain's x_0 is the ring up to its discretisation: log Z of the chain lies within 0.1 of the ring's.
    assert abs(result.log_evidence.item() - log_z) < 0.1
    assert min(h.ess for h in tri.history[-2:]) > 1.5 * tri.history[0].ess  # it learns despite the -inf


def test_zero_twist_is_floored_below_the_lowest_positive_value():
    log_psi = torch.tensor([0.0, -2.0, -math.inf, 1.0], dtype=torch.float64)
    assert floor_zero_twist(log_psi, 1.0).tolist() == [0.0, -2.0, -3.0, 1.0]
    assert floor_zero_twist(torch.full((3,), -math.inf), 1.5).tolist() == [-1.5] * 3
    assert torch.isnan(floor_zero_twist(torch.tensor([math.nan, -math.inf]), 1.0)[0])


def test_twist_floor_must_be_positive(lg_kernel):
    model, _ = half_space_model(lg_kernel)
    with pytest.raises(ValueError, match="twist_floor must be positive and finite, got 0"):
        TwistedSMC(model, 8, twist_floor=0)
