"""Look-ahead rewards: the model's own reward sites evaluated on a guess of the chain's final state."""
import copy
from functools import partial

import pyro
import torch
from pyro.poutine.messenger import Messenger, _bound_partial, _context_wrap

from .structure import observed_log_prob


class _ReplaceChain(Messenger):
    """Returns ``x0`` in place of running the chain, and sums the observed sites after it."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0
        self.after_chain = False
        self.log_reward = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)

    def _pyro_markov_chain(self, msg):  # the effect of pyro_twist.markov_chain
        msg["value"] = self.x0
        msg["done"] = True
        self.after_chain = True

    def _pyro_post_sample(self, msg):
        if self.after_chain and msg["is_observed"]:
            self.log_reward = self.log_reward + observed_log_prob(msg, self.x0.shape[0])


class LookaheadReward:
    """``log_reward(x0)``: the sum of the model's factor and observed sites after the chain at ``x0``.

    The model runs with its chain replaced by ``x0`` (leading particle dimension),
    hidden from every outer handler, so it may be called while inference runs.
    """

    def __init__(self, model, args, kwargs):
        self.model, self.args, self.kwargs = _with_own_handlers(model), args, kwargs

    def __call__(self, x0):
        handler = _ReplaceChain(x0)
        with pyro.poutine.block(), handler:
            self.model(*self.args, **self.kwargs)
        return handler.log_reward


def _with_own_handlers(model):
    """``model`` with copies of the Pyro handlers wrapped around it (``pyro.condition(model, data)``...):
    the look-ahead runs the model while the outer run has the originals installed, and Pyro refuses
    to install one handler instance twice."""
    wrapped = getattr(model, "func", None)
    if isinstance(wrapped, partial) and wrapped.func is _context_wrap:
        handler, fn = wrapped.args
        return _bound_partial(partial(_context_wrap, copy.copy(handler), _with_own_handlers(fn)))
    return model


def lookahead_parts(structure, model, args, kwargs, who):
    """The kernel's ``predict_x0``, the model's :class:`LookaheadReward`, and the kernel's ``batch_size``
    (``None``: no limit), the most rows to differentiate through the denoiser at once; for ``who``
    (named in errors)."""
    kernel = structure.kernel
    if kernel is None or not callable(getattr(kernel, "predict_x0", None)):
        where = (
            f"the kernel {type(kernel).__name__} has no predict_x0(k, x)"
            if kernel is not None
            else "the chain is not built from a kernel"
        )
        raise ValueError(
            f"{who} needs look-ahead rewards, but {where}. Build the chain with "
            "diffusion_chain(name, kernel, shape) over a kernel with predict_x0 (the denoiser's "
            "estimate of x_0), or use a twist without look-ahead."
        )
    return kernel.predict_x0, LookaheadReward(model, args, kwargs), getattr(kernel, "batch_size", None)
