"""ArviZ conversion: SMC results and PMMH runs as ``xarray.DataTree`` (arviz-base), with the groups, dimensions and
names of ``pyro_twist.arviz`` (both are built by :mod:`twist_core.arviz`), so that ArviZ's summaries,
diagnostics and plots work on them. Needs ``pip install arviz-base`` (``arviz-stats`` for
``summary``, ``ess``, ``rhat``)."""
import sys

import jax
import numpy as np

from twist_core.arviz import mcmc_data_tree, smc_data_tree


def from_smc(results, sites=None, num_draws=None, rng_key=None):
    """One :class:`~numpyro_twist.infer.result.SMCResult`, or several independent runs of one model
    (ArviZ's chains), as a DataTree.

    The groups (``posterior``, ``log_likelihood``, ``sample_stats``, ``observed_data``) and their
    dimensions are those of :func:`twist_core.arviz.smc_data_tree`, the same in both backends; ``sites``:
    the posterior's sites (default: the chain's last state and the latent sites after it).

    :param int num_draws: draws per run (default: the fewest particles of the runs).
    :param rng_key: the key of the draws, one folded in per run (default: each run's own, as in
        :meth:`~numpyro_twist.infer.result.SMCResult.get_samples`).
    """
    def draw(run, result, num):
        return result.draw_indices(num, None if rng_key is None else jax.random.fold_in(rng_key, run))

    return smc_data_tree(results, sys.modules[__package__], draw, np.asarray, sites=sites, num_draws=num_draws)


def from_mcmc(mcmc):
    """A ``numpyro.infer.MCMC`` run (a :class:`~numpyro_twist.infer.pmmh.PMMH` kernel's, or any other) as a
    DataTree: ``posterior`` by chain and draw and, for a PMMH run with ``extra_fields=("log_evidence",)``,
    ``sample_stats`` with each draw's ``log_marginal_likelihood`` (the SMC estimate its state was
    accepted with)."""
    samples = {site: np.asarray(value) for site, value in mcmc.get_samples(group_by_chain=True).items()}
    log_evidence = mcmc.get_extra_fields(group_by_chain=True).get("log_evidence")
    return mcmc_data_tree(samples, sys.modules[__package__], log_evidence)
