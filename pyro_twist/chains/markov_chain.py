"""Markov chains as Pyro models: ``markov_chain`` and ``diffusion_chain``.

A chain of ``num_steps`` transitions has sample sites ``{name}_{k}`` for
``k = num_steps, ..., 0``, where ``k`` counts the steps still to go. Without an
inference handler the chain is plain ancestral sampling. Each site carries
``infer={"chain": name, "step": k, "num_steps": num_steps}`` so that inference
knows where it is; the whole chain is also one effect (type ``"markov_chain"``)
that look-ahead inference replaces by a given final state without running it,
and whose ``infer["kernel"]`` gives inference the kernel's ``predict_x0``.
"""
import pyro
from pyro.poutine.runtime import effectful
from torch.distributions import Distribution


def chain_site_name(name, k):
    return f"{name}_{k}"


def _run_chain(name, init, transition, num_steps):
    def info(k):
        return {"chain": name, "step": k, "num_steps": num_steps}

    x = pyro.sample(chain_site_name(name, num_steps), _checked(init, f"the first state of chain {name!r}"),
                    infer=info(num_steps))
    for k in pyro.markov(range(num_steps, 0, -1)):
        law = _checked(transition(k, x), f"transition({k}, x) of chain {name!r}")
        x = pyro.sample(chain_site_name(name, k - 1), law, infer=info(k - 1))
    return x


def _checked(law, what):
    if not isinstance(law, Distribution):
        raise TypeError(
            f"{what} is a {type(law).__name__}, not a distribution: return the law of the state, "
            "e.g. dist.Normal(mean, scale).to_event(1)"
        )
    return law


_chain_effect = effectful(_run_chain, type="markov_chain")


def _check_num_steps(num_steps):
    if int(num_steps) != num_steps or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative integer, got {num_steps!r}")
    return int(num_steps)


def markov_chain(name, init, transition, num_steps):
    """Sample a Markov chain and return its last state.

    :param str name: site prefix; sites are ``{name}_{num_steps}`` ... ``{name}_0``.
    :param init: distribution of the first state ``x_{num_steps}``.
    :param transition: ``transition(k, x)`` gives the distribution of ``x_{k-1}``
        given ``x_k = x``, for ``k = num_steps, ..., 1``.
    :param int num_steps: number of transitions.
    """
    return _chain_effect(name, init, transition, _check_num_steps(num_steps), name=name)


def diffusion_chain(name, kernel, shape=None):
    """A denoising chain from ``kernel``, for states of ``shape``; returns the final state.

    A kernel has ``num_steps``, ``prior(shape)`` (the law of the first state),
    ``transition(k, x)`` (the law of ``x_{k-1}`` given ``x_k = x``) and, for
    look-ahead methods, ``predict_x0(k, x)`` (the denoiser's estimate of ``x_0``).
    """
    num_steps = _check_num_steps(kernel.num_steps)
    return _chain_effect(
        name, kernel.prior(shape), kernel.transition, num_steps, name=name, infer={"kernel": kernel}
    )
