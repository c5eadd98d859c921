"""The result of a twisted SMC run."""
import torch

from ..smc.resampling import multinomial
from ..smc.weights import ess, normalized_weights


class SMCResult:
    """Particles, weights, evidence and diagnostics of one run.

    ``log_evidence``: log Z_hat. ``log_weights``: final log-weights ``(N,)``.
    ``ess``: effective sample size after weighting at each chain step
    (``k = num_steps, ..., 0``); ``ess_final``: after the reward.
    ``resampled``: whether each step resampled; ``ancestors``: the ancestor
    indices of each step (``None`` where it did not resample): the genealogy.
    ``log_reward``: each final particle's reward (the factor and observed sites
    after the chain). ``transitions``: per-step records, when asked for, and with them
    ``step_log_weights``: each step's log-weights ``(N,)`` after its twist (before resampling).
    """

    def __init__(self, log_evidence, log_weights, ess, resampled, chain_sites, chain_values, ancestors, after_chain,
                 log_reward, transitions=None, step_log_weights=None):
        self.log_evidence = log_evidence
        self.log_weights = log_weights
        self.ess = ess
        self.resampled = resampled
        self.chain_sites = chain_sites
        self.ancestors = ancestors
        self.log_reward = log_reward
        self.transitions = transitions
        self.step_log_weights = step_log_weights
        self._chain_values = chain_values
        self._after_chain = after_chain

    @property
    def num_particles(self):
        return self.log_weights.shape[0]

    @property
    def ess_final(self):
        return ess(self.log_weights)

    def get_normalized_weights(self):
        return normalized_weights(self.log_weights)

    def trajectories(self):
        """Every latent site's value for each final particle, following the genealogy back in time
        (the last chain site and the sites after the chain only, for a run with ``keep_paths=False``)."""
        paths = dict(self._after_chain)
        index = torch.arange(self.num_particles, device=self.log_weights.device)
        for site, value, ancestors in zip(reversed(self.chain_sites), reversed(self._chain_values),
                                          reversed(self.ancestors)):
            paths[site] = value[index]
            if ancestors is not None:
                index = ancestors[index]
        return {site: paths[site] for site in self.chain_sites + list(self._after_chain) if site in paths}

    def get_samples(self, num_samples=None):
        """Equally weighted samples: ``num_samples`` (default N) draws of the final particles by weight."""
        index = multinomial(self.log_weights, num_samples or self.num_particles)
        return {site: value[index] for site, value in self.trajectories().items()}
