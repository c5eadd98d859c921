"""Recycling: independent runs on the same target pooled into one weighted sample.

TRI-TSMC's learning runs are draws of the target too, each with its own path weights: pooling
them with the final run puts the denoiser evaluations spent on learning back into the answer. Run
``j`` enters with weight ``lambda_j = ESS_j / sum_i ESS_i`` on its self-normalised weights, the
importance-tempering rule of Gramacy, Samworth and King (2010): near the variance-minimising
combination when the runs' weights are of similar quality, and a poor early run is all but
ignored. As ``pyro_twist.infer.recycling``.
"""
import math

import jax.numpy as jnp
import numpy as np
from jax.nn import log_softmax
from jax.scipy.special import logsumexp

from ..smc.weights import WEIGHTS_OK, ess
from .result import SMCResult
from .twisted_smc import SMCOutput


def recycle(results):
    """Pool SMC results on the same model and arguments into one :class:`SMCResult`.

    Its weights are ``lambda_j W_ij`` over all runs' final particles, its ``log_evidence`` is
    ``log sum_j lambda_j Z_hat_j``, its trajectories are each run's own (genealogies resolved; every
    run needs ``keep_paths``), and its ``ess`` holds the pool's single ESS, ``sum_j ESS_j``.
    """
    results = list(results)
    if not results:
        raise ValueError("recycle needs at least one result")
    sites = results[0].chain_sites
    for result in results[1:]:
        if result.chain_sites != sites:
            raise ValueError(
                f"recycle pools runs of one model: chain sites {sites[:2]}... and {result.chain_sites[:2]}... differ"
            )
    paths = [result.trajectories() for result in results]
    if any(site not in path for path in paths for site in sites):
        raise ValueError("recycle pools whole paths: run every sampler with keep_paths=True")
    run_ess = jnp.stack([ess(result.log_weights) for result in results])
    run_log_evidence = jnp.stack([result.log_evidence for result in results])
    log_lambda = log_softmax(jnp.log(run_ess))
    log_weights = jnp.concatenate([log_softmax(result.log_weights) + log_lambda[j] for j, result in enumerate(results)])
    log_evidence = logsumexp(log_lambda + run_log_evidence)
    # delta method, the lambdas held fixed: each run adds its relative variance times its share squared
    share = np.exp(np.asarray(log_lambda + run_log_evidence - log_evidence))
    run_se = np.array([result.log_evidence_se for result in results])
    num_sites = len(sites)
    total = log_weights.shape[0]
    output = SMCOutput(
        log_evidence=log_evidence,
        log_weights=log_weights,
        log_reward=jnp.concatenate([result.log_reward for result in results]),
        ess=ess(log_weights).reshape(1),
        resampled=jnp.zeros(num_sites, bool),
        ancestors=jnp.broadcast_to(jnp.arange(total), (num_sites, total)),
        states=jnp.stack([jnp.concatenate([path[site] for path in paths]) for site in sites]),
        after_chain={site: jnp.concatenate([path[site] for path in paths]) for site in paths[0] if site not in sites},
        weight_status=jnp.full(num_sites, WEIGHTS_OK),
        final_weight_status=WEIGHTS_OK,
        transitions=None,
        reward_log_probs={site: jnp.concatenate([result.reward_log_probs[site] for result in results])
                          for site in results[0].reward_log_probs},
        observed=results[0].observed,
    )
    return SMCResult(output, results[0].chain_name, num_sites - 1, results[-1]._rng_key,
                     log_evidence_se=math.sqrt(float(((share * run_se) ** 2).sum())))
