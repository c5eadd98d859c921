"""Log-weight arithmetic: normalisation, effective sample size, log-mean-exp."""
import math

import torch
from twist_core.diagnostics import log_evidence_se  # noqa: F401  (this backend's name for it)


def log_mean_exp(log_w):
    """``log(mean(exp(log_w)))`` over the last dimension, stable in log space."""
    return torch.logsumexp(log_w, -1) - math.log(log_w.shape[-1])


def normalized_weights(log_w):
    """Normalised weights ``W_i = w_i / sum_j w_j`` from log-weights."""
    return torch.softmax(log_w, -1)


def ess(log_w):
    """Effective sample size ``1 / sum_i W_i^2`` of the normalised weights."""
    return torch.exp(-torch.logsumexp(2 * torch.log_softmax(log_w, -1), -1))


def check_log_weights(log_w, where):
    """Raise when no particle keeps a finite weight; ``where`` names the step and site."""
    if torch.isnan(log_w).any():
        raise ValueError(
            f"NaN log-weights {where}. Check that the model's distributions, factors and the "
            "twist's log_psi are finite for every particle."
        )
    if torch.isneginf(log_w).all():
        raise ValueError(
            f"all particles have zero weight (log-weight -inf) {where}. The reward or "
            "likelihood rules out every particle: widen it, use more particles, or pass a "
            "twist that proposes states it accepts."
        )
    if (log_w == math.inf).any():
        raise ValueError(f"a log-weight is +inf {where}: a factor or log_psi returned +inf.")


def checked_ess(log_w, where):
    """The ESS of ``log_w`` as a Python float: one number read from the device.

    It is NaN exactly when :func:`check_log_weights` has something to say (a NaN or +inf
    log-weight, or all of them -inf), which is then raised.
    """
    value = ess(log_w).item()
    if math.isnan(value):
        check_log_weights(log_w, where)
        raise ValueError(f"the effective sample size is NaN {where}")
    return value
