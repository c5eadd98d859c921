"""Markov chains as NumPyro models: ``markov_chain`` and ``diffusion_chain``.

A chain of ``num_steps`` transitions has sample sites ``{name}_{k}`` for
``k = num_steps, ..., 0``, where ``k`` counts the steps still to go. Without an
inference handler the chain is plain ancestral sampling (so ``Predictive``,
``handlers.trace`` and ``handlers.condition`` work as usual). The whole chain is also
one message of type ``"markov_chain"`` on NumPyro's effect stack, whose ``args`` are
the chain's law ``(name, init, transition, num_steps)`` and whose ``infer["kernel"]`` is
the kernel of ``diffusion_chain``: inference takes the law from it and runs the chain
as one ``lax.scan`` over all particles, which NumPyro's own ``scan`` would not let it
interrupt between steps. The message has no name, so traces record only the sites.
"""
from numpyro.distributions import Distribution
from numpyro.primitives import apply_stack, sample

CHAIN_MESSAGE = "markov_chain"


def chain_site_name(name, k):
    return f"{name}_{k}"


def checked_law(law, what):
    if not isinstance(law, Distribution):
        raise TypeError(
            f"{what} is a {type(law).__name__}, not a distribution: return the law of the state, "
            "e.g. dist.Normal(mean, scale).to_event(1)"
        )
    return law


def _ancestral(name, init, transition, num_steps):
    x = sample(chain_site_name(name, num_steps), checked_law(init, f"the first state of chain {name!r}"))
    for k in range(num_steps, 0, -1):
        law = checked_law(transition(k, x), f"transition({k}, x) of chain {name!r}")
        x = sample(chain_site_name(name, k - 1), law)
    return x


def _check_num_steps(num_steps):
    if int(num_steps) != num_steps or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative integer, got {num_steps!r}")
    return int(num_steps)


def _chain(name, init, transition, num_steps, kernel):
    msg = {
        "type": CHAIN_MESSAGE,
        "fn": _ancestral,
        "args": (name, init, transition, num_steps),
        "kwargs": {},
        "value": None,
        "infer": {"kernel": kernel},
        "stop": False,
    }
    return apply_stack(msg)["value"]


def markov_chain(name, init, transition, num_steps):
    """Sample a Markov chain and return its last state.

    :param str name: site prefix; sites are ``{name}_{num_steps}`` ... ``{name}_0``.
    :param init: distribution of the first state ``x_{num_steps}``.
    :param transition: ``transition(k, x)`` gives the distribution of ``x_{k-1}`` given
        ``x_k = x``, for ``k = num_steps, ..., 1``. Under inference ``k`` is a traced integer
        for every step but the first and the last, so index arrays with it rather than
        branching on it in Python.
    :param int num_steps: number of transitions.
    """
    return _chain(name, init, transition, _check_num_steps(num_steps), None)


def diffusion_chain(name, kernel, shape=None):
    """A denoising chain from ``kernel``, for states of ``shape``; returns the final state.

    A kernel has ``num_steps``, ``prior(shape)`` (the law of the first state),
    ``transition(k, x)`` (the law of ``x_{k-1}`` given ``x_k = x``) and, for
    look-ahead methods, ``predict_x0(k, x)`` (the denoiser's estimate of ``x_0``).
    """
    return _chain(name, kernel.prior(shape), kernel.transition, _check_num_steps(kernel.num_steps), kernel)
