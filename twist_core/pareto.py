"""The Pareto k-hat diagnostic of importance weights (Vehtari, Simpson, Gelman, Yao and Gabry,
"Pareto smoothed importance sampling"): the shape of a generalized Pareto law fitted to the
largest weights. Below 0.5 the weights' variance is finite and estimates converge at the usual
rate; between 0.5 and 0.7 they converge, slowly; above 0.7 a few weights carry the estimate
and neither it nor its standard error can be trusted at any practical number of particles.
Computed on the host in float64 (a few hundred numbers) for both backends.
"""
import math

import numpy as np

# A tail whose largest weight is within this many nats of the threshold (a factor 2) has no few weights
# that carry the estimate: all M + 1 are at least half the largest. A Pareto tail of shape k spans about
# M^k over its M weights, so such a tail means a shape under log 2 / log M (0.18 at N = 256, 0.36 at
# N = 32), far below the alarm's 0.7; a fit would read its shape from the differences of nearly equal
# weights (rounding, an exact twist, a bounded reward near its bound, particles resampled at the last
# steps) and can report anything: at N = 256, final weights of ESS 245 gave a fitted 5.4.
_FLAT_TAIL = math.log(2)
# The fitted shape is shrunk toward 0.5 as if by this many prior observations (the paper's choice).
_PRIOR_OBSERVATIONS = 10


def tail_size(num_particles):
    """How many of the largest weights form the tail: ``ceil(min(N / 5, 3 sqrt(N)))``."""
    return math.ceil(min(num_particles / 5, 3 * math.sqrt(num_particles)))


def pareto_khat(log_w):
    """The Pareto shape ``k-hat`` of the largest weights ``exp(log_w)`` (an array of any shape, flattened).

    ``-inf`` where the largest weight is within ``_FLAT_TAIL`` nats of the threshold (no tail); NaN with
    fewer than 25 weights (a tail of fewer than 5 is too short to fit).
    """
    log_w = np.asarray(log_w, dtype=np.float64).reshape(-1)
    num_tail = tail_size(log_w.shape[0])
    if num_tail < 5:
        return math.nan
    top = np.sort(np.partition(log_w, -(num_tail + 1))[-(num_tail + 1):])  # threshold, then the tail
    if not np.isfinite(top[-1]):
        return math.nan
    if top[-1] - top[0] < _FLAT_TAIL:
        return -math.inf
    ratios = np.exp(top - top[-1])
    shape = generalized_pareto_shape(ratios[1:] - ratios[0])
    return (num_tail * shape + _PRIOR_OBSERVATIONS * 0.5) / (num_tail + _PRIOR_OBSERVATIONS)


def generalized_pareto_shape(y):
    """The shape ``xi`` of a generalized Pareto law fitted to the ascending non-negative sample ``y``
    by Zhang and Stephens' (2009) quasi-Bayesian estimate.

    With ``theta = -xi / sigma``, the likelihood maximised over ``xi`` for fixed ``theta`` has
    ``xi(theta) = mean(log(1 - theta y))`` and profile ``M (log(-theta / xi) - xi - 1)``; ``theta`` is
    its average over a grid of quantiles of a prior built from the sample's largest value and first
    quartile, weighted by the profile likelihood.
    """
    m = len(y)
    grid_size = 30 + int(math.sqrt(m))
    quartile = y[int(m / 4 + 0.5) - 1]
    if quartile <= 0:  # ties at the threshold: the smallest positive excess sets the scale instead
        quartile = y[y > 0][0]
    j = np.arange(1, grid_size + 1, dtype=np.float64)
    # a tail whose smallest excess is tiny puts grid points beyond float64: the arithmetic's inf and NaN stand,
    # as in the torch fit this replaces, but numpy would also warn the user at every fit
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        theta = 1 / y[-1] + (1 - np.sqrt(grid_size / (j - 0.5))) / (3 * quartile)
        xi = np.log1p(-theta[:, None] * y).mean(-1)
        profile = m * (np.log(-theta / xi) - xi - 1)
        weights = np.exp(profile - profile.max())
        theta_hat = (weights / weights.sum() * theta).sum()
        return float(np.log1p(-theta_hat * y).mean())
