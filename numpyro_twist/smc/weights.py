"""Log-weight arithmetic: normalisation, effective sample size, log-mean-exp, the evidence's standard error."""
import math

import jax.numpy as jnp
from twist_core.diagnostics import log_evidence_se  # noqa: F401  (this backend's name for it)
from jax.nn import log_softmax, softmax
from jax.scipy.special import logsumexp


def log_mean_exp(log_w):
    """``log(mean(exp(log_w)))`` over the last axis, stable in log space."""
    return logsumexp(log_w, -1) - math.log(log_w.shape[-1])


def normalized_weights(log_w):
    """Normalised weights ``W_i = w_i / sum_j w_j`` from log-weights."""
    return softmax(log_w, -1)


def ess(log_w):
    """Effective sample size ``1 / sum_i W_i^2`` of the normalised weights (NaN when every weight is zero)."""
    return jnp.exp(-logsumexp(2 * log_softmax(log_w, -1), -1))


# Codes of weight_status, one per step: what went wrong with the log-weights, computed inside jit
# and turned into an error on the host after the run.
WEIGHTS_OK, WEIGHTS_NAN, WEIGHTS_ALL_ZERO, WEIGHTS_POS_INF = 0, 1, 2, 3


def weight_status(log_w):
    """One of the ``WEIGHTS_*`` codes for ``log_w``: traceable, so a jitted run can report it."""
    return jnp.where(
        jnp.isnan(log_w).any(), WEIGHTS_NAN,
        jnp.where(jnp.isneginf(log_w).all(), WEIGHTS_ALL_ZERO,
                  jnp.where((log_w == jnp.inf).any(), WEIGHTS_POS_INF, WEIGHTS_OK)),
    )


def weight_error(status, where):
    """The ``ValueError`` for a ``weight_status`` code at ``where`` (a step or a site, in words)."""
    if status == WEIGHTS_NAN:
        return ValueError(
            f"NaN log-weights {where}. Check that the model's distributions, factors and the "
            "twist's log_psi are finite for every particle."
        )
    if status == WEIGHTS_ALL_ZERO:
        return ValueError(
            f"all particles have zero weight (log-weight -inf) {where}. The reward or "
            "likelihood rules out every particle: widen it, use more particles, or pass a "
            "twist that proposes states it accepts."
        )
    return ValueError(f"a log-weight is +inf {where}: a factor or log_psi returned +inf.")
