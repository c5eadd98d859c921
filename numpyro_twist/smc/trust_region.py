"""The trust-region step of TRI-TSMC: tempering path weights inside a KL budget.

Given samples from the current path law ``Q_j`` with log path weights
``log R_i = log pi/Q_j`` (up to a constant), the solution of

    min_Q KL(Q || pi)  subject to  KL(Q || Q_j) <= eps

is the escort law ``Q_tau ∝ Q_j^(1 - tau) pi^tau``, i.e. the samples reweighted by
``R_i^tau``. ``tau = 1 / (1 + lambda*)`` where ``lambda*`` minimises the convex dual

    g(lambda) = lambda eps + (1 + lambda) log mean_i R_i^(1 / (1 + lambda)),

whose derivative is ``eps - KL(Q_tau || Q_j)``. On samples, ``KL(Q_tau || Q_j)`` is the KL
divergence of the tempered normalised weights from uniform, ``log N - entropy(W_tau)``: it
grows with ``tau``, so the root is found by bisection (a ``lax.fori_loop``, so the step
runs under ``jit``), and the end returned is the one that keeps the constraint. Paths of
zero weight (``log R = -inf``) are outside every ``Q_tau``; the budget is spent among the
others. As ``pyro_twist.smc.trust_region``.
"""
from collections import namedtuple
from functools import partial

import jax
import jax.numpy as jnp
from jax.nn import log_softmax

from .weights import log_mean_exp

TrustRegionStep = namedtuple("TrustRegionStep", ["tau", "kl", "log_weights"])
TrustRegionStep.__doc__ = """\
``tau`` in (0, 1]; ``kl``: realised ``KL(Q_tau || Q_j)``; ``log_weights``: ``tau * log R``."""


def escort_kl(log_R, tau):
    """``KL(Q_tau || Q_j)`` estimated on the samples: KL of ``softmax(tau log R)`` from uniform over the
    paths of positive weight (those with finite ``log R``)."""
    finite = jnp.isfinite(log_R)
    log_W = log_softmax(jnp.where(finite, tau * log_R, -jnp.inf), -1)
    log_count = jnp.log(finite.sum(-1))
    terms = jnp.where(finite, jnp.exp(log_W) * (log_W + log_count[..., None]), 0.0)
    return jnp.maximum(terms.sum(-1), 0.0)


def dual_objective(log_R, lam, eps):
    """The trust-region dual ``g(lambda)``."""
    return lam * eps + (1.0 + lam) * log_mean_exp(log_R / (1.0 + lam))


def chi_square_to_target(log_R, tau):
    """Chi-square divergence ``chi^2(pi || Q_tau)`` estimated on samples from ``Q_j``.

    ``1 + chi^2 = E_j[R^(2 - tau)] E_j[R^tau] / E_j[R]^2``: the weight degeneracy
    that remains after moving to ``Q_tau``. It decreases along the escort path.
    """
    return jnp.expm1(log_mean_exp((2.0 - tau) * log_R) + log_mean_exp(tau * log_R) - 2.0 * log_mean_exp(log_R))


@partial(jax.jit, static_argnums=2)
def _solve(log_R, kl_budget, num_bisections):
    finite = jnp.isfinite(log_R)
    # shifted by the largest weight, so that tempering never overflows
    log_R_pos = jnp.where(finite, log_R - jnp.max(jnp.where(finite, log_R, -jnp.inf)), -jnp.inf)

    def bisect(_, bracket):  # KL(low) <= budget < KL(high)
        low, high = bracket
        mid = 0.5 * (low + high)
        inside = escort_kl(log_R_pos, mid) <= kl_budget
        return jnp.where(inside, mid, low), jnp.where(inside, high, mid)

    zero, one = jnp.zeros((), log_R.dtype), jnp.ones((), log_R.dtype)
    low, _ = jax.lax.fori_loop(0, num_bisections, bisect, (zero, one))
    tau = jnp.where(escort_kl(log_R_pos, one) <= kl_budget, one, low)
    log_weights = jnp.where(finite, tau * log_R, -jnp.inf)
    return TrustRegionStep(tau, escort_kl(log_R_pos, tau), log_weights)


def trust_region_step(log_R, kl_budget, num_bisections=60):
    """Solve the trust-region dual on log path weights ``log_R`` of shape ``(N,)``.

    Returns ``tau = 1`` when the full step fits the budget, otherwise the largest ``tau`` found by
    bisection whose realised KL is at most ``kl_budget``. Runs under ``jit``; outside it, weights that
    are NaN or all ``-inf`` are refused.
    """
    if isinstance(kl_budget, (int, float)) and not kl_budget > 0:
        raise ValueError(f"kl_budget must be positive, got {kl_budget!r}")
    log_R = jnp.asarray(log_R)
    if not isinstance(log_R, jax.core.Tracer) and (bool(jnp.isnan(log_R).any())
                                                   or not bool(jnp.isfinite(log_R).any())):
        raise ValueError("trust-region step: path log-weights are all -inf or contain NaN")
    return _solve(log_R, kl_budget, num_bisections)
