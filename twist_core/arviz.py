"""SMC results and PMMH runs as ArviZ ``xarray.DataTree`` (arviz-base), for both backends.

Only numpy here: ``pyro_twist.arviz`` and ``numpyro_twist.arviz`` hand in how their results draw
particles and turn their arrays into numpy, so both convert with the same groups, dimensions and
names, and neither backend imports the other's framework."""
import numpy as np


def _arviz_base(backend):
    try:
        import arviz_base
    except ImportError as error:
        raise ImportError(f"{backend}.arviz converts to ArviZ's DataTree: pip install arviz-base") from error
    return arviz_base


def smc_data_tree(results, library, draw, to_numpy, sites=None, num_draws=None):
    """One SMC result, or several independent runs of one model (ArviZ's chains), as a DataTree.

    ``posterior``: each run's particles resampled by weight (``draw``), for ``sites`` (default: the
    chain's last state and the latent sites after it); ``log_likelihood``: each draw's log-density
    at every factor and observed site after the chain (the reward, site by site);
    ``sample_stats``: per run, ``log_marginal_likelihood`` and its standard error, the final
    weights' ``pareto_khat``, and per chain step its ``ess`` and whether it ``resampled``;
    ``observed_data``: the observed sites' data.

    :param library: the backend's package, named with its version in each group's attributes.
    :param draw: ``draw(run, result, num_draws)``: the indices of ``num_draws`` particles of the
        ``run``-th result, drawn by weight.
    :param to_numpy: turns the backend's arrays into numpy arrays.
    :param int num_draws: draws per run (default: the fewest particles of the runs).
    """
    azb = _arviz_base(library.__name__)
    results = [results] if not isinstance(results, (list, tuple)) else list(results)
    if not results:
        raise ValueError("from_smc needs at least one result")
    num_draws = num_draws or min(result.num_particles for result in results)
    posterior, log_likelihood = {}, {}
    for run, result in enumerate(results):
        index = to_numpy(draw(run, result, num_draws))
        paths = result.trajectories()
        chosen = sites or [site for site in paths if site not in result.chain_sites[:-1]]
        for site in chosen:
            if site not in paths:
                raise ValueError(f"site {site!r} is not in the result: it has {list(paths)}")
            posterior.setdefault(site, []).append(to_numpy(paths[site])[index])
        for site, log_prob in result.reward_log_probs.items():
            log_likelihood.setdefault(site, []).append(to_numpy(log_prob)[index])
    stats = {
        "log_marginal_likelihood": [float(to_numpy(result.log_evidence)) for result in results],
        "log_marginal_likelihood_se": [result.log_evidence_se for result in results],
        "pareto_khat": [result.pareto_khat for result in results],
        "ess": [to_numpy(result.ess) for result in results],
        "resampled": [to_numpy(result.resampled) for result in results],
    }
    groups = {
        "posterior": azb.dict_to_dataset({site: np.stack(v) for site, v in posterior.items()},
                                         sample_dims=["chain", "draw"], inference_library=library),
        "sample_stats": azb.dict_to_dataset({name: np.stack(v) for name, v in stats.items()}, sample_dims=["chain"],
                                            dims={"ess": ["step"], "resampled": ["step"]},
                                            inference_library=library),
    }
    if log_likelihood:
        groups["log_likelihood"] = azb.dict_to_dataset({site: np.stack(v) for site, v in log_likelihood.items()},
                                                       sample_dims=["chain", "draw"], inference_library=library)
    if results[0].observed:
        groups["observed_data"] = azb.dict_to_dataset(
            {site: to_numpy(value) for site, value in results[0].observed.items()}, sample_dims=[],
            inference_library=library)
    return _data_tree(groups)


def mcmc_data_tree(samples, library, log_evidence=None):
    """An MCMC run as a DataTree: ``posterior`` from ``samples`` (numpy arrays by chain and draw) and,
    where ``log_evidence`` holds one value per draw (a PMMH run's, chain by chain), ``sample_stats``
    with each draw's ``log_marginal_likelihood`` (the SMC estimate its state was accepted with)."""
    azb = _arviz_base(library.__name__)
    groups = {"posterior": azb.dict_to_dataset(samples, sample_dims=["chain", "draw"], inference_library=library)}
    num_chains, num_draws = next(iter(samples.values())).shape[:2]
    if log_evidence is not None and np.size(log_evidence) == num_chains * num_draws:
        groups["sample_stats"] = azb.dict_to_dataset(
            {"log_marginal_likelihood": np.asarray(log_evidence).reshape(num_chains, num_draws)},
            sample_dims=["chain", "draw"], inference_library=library)
    return _data_tree(groups)


def _data_tree(groups):
    import xarray

    return xarray.DataTree.from_dict(groups)
