"""The result of a twisted SMC run."""

import torch

from ..smc.pareto import pareto_khat
from ..smc.resampling import multinomial
from twist_core.diagnostics import khat_verdict, log_evidence_se

from ..smc.weights import ess, normalized_weights



class SMCResult:
    """Particles, weights, evidence and diagnostics of one run.

    ``log_evidence``: log Z_hat. ``log_weights``: final log-weights ``(N,)``.
    ``ess``: effective sample size after weighting at each chain step
    (``k = num_steps, ..., 0``); ``ess_final``: after the reward.
    ``resampled``: whether each step resampled; ``ancestors``: the ancestor
    indices of each step (``None`` where it did not resample): the genealogy.
    ``log_reward``: each final particle's reward (the factor and observed sites
    after the chain), and ``reward_log_probs`` the same site by site; ``observed``: the
    observed sites' data. ``transitions``: per-step records, when asked for, and with them
    ``step_log_weights``: each step's log-weights ``(N,)`` after its twist (before resampling).
    ``log_evidence_se``: the standard error of ``log_evidence`` (by default from the ESS of each
    resampling epoch, see :func:`~pyro_twist.smc.weights.log_evidence_se`); ``pareto_khat``: the
    tail shape of the final weights. ``summary()`` prints the health check.
    """

    def __init__(self, log_evidence, log_weights, ess, resampled, chain_sites, chain_values, ancestors, after_chain,
                 log_reward, transitions=None, step_log_weights=None, log_evidence_se=None, reward_log_probs=None,
                 observed=None):
        self.log_evidence = log_evidence
        self._log_evidence_se = log_evidence_se
        self.log_weights = log_weights
        self.ess = ess
        self.resampled = resampled
        self.chain_sites = chain_sites
        self.ancestors = ancestors
        self.log_reward = log_reward
        self.reward_log_probs = {} if reward_log_probs is None else reward_log_probs
        self.observed = {} if observed is None else observed
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

    def state_dict(self):
        """The result as tensors, numbers, lists and dicts, for a checkpoint (see :meth:`from_state_dict`)."""
        return dict(vars(self))

    @classmethod
    def from_state_dict(cls, state):
        result = cls.__new__(cls)
        vars(result).update(state)
        return result

    def get_samples(self, num_samples=None):
        """Equally weighted samples: ``num_samples`` (default N) draws of the final particles by weight."""
        index = multinomial(self.log_weights, num_samples or self.num_particles)
        return {site: value[index] for site, value in self.trajectories().items()}

    @property
    def num_resampling(self):
        """How many steps resampled."""
        return int(self.resampled.sum().item())

    @property
    def log_evidence_se(self):
        if self._log_evidence_se is None:
            epochs = self.ess[self.resampled.to(self.ess.device)].tolist() + [self.ess_final.item()]
            self._log_evidence_se = log_evidence_se(epochs, self.num_particles)
        return self._log_evidence_se

    @property
    def pareto_khat(self):
        """The Pareto k-hat of the final weights (see :func:`~pyro_twist.smc.pareto.pareto_khat`)."""
        return pareto_khat(self.log_weights)

    def diagnostics(self):
        """The health check as a dict: particles, ``log_evidence`` and its standard error, the final
        and the lowest per-step ESS, how many steps resampled, and the final weights' Pareto k-hat."""
        return {
            "num_particles": self.num_particles,
            "log_evidence": self.log_evidence.item(),
            "log_evidence_se": self.log_evidence_se,
            "ess_final": self.ess_final.item(),
            "ess_min": self.ess.min().item(),
            "num_resampling": self.num_resampling,
            "num_steps": len(self.resampled),
            "pareto_khat": self.pareto_khat,
        }

    def summary(self):
        """Print the health check (see :meth:`diagnostics`) with what the k-hat says."""
        d = self.diagnostics()
        n = d["num_particles"]
        print(
            f"SMC result, {n} particles\n"
            f"  log_evidence  {d['log_evidence']:.4f} +- {d['log_evidence_se']:.4f} (standard error)\n"
            f"  ESS           {d['ess_final']:.1f} of {n} at the end ({d['ess_final'] / n:.2f}), "
            f"lowest at a step {d['ess_min']:.1f}\n"
            f"  resampled     at {d['num_resampling']} of {d['num_steps']} steps\n"
            f"  Pareto k-hat  {d['pareto_khat']:.2f}: {khat_verdict(d['pareto_khat'])}"
        )


