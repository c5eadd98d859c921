"""The result of a twisted SMC run."""

import jax
import numpy as np

from twist_core.diagnostics import khat_verdict, log_evidence_se
from twist_core.pareto import pareto_khat

from ..smc.weights import ess, normalized_weights


class SMCResult:
    """Particles, weights, evidence and diagnostics of one run.

    ``log_evidence``: log Z_hat. ``log_weights``: final log-weights ``(N,)``. ``ess``: effective
    sample size after weighting at each chain step (``k = num_steps, ..., 0``); ``ess_final``: after
    the reward. ``resampled``: whether each step resampled; ``ancestors``: each step's ancestor
    indices (the identity where it did not resample), the genealogy. ``log_reward``: each final
    particle's reward (the factor and observed sites after the chain), and ``reward_log_probs`` the same
    site by site; ``observed``: the observed sites' data. ``transitions``: the steps'
    :data:`~numpyro_twist.infer.steps.TransitionRecord` stacked over ``k = K, ..., 0``, for a sampler
    with ``record_transitions`` (else ``None``). ``log_evidence_se``: the standard error of
    ``log_evidence`` where the sampler knows better than the ESS of the epochs (a pool of runs).
    """

    def __init__(self, output, chain_name, num_steps, rng_key, log_evidence_se=None):
        self.log_evidence = output.log_evidence
        self.log_weights = output.log_weights
        self.log_reward = output.log_reward
        self.ess = output.ess
        self.resampled = output.resampled
        self.ancestors = output.ancestors
        self.transitions = output.transitions
        self.reward_log_probs = output.reward_log_probs
        self.observed = output.observed
        self.chain_name = chain_name
        self.chain_sites = [f"{chain_name}_{k}" for k in range(num_steps, -1, -1)]
        self._log_evidence_se = log_evidence_se
        self._states = output.states
        self._after_chain = output.after_chain
        self._rng_key = rng_key

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
        (the last chain site and the sites after the chain only, for a run without ``keep_paths``)."""
        states = np.asarray(self._states)
        kept = self.chain_sites[len(self.chain_sites) - len(states):]
        paths = {}
        index = np.arange(self.num_particles)
        for site, value, parents in zip(reversed(kept), states[::-1], np.asarray(self.ancestors)[::-1]):
            paths[site] = value[index]
            index = parents[index]
        paths = {site: paths[site] for site in kept}
        paths.update({site: np.asarray(value) for site, value in self._after_chain.items()})
        return paths

    def draw_indices(self, num_samples=None, rng_key=None):
        """The indices of ``num_samples`` (default N) final particles drawn by weight, with ``rng_key``
        (default: one derived from the run's key, so the same result gives the same draws)."""
        key = jax.random.fold_in(self._rng_key, 1) if rng_key is None else rng_key
        return np.asarray(jax.random.categorical(key, self.log_weights, shape=(num_samples or self.num_particles,)))

    def get_samples(self, num_samples=None, rng_key=None):
        """Equally weighted samples: the particles at :meth:`draw_indices`."""
        index = self.draw_indices(num_samples, rng_key)
        return {site: value[index] for site, value in self.trajectories().items()}

    @property
    def num_resampling(self):
        """How many steps resampled."""
        return int(np.asarray(self.resampled).sum())

    @property
    def log_evidence_se(self):
        """The standard error of ``log_evidence`` from the ESS of each resampling epoch (a lower estimate,
        see :func:`~numpyro_twist.smc.weights.log_evidence_se`), or the one the result was given."""
        if self._log_evidence_se is not None:
            return self._log_evidence_se
        return run_log_evidence_se(self.ess, self.resampled, self.log_weights)

    @property
    def pareto_khat(self):
        """The Pareto k-hat of the final weights (see :func:`twist_core.pareto.pareto_khat`)."""
        return pareto_khat(self.log_weights)

    def diagnostics(self):
        """The health check as a dict: particles, ``log_evidence`` and its standard error, the final
        and the lowest per-step ESS, how many steps resampled, and the final weights' Pareto k-hat."""
        return {
            "num_particles": self.num_particles,
            "log_evidence": float(self.log_evidence),
            "log_evidence_se": self.log_evidence_se,
            "ess_final": float(self.ess_final),
            "ess_min": float(np.min(np.asarray(self.ess))),
            "num_resampling": self.num_resampling,
            "num_steps": len(self.chain_sites),
            "pareto_khat": self.pareto_khat,
        }

    def print_summary(self):
        """Print the health check (see :meth:`diagnostics`)."""
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


def run_log_evidence_se(step_ess, resampled, log_weights):
    """The standard error of one pass's ``log_evidence`` from the ESS of its resampling epochs: each
    step's ESS where it resampled, and the final weights' (see :func:`~numpyro_twist.smc.weights.log_evidence_se`)."""
    epochs = list(np.asarray(step_ess)[np.asarray(resampled)]) + [float(ess(log_weights))]
    return log_evidence_se(epochs, np.shape(log_weights)[0])


