"""Finding the chain in a model: which sites are chain steps, and at which step ``k``."""
from collections import namedtuple

import pyro
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

ChainStructure = namedtuple("ChainStructure", ["name", "num_steps", "kernel", "steps", "device", "state_nbytes"])
ChainStructure.__doc__ = """\
The chain of a model.

``name``: the chain's name (form (a)) or ``None`` for a hand-written loop (form (b)).
``num_steps``: number of transitions K. ``kernel``: the kernel of ``diffusion_chain``,
or ``None``. ``steps``: for form (b), a dict from site name to step ``k``; ``None``
for form (a), whose sites carry their step in ``infer``. ``device``: where the chain's
states live, and with them every tensor inference makes. ``state_nbytes``: the bytes of one
particle's state.
"""


def is_latent(msg):
    return msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg)


def per_particle_site_error(site, chain):
    return ValueError(
        f"sample site {site!r} is random per particle but stands before the chain {chain!r}, "
        "outside its state: resampling could not keep it consistent with the particles. "
        "Make it part of the chain's state, pass it as an argument to the model, or fix it "
        "with pyro.condition."
    )


def invalid_factor_error(error):
    """For a ``ValueError`` raised by Pyro's validation of a ``pyro.factor`` value, an error that names the
    site and counts the particles whose value is NaN; ``None`` for any other error. The site's name is
    read from the ``pyro.factor`` call in the traceback: the check fails before the site reaches a handler."""
    tb = error.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "factor" and frame.f_globals.get("__name__") == "pyro.primitives":
            name, log_factor = frame.f_locals.get("name"), frame.f_locals.get("log_factor")
            bad = int(torch.isnan(log_factor).sum()) if isinstance(log_factor, torch.Tensor) else 0
            if bad:  # else the error came from a handler of the site, with its own message
                total = log_factor.numel()
                return ValueError(
                    f"pyro.factor site {name!r} is NaN for {bad} of {total} particles. A reward must be a number "
                    "for every particle, or -inf for a state it rules out: check where the particles' states "
                    "leave its domain (the log of a non-positive number, 0/0)"
                )
        tb = tb.tb_next
    return None


def _state_layout(fn):
    """The device of a distribution's values and the bytes of one value, from its mean, or from a draw
    where it has none."""
    try:
        value = fn.mean
    except NotImplementedError:
        value = fn.sample()
    return value.device, torch.Size(fn.event_shape).numel() * value.element_size()


class _ChainFound(Exception):
    pass


class _FindChain(Messenger):
    def __init__(self):
        super().__init__()
        self.latent_sites = []
        self.chain = None
        self.first_state = None

    def _pyro_markov_chain(self, msg):  # the effect of pyro_twist.markov_chain
        self.chain = msg
        raise _ChainFound

    def _pyro_sample(self, msg):
        if is_latent(msg):
            self.latent_sites.append(msg["name"])
            if self.first_state is None:
                self.first_state = msg["fn"]


def find_chain(model, args, kwargs):
    """Run ``model`` for one particle until its chain is known.

    A model built on ``markov_chain``/``diffusion_chain`` stops at the chain; a
    hand-written chain (form (b)) runs once to list its latent sites in order.
    """
    finder = _FindChain()
    try:
        # The chain's device is not known before this run; the plate's indices are never read.
        with torch.no_grad(), pyro.poutine.block(), finder, pyro.plate("particles", 1, dim=-1, device="cpu"):
            model(*args, **kwargs)
    except _ChainFound:
        name, init, _, num_steps = finder.chain["args"]
        if finder.latent_sites:
            raise per_particle_site_error(finder.latent_sites[0], name) from None
        kernel = finder.chain["infer"].get("kernel")
        return ChainStructure(name, num_steps, kernel, None, *_state_layout(init))
    sites = finder.latent_sites
    if not sites:
        raise ValueError(
            "the model has no chain: it samples no latent site. Write the chain with "
            "pyro_twist.markov_chain / diffusion_chain, or as pyro.sample sites in a loop "
            "whose value is the whole state."
        )
    num_steps = len(sites) - 1
    steps = {site: num_steps - i for i, site in enumerate(sites)}
    return ChainStructure(None, num_steps, None, steps, *_state_layout(finder.first_state))


def observed_log_prob(msg, num_particles):
    """The log-density an observed or factor site adds to each particle's weight, shape ``(N,)``."""
    log_prob = msg["fn"].log_prob(msg["value"])
    if msg["mask"] is not None:
        mask = torch.as_tensor(msg["mask"], device=log_prob.device)
        log_prob = torch.where(mask, log_prob, torch.zeros_like(log_prob))
    log_prob = msg["scale"] * log_prob
    if log_prob.dim() > 1 or (log_prob.dim() == 1 and log_prob.shape[0] not in (1, num_particles)):
        raise ValueError(
            f"site {msg['name']!r} has log-density of shape {tuple(log_prob.shape)}, but one value "
            f"per particle ({num_particles},) is needed: declare the data dimensions as event "
            "dimensions with .to_event(...)"
        )
    return log_prob.expand(num_particles)
