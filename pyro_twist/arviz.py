"""ArviZ conversion: SMC results and PMMH runs as ``xarray.DataTree`` (arviz-base), so that
ArviZ's summaries, diagnostics and plots work on them. Needs ``pip install arviz-base``
(``arviz-stats`` for ``summary``, ``ess``, ``rhat``)."""
import sys

import numpy as np
import torch

from .smc.resampling import multinomial


def _arviz_base():
    try:
        import arviz_base
    except ImportError as error:
        raise ImportError("pyro_twist.arviz converts to ArviZ's DataTree: pip install arviz-base") from error
    return arviz_base


def _library():
    return sys.modules[__package__]  # this package, named with its version in each group's attributes


def _numpy(value):
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def from_smc(results, sites=None, num_draws=None):
    """One SMC result, or several independent runs of one model (ArviZ's chains), as a DataTree.

    ``posterior``: each run's particles resampled by weight (``draw``), for ``sites`` (default: the
    chain's last state and the latent sites after it); ``log_likelihood``: each draw's log-density
    at every factor and observed site after the chain (the reward, site by site);
    ``sample_stats``: per run, ``log_marginal_likelihood`` and its standard error, the final
    weights' ``pareto_khat``, and per chain step its ``ess`` and whether it ``resampled``;
    ``observed_data``: the observed sites' data.

    :param int num_draws: draws per run (default: the fewest particles of the runs).
    """
    azb = _arviz_base()
    results = [results] if not isinstance(results, (list, tuple)) else list(results)
    num_draws = num_draws or min(result.num_particles for result in results)
    posterior, log_likelihood = {}, {}
    for result in results:
        index = multinomial(result.log_weights, num_draws)
        paths = result.trajectories()
        chosen = sites or [site for site in paths if site not in result.chain_sites[:-1]]
        for site in chosen:
            if site not in paths:
                raise ValueError(f"site {site!r} is not in the result: it has {list(paths)}")
            posterior.setdefault(site, []).append(_numpy(paths[site][index]))
        for site, log_prob in result.reward_log_probs.items():
            log_likelihood.setdefault(site, []).append(_numpy(log_prob[index]))
    stats = {
        "log_marginal_likelihood": [result.log_evidence.item() for result in results],
        "log_marginal_likelihood_se": [result.log_evidence_se for result in results],
        "pareto_khat": [result.pareto_khat for result in results],
        "ess": [_numpy(result.ess) for result in results],
        "resampled": [_numpy(result.resampled) for result in results],
    }
    groups = {
        "posterior": azb.dict_to_dataset({site: np.stack(v) for site, v in posterior.items()},
                                         sample_dims=["chain", "draw"], inference_library=_library()),
        "sample_stats": azb.dict_to_dataset({name: np.stack(v) for name, v in stats.items()}, sample_dims=["chain"],
                                            dims={"ess": ["step"], "resampled": ["step"]},
                                            inference_library=_library()),
    }
    if log_likelihood:
        groups["log_likelihood"] = azb.dict_to_dataset({site: np.stack(v) for site, v in log_likelihood.items()},
                                                       sample_dims=["chain", "draw"], inference_library=_library())
    if results[0].observed:
        groups["observed_data"] = azb.dict_to_dataset(
            {site: _numpy(value) for site, value in results[0].observed.items()}, sample_dims=[],
            inference_library=_library())
    return _data_tree(groups)


def from_mcmc(mcmc):
    """A ``pyro.infer.MCMC`` run (a :class:`~pyro_twist.infer.pmmh.PMMH` kernel's, or any other) as a
    DataTree: ``posterior`` by chain and draw and, for PMMH, ``sample_stats`` with each draw's
    ``log_marginal_likelihood`` (the SMC estimate its state was accepted with)."""
    azb = _arviz_base()
    samples = {site: _numpy(value) for site, value in mcmc.get_samples(group_by_chain=True).items()}
    groups = {"posterior": azb.dict_to_dataset(samples, sample_dims=["chain", "draw"],
                                               inference_library=_library())}
    log_evidence = getattr(mcmc.kernel, "log_evidence", None)
    num_chains, num_draws = next(iter(samples.values())).shape[:2]
    if log_evidence is not None and len(log_evidence) == num_chains * num_draws:
        groups["sample_stats"] = azb.dict_to_dataset(
            {"log_marginal_likelihood": np.asarray(log_evidence).reshape(num_chains, num_draws)},
            sample_dims=["chain", "draw"], inference_library=_library())
    return _data_tree(groups)


def _data_tree(groups):
    import xarray

    return xarray.DataTree.from_dict(groups)
