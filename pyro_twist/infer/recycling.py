"""Recycling: independent runs on the same target pooled into one weighted sample.

TRI-TSMC's learning runs are draws of the target too, each with its own path
weights: pooling them with the final run puts the denoiser evaluations spent on
learning back into the answer. Run ``j`` enters with weight ``lambda_j = ESS_j / sum_i
ESS_i`` on its self-normalised weights, the importance-tempering rule of Gramacy,
Samworth and King (2010): near the variance-minimising combination when the runs'
weights are of similar quality, and a poor early run is all but ignored.
"""
import torch

from ..smc.weights import ess
from .result import SMCResult


def recycle(results):
    """Pool SMC results on the same model and arguments into one :class:`SMCResult`.

    Its weights are ``lambda_j W_ij`` over all runs' final particles, its
    ``log_evidence`` is ``log sum_j lambda_j Z_hat_j``, its trajectories are each
    run's own (genealogies resolved), and its ``ess`` holds the pool's single ESS.
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
    log_lambda = torch.log_softmax(torch.log(torch.stack([ess(r.log_weights) for r in results])), 0)
    log_weights = torch.cat([torch.log_softmax(r.log_weights, 0) + log_lambda[j] for j, r in enumerate(results)])
    log_evidence = torch.logsumexp(log_lambda + torch.stack([r.log_evidence for r in results]), 0)
    # delta method, the lambdas held fixed: each run adds its relative variance times its share squared
    share = torch.exp(log_lambda + torch.stack([r.log_evidence for r in results]) - log_evidence)
    se = torch.tensor([r.log_evidence_se for r in results], dtype=share.dtype, device=share.device)
    log_evidence_se = ((share * se) ** 2).sum().sqrt().item()
    paths = [r.trajectories() for r in results]
    after_chain = [site for site in paths[0] if site not in sites]
    return SMCResult(
        log_evidence=log_evidence,
        log_weights=log_weights,
        ess=ess(log_weights).reshape(1),
        resampled=torch.zeros(len(sites), dtype=torch.bool, device=log_weights.device),
        chain_sites=list(sites),
        chain_values=[torch.cat([p[site] for p in paths]) for site in sites],
        ancestors=[None] * len(sites),
        after_chain={site: torch.cat([p[site] for p in paths]) for site in after_chain},
        log_reward=torch.cat([r.log_reward for r in results]),
        reward_log_probs={site: torch.cat([r.reward_log_probs[site] for r in results])
                          for site in results[0].reward_log_probs},
        observed=results[0].observed,
        log_evidence_se=log_evidence_se,
    )
