"""Log-weight arithmetic: normalisation, effective sample size, log-mean-exp."""
import math

import torch


def log_mean_exp(log_w):
    """``log(mean(exp(log_w)))`` over the last dimension, stable in log space."""
    return torch.logsumexp(log_w, -1) - math.log(log_w.shape[-1])


def normalized_weights(log_w):
    """Normalised weights ``W_i = w_i / sum_j w_j`` from log-weights."""
    return torch.softmax(log_w, -1)


def ess(log_w):
    """Effective sample size ``1 / sum_i W_i^2`` of the normalised weights."""
    return torch.exp(-torch.logsumexp(2 * torch.log_softmax(log_w, -1), -1))


def log_evidence_se(ess, num_particles):
    """The standard error of ``log Z_hat`` implied by an ESS (delta method): ``sqrt((N / ESS - 1) / N)``.

    ``ess`` may be a sequence: the ESS of each resampling epoch's weights (just before each
    resampling, and the final weights), whose relative variances add up. That ignores the variance
    resampling passes on from one epoch to the next, so it is a lower estimate; the final
    weights' Pareto k-hat says when the weights are too heavy-tailed for it to mean anything.
    """
    epochs = ess if isinstance(ess, (list, tuple)) else [ess]
    return math.sqrt(sum(max(num_particles / e - 1.0, 0.0) for e in epochs) / num_particles)


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
