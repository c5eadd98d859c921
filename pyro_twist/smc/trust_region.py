"""The trust-region step of TRI-TSMC: tempering path weights inside a KL budget.

Given samples from the current path law ``Q_j`` with log path weights
``log R_i = log pi/Q_j`` (up to a constant), the solution of

    min_Q KL(Q || pi)  subject to  KL(Q || Q_j) <= eps

is the escort law ``Q_tau ∝ Q_j^(1 - tau) pi^tau``, i.e. the samples reweighted by
``R_i^tau``. ``tau = 1 / (1 + lambda*)`` where ``lambda*`` minimises the convex dual

    g(lambda) = lambda eps + (1 + lambda) log mean_i R_i^(1 / (1 + lambda)),

whose derivative is ``eps - KL(Q_tau || Q_j)``. On samples, ``KL(Q_tau || Q_j)`` is
the KL divergence of the tempered normalised weights from uniform,
``log N - entropy(W_tau)``: it grows with ``tau``, so the root is found by
bisection, and the end returned is the one that keeps the constraint. Paths of
zero weight (``log R = -inf``) are outside every ``Q_tau``; the budget is spent
among the others.
"""
from collections import namedtuple
import math

import torch

from .weights import log_mean_exp

TrustRegionStep = namedtuple("TrustRegionStep", ["tau", "kl", "log_weights"])
TrustRegionStep.__doc__ = """\
``tau`` in (0, 1]; ``kl``: realised ``KL(Q_tau || Q_j)``; ``log_weights``: ``tau * log R``."""


def escort_kl(log_R, tau):
    """``KL(Q_tau || Q_j)`` estimated on the samples: KL of ``softmax(tau log R)`` from uniform."""
    log_W = torch.log_softmax(tau * log_R, -1)
    return (torch.exp(log_W) * (log_W + math.log(log_R.shape[-1]))).sum(-1).clamp(min=0.0)


def dual_objective(log_R, lam, eps):
    """The trust-region dual ``g(lambda)``."""
    return lam * eps + (1.0 + lam) * log_mean_exp(log_R / (1.0 + lam))


def chi_square_to_target(log_R, tau):
    """Chi-square divergence ``chi^2(pi || Q_tau)`` estimated on samples from ``Q_j``.

    ``1 + chi^2 = E_j[R^(2 - tau)] E_j[R^tau] / E_j[R]^2``: the weight degeneracy
    that remains after moving to ``Q_tau``. It decreases along the escort path.
    """
    return torch.expm1(log_mean_exp((2.0 - tau) * log_R) + log_mean_exp(tau * log_R) - 2.0 * log_mean_exp(log_R))


def trust_region_step(log_R, kl_budget, num_bisections=60):
    """Solve the trust-region dual on log path weights ``log_R`` of shape ``(N,)``.

    Returns ``tau = 1`` when the full step fits the budget, otherwise the largest
    ``tau`` found by bisection whose realised KL is at most ``kl_budget``.
    """
    if not kl_budget > 0:
        raise ValueError(f"kl_budget must be positive, got {kl_budget!r}")
    log_R = torch.as_tensor(log_R, dtype=torch.float64)
    finite = torch.isfinite(log_R)
    if torch.isnan(log_R).any() or not finite.any():
        raise ValueError("trust-region step: path log-weights are all -inf or contain NaN")
    # Paths of zero weight keep zero weight for every tau > 0; dropping them is no
    # choice the budget could buy back, so the budget applies among the others.
    log_R_pos = log_R[finite] - log_R[finite].max()
    if escort_kl(log_R_pos, 1.0) <= kl_budget:
        tau = 1.0
    else:
        low, high = 0.0, 1.0  # KL(low) <= budget < KL(high)
        for _ in range(num_bisections):
            mid = 0.5 * (low + high)
            if escort_kl(log_R_pos, mid) <= kl_budget:
                low = mid
            else:
                high = mid
        tau = low
    log_weights = torch.where(finite, tau * log_R, torch.full_like(log_R, -math.inf))
    return TrustRegionStep(tau, escort_kl(log_R_pos, tau).item(), log_weights)
