"""The evidence ``log Z`` with an error bar from independent runs, and models compared by it."""
import math
from collections import namedtuple

import torch

from ..smc.weights import log_mean_exp

Evidence = namedtuple("Evidence", ["log_evidence", "log_evidence_se", "runs", "run_se"])
Evidence.__doc__ = """\
``log_evidence``: ``log`` of the mean of the runs' ``Z_hat`` (each unbiased, so the mean is too);
``log_evidence_se``: its standard error from the spread of the runs' ``Z_hat`` (delta method);
``runs``: each run's ``log Z_hat``; ``run_se``: each run's own standard error (from its weights,
see :attr:`SMCResult.log_evidence_se`), for comparison: where it is far below the spread
between runs, single runs understate their error.
"""


def estimate_evidence(sampler, *args, num_runs=8, **kwargs):
    """Run ``sampler.run(*args, **kwargs)`` ``num_runs`` times; returns an :class:`Evidence`."""
    if int(num_runs) != num_runs or num_runs < 2:
        raise ValueError(f"num_runs must be an integer of at least 2 (the error bar needs a spread), got {num_runs!r}")
    results = [sampler.run(*args, **kwargs) for _ in range(int(num_runs))]
    runs = torch.tensor([result.log_evidence.item() for result in results], dtype=torch.float64)
    relative = torch.exp(runs - runs.max())  # Z_hat / max Z_hat
    log_evidence = log_mean_exp(runs).item()
    se = (relative.std() / (math.sqrt(len(runs)) * relative.mean())).item()
    return Evidence(log_evidence, se, runs.tolist(), [result.log_evidence_se for result in results])


def log_bayes_factor(evidence, other):
    """``log Z / Z_other`` and its standard error, from two independent :class:`Evidence` estimates."""
    return evidence.log_evidence - other.log_evidence, math.hypot(evidence.log_evidence_se, other.log_evidence_se)
