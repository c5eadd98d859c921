"""Look-ahead rewards: the model's own reward sites evaluated on a guess of the chain's final state."""
import copy
from functools import partial

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger, _bound_partial, _context_wrap

from .structure import observed_log_prob


class _ReplaceChain(Messenger):
    """Returns ``x0`` in place of running the chain, and sums the observed sites after it; with
    ``x0_variance``, each of them is first widened by it (see :func:`widened_gaussian`)."""

    def __init__(self, x0, x0_variance=None):
        super().__init__()
        self.x0, self.x0_variance = x0, x0_variance
        self.after_chain = False
        self.log_reward = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)

    def _pyro_markov_chain(self, msg):  # the effect of pyro_twist.markov_chain
        msg["value"] = self.x0
        msg["done"] = True
        self.after_chain = True

    def _pyro_sample(self, msg):
        if self.after_chain and msg["is_observed"] and self.x0_variance is not None:
            msg["fn"] = widened_gaussian(msg, self.x0_variance, self.x0.shape[1:])

    def _pyro_post_sample(self, msg):
        if self.after_chain and msg["is_observed"]:
            self.log_reward = self.log_reward + observed_log_prob(msg, self.x0.shape[0])


def widened_gaussian(msg, x0_variance, state_shape):
    """The observed site's ``Normal(loc, scale)``, with ``x0_variance`` added to its variance:
    ``N(y; loc, scale^2 + gamma)`` is ``N(y; x_0, scale^2)`` integrated over ``x_0 ~ N(loc, gamma)``,
    the likelihood at an uncertain ``x_0`` rather than at its estimate. It holds for a site that
    observes ``x_0`` elementwise, so the site's data must have the state's shape."""
    fn, reinterpreted = msg["fn"], 0
    while isinstance(fn, dist.Independent):
        fn, reinterpreted = fn.base_dist, reinterpreted + fn.reinterpreted_batch_ndims
    if type(fn) is not dist.Normal:
        raise ValueError(
            f"site {msg['name']!r} after the chain is a {type(msg['fn']).__name__}: a look-ahead with x0_variance "
            "widens Gaussian observations, and every observed site after the chain must be a Normal "
            "(pyro.factor sites too have no variance to widen). Drop x0_variance to score the site at the "
            "denoiser's estimate, or write the observation as pyro.sample(name, Normal(x0, sd), obs=y)"
        )
    if tuple(msg["value"].shape[-len(state_shape):]) != tuple(state_shape):
        raise ValueError(
            f"site {msg['name']!r} observes data of shape {tuple(msg['value'].shape)}, not the chain's state shape "
            f"{tuple(state_shape)}: x0_variance is the variance of x_0 itself, and is added to the variance of a "
            "site that observes x_0 elementwise (Normal(x0, sd)). Drop x0_variance for other observations"
        )
    scale = (fn.scale.square() + x0_variance).sqrt()
    return dist.Normal(fn.loc, scale).to_event(reinterpreted)


class LookaheadReward:
    """``log_reward(x0, x0_variance=None)``: the sum of the model's factor and observed sites after the
    chain at ``x0``; with ``x0_variance``, each Gaussian site has it added to its variance (see
    :func:`widened_gaussian`).

    The model runs with its chain replaced by ``x0`` (leading particle dimension),
    hidden from every outer handler, so it may be called while inference runs.
    """

    def __init__(self, model, args, kwargs):
        self.model, self.args, self.kwargs = _with_own_handlers(model), args, kwargs

    def __call__(self, x0, x0_variance=None):
        handler = _ReplaceChain(x0, x0_variance)
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
