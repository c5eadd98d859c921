"""How much to trust a run, from numbers both backends compute: the standard error of ``log Z_hat``
implied by its ESS, and what a Pareto k-hat says about its weights."""
import math

# Above this Pareto k-hat a few weights carry the estimate (Vehtari et al.'s threshold).
KHAT_UNRELIABLE = 0.7


def log_evidence_se(ess, num_particles):
    """The standard error of ``log Z_hat`` implied by an ESS (delta method): ``sqrt((N / ESS - 1) / N)``.

    ``ess`` may be a sequence: the ESS of each resampling epoch's weights (just before each
    resampling, and the final weights), whose relative variances add up. That leaves out the variance
    resampling carries from one epoch to the next, so it is a lower estimate; the final weights'
    Pareto k-hat says when the weights are too heavy-tailed for it to mean anything.
    """
    epochs = ess if isinstance(ess, (list, tuple)) else [ess]
    return math.sqrt(sum(max(num_particles / float(e) - 1.0, 0.0) for e in epochs) / num_particles)


def khat_verdict(khat):
    """What a Pareto k-hat says about the weights, in words."""
    if math.isnan(khat):
        return "not computed (fewer than 25 particles)"
    if khat == -math.inf:
        return "good (the largest weight is within twice the threshold's: no tail)"
    if khat < 0.5:
        return "good (below 0.5)"
    if khat <= KHAT_UNRELIABLE:
        return "fair (0.5-0.7: the estimates converge, slowly; more particles help)"
    return ("unreliable (above 0.7: a few weights carry the estimates, and neither log_evidence nor its standard "
            "error can be trusted; use a better twist or far more particles)")
