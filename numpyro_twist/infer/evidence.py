"""The evidence ``log Z`` with an error bar from independent passes, and models compared by it."""
import math
from collections import namedtuple

import jax
import numpy as np

from ..smc.weights import log_mean_exp
from .result import run_log_evidence_se

Evidence = namedtuple("Evidence", ["log_evidence", "log_evidence_se", "runs", "run_se"])
Evidence.__doc__ = """\
``log_evidence``: ``log`` of the mean of the passes' ``Z_hat`` (each unbiased, so the mean is too);
``log_evidence_se``: its standard error from the spread of the passes' ``Z_hat`` (delta method);
``runs``: each pass's ``log Z_hat``; ``run_se``: each pass's own standard error (from the ESS of its
resampling epochs), for comparison: where it is far below the spread between passes, single
passes understate their error. As ``pyro_twist.infer.evidence``.
"""


def estimate_evidence(sampler, rng_key, *args, num_runs=8, **kwargs):
    """``num_runs`` independent passes of ``sampler`` on ``model(*args, **kwargs)``, run as one ``vmap``
    of its ``pure_run`` over keys split from ``rng_key``; returns an :class:`Evidence`."""
    if int(num_runs) != num_runs or num_runs < 2:
        raise ValueError(f"num_runs must be an integer of at least 2 (the error bar needs a spread), got {num_runs!r}")
    keys = jax.random.split(rng_key, int(num_runs))
    return evidence_from_passes(jax.jit(jax.vmap(lambda key: sampler.pure_run(key, *args, **kwargs)))(keys))


def evidence_from_passes(outputs):
    """An :class:`Evidence` from independent passes stacked along a leading axis: the
    :data:`~numpyro_twist.infer.twisted_smc.SMCOutput` of ``pure_run`` mapped over keys by ``jax.vmap``
    or ``jax.lax.map``, whose other outputs (the particles) then serve the same passes."""
    runs = np.asarray(outputs.log_evidence, dtype=np.float64)
    if runs.ndim != 1 or len(runs) < 2:
        raise ValueError(f"evidence_from_passes needs the outputs of at least 2 passes stacked along the first axis "
                         f"(map pure_run over a batch of keys), got log_evidence of shape {runs.shape}")
    relative = np.exp(runs - runs.max())  # Z_hat / max Z_hat
    log_evidence = float(log_mean_exp(runs))
    se = float(relative.std(ddof=1) / (math.sqrt(len(runs)) * relative.mean()))
    run_se = [run_log_evidence_se(ess, resampled, log_weights)
              for ess, resampled, log_weights in zip(outputs.ess, outputs.resampled, outputs.log_weights)]
    return Evidence(log_evidence, se, runs.tolist(), run_se)


def log_bayes_factor(evidence, other):
    """``log Z / Z_other`` and its standard error, from two independent :class:`Evidence` estimates."""
    return evidence.log_evidence - other.log_evidence, math.hypot(evidence.log_evidence_se, other.log_evidence_se)
