"""The Pareto k-hat diagnostic of importance weights (Vehtari, Simpson, Gelman, Yao and Gabry,
"Pareto smoothed importance sampling"): the shape of a generalized Pareto law fitted to the
largest weights. Below 0.5 the weights' variance is finite and estimates converge at the usual
rate; between 0.5 and 0.7 they converge, slowly; above 0.7 a few weights carry the estimate
and neither it nor its standard error can be trusted at any practical number of particles.
"""
import math

import torch

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
    """The Pareto shape ``k-hat`` of the largest weights ``exp(log_w)`` (one dimension).

    ``-inf`` where the largest weight is within ``_FLAT_TAIL`` nats of the threshold (no tail); NaN with
    fewer than 25 weights (a tail of fewer than 5 is too short to fit).
    """
    log_w = log_w.detach().reshape(-1).to("cpu", torch.float64)
    num_tail = tail_size(log_w.shape[0])
    if num_tail < 5:
        return math.nan
    top = torch.topk(log_w, num_tail + 1).values.flip(0)  # ascending: threshold, then the tail
    if not torch.isfinite(top[-1]):
        return math.nan
    if (top[-1] - top[0]).item() < _FLAT_TAIL:
        return -math.inf
    ratios = torch.exp(top - top[-1])
    exceedances = ratios[1:] - ratios[0]
    shape = generalized_pareto_shape(exceedances)
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
    positive = y[y > 0]
    quartile = y[int(m / 4 + 0.5) - 1]
    if quartile <= 0:  # ties at the threshold: the smallest positive excess sets the scale instead
        quartile = positive[0]
    j = torch.arange(1, grid_size + 1, dtype=y.dtype)
    theta = 1 / y[-1] + (1 - torch.sqrt(grid_size / (j - 0.5))) / (3 * quartile)
    xi = torch.log1p(-theta[:, None] * y).mean(-1)
    profile = m * (torch.log(-theta / xi) - xi - 1)
    theta_hat = (torch.softmax(profile, 0) * theta).sum()
    return torch.log1p(-theta_hat * y).mean().item()
