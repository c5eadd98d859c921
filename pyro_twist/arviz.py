"""ArviZ conversion: SMC results and PMMH runs as ``xarray.DataTree`` (arviz-base), so that
ArviZ's summaries, diagnostics and plots work on them. Needs ``pip install arviz-base``
(``arviz-stats`` for ``summary``, ``ess``, ``rhat``). The groups are built by :mod:`twist_core.arviz`,
shared with ``numpyro_twist.arviz``."""
import sys

import numpy as np
import torch

from twist_core.arviz import mcmc_data_tree, smc_data_tree

from .smc.resampling import multinomial


def _library():
    return sys.modules[__package__]  # this package, named with its version in each group's attributes


def _numpy(value):
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def from_smc(results, sites=None, num_draws=None):
    """One SMC result, or several independent runs of one model (ArviZ's chains), as a DataTree.

    The groups (``posterior``, ``log_likelihood``, ``sample_stats``, ``observed_data``) and their
    dimensions are those of :func:`twist_core.arviz.smc_data_tree`, the same in both backends; ``sites``:
    the posterior's sites (default: the chain's last state and the latent sites after it).

    :param int num_draws: draws per run (default: the fewest particles of the runs).
    """
    return smc_data_tree(results, _library(), lambda run, result, n: multinomial(result.log_weights, n), _numpy,
                         sites=sites, num_draws=num_draws)


def from_mcmc(mcmc):
    """A ``pyro.infer.MCMC`` run (a :class:`~pyro_twist.infer.pmmh.PMMH` kernel's, or any other) as a
    DataTree: ``posterior`` by chain and draw and, for PMMH, ``sample_stats`` with each draw's
    ``log_marginal_likelihood`` (the SMC estimate its state was accepted with)."""
    samples = {site: _numpy(value) for site, value in mcmc.get_samples(group_by_chain=True).items()}
    return mcmc_data_tree(samples, _library(), getattr(mcmc.kernel, "log_evidence", None))
