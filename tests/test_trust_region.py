"""The trust-region dual against the Gaussian closed form."""
import math

import pytest
import torch

from pyro_twist.smc.trust_region import chi_square_to_target, dual_objective, escort_kl, trust_region_step


def gaussian_log_ratio(m, n=400_000, seed=0):
    # Samples from N(0, 1); log R = log N(x; m, 1) - log N(x; 0, 1).
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return m * x - 0.5 * m**2


@pytest.mark.parametrize("m", [-3.0, -1.5, 2.0, 4.0])
@pytest.mark.parametrize("eps", [0.05, 0.2, 0.5])
def test_tau_matches_the_gaussian_closed_form(m, eps):
    # Q_tau = N(tau m, 1), so KL(Q_tau || Q_0) = tau^2 m^2 / 2 = eps gives tau = sqrt(2 eps) / |m|.
    step = trust_region_step(gaussian_log_ratio(m), eps)
    expected = math.sqrt(2 * eps) / abs(m)
    assert expected < 1
    assert abs(step.tau - expected) < 0.02 * expected, (step.tau, expected)
    assert abs(step.kl - eps) < 1e-6  # active constraint: realised KL at the budget
    assert step.kl <= eps


def test_full_step_when_the_budget_allows_it():
    log_R = gaussian_log_ratio(0.5)  # KL(pi || Q) = 0.125
    step = trust_region_step(log_R, 0.2)
    assert step.tau == 1.0
    assert step.kl == pytest.approx(0.125, rel=0.05)


def test_tau_minimises_the_dual():
    log_R = gaussian_log_ratio(-2.5, n=100_000, seed=1)
    step = trust_region_step(log_R, 0.3)
    lam = 1 / step.tau - 1
    g = dual_objective(log_R, lam, 0.3)
    for other in (0.8 * lam, 0.95 * lam, 1.05 * lam, 1.2 * lam):
        assert g <= dual_objective(log_R, other, 0.3) + 1e-9


def test_chi_square_degeneracy_decreases_along_the_escort_path():
    m = 1.5
    log_R = gaussian_log_ratio(m)
    taus = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    chi2 = torch.stack([chi_square_to_target(log_R, t) for t in taus])
    assert torch.all(chi2[1:] < chi2[:-1])
    # Closed form: chi^2(N(m, 1) || N(tau m, 1)) = exp((1 - tau)^2 m^2) - 1.
    assert torch.allclose(chi2, torch.expm1((1 - taus) ** 2 * m**2), rtol=0.1)
    kl = torch.stack([escort_kl(log_R, t) for t in taus])
    assert torch.all(kl[1:] > kl[:-1])


def test_zero_weights_and_bad_input():
    log_R = torch.tensor([0.0, -math.inf, 1.0, 2.0], dtype=torch.float64)
    step = trust_region_step(log_R, 0.1)
    assert step.log_weights[1] == -math.inf and step.kl <= 0.1
    with pytest.raises(ValueError, match="all -inf or contain NaN"):
        trust_region_step(torch.full((3,), -math.inf), 0.1)
    with pytest.raises(ValueError, match="kl_budget must be positive"):
        trust_region_step(log_R, 0.0)
