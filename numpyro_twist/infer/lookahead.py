"""Look-ahead rewards: the model's own reward sites evaluated on a guess of the chain's final state."""
import jax.numpy as jnp
import numpyro
from numpyro import handlers
from numpyro.primitives import Messenger

from ..chains.markov_chain import CHAIN_MESSAGE
from .structure import site_log_prob


class _ReplaceChain(Messenger):
    """Returns ``x0`` in place of running the chain, and sums the observed sites after it."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0
        self.after_chain = False
        self.log_reward = jnp.zeros(x0.shape[0], x0.dtype)

    def process_message(self, msg):
        if msg["type"] == CHAIN_MESSAGE:
            msg["value"] = self.x0
            self.after_chain = True

    def postprocess_message(self, msg):
        if self.after_chain and msg["type"] == "sample" and msg["is_observed"]:
            self.log_reward = self.log_reward + site_log_prob(msg, self.x0.shape[0])


class LookaheadReward:
    """``log_reward(x0)``: the sum of the model's factor and observed sites after the chain at ``x0``.

    The model runs with its chain replaced by ``x0`` (leading particle axis), hidden from every
    outer handler, so it may be called while inference runs (inside its scan). Latent sites after
    the chain draw from a seed of their own: the outer seed must not hand keys into the scan.
    """

    def __init__(self, model, args, kwargs):
        self.model, self.args, self.kwargs = model, args, kwargs

    def __call__(self, x0):
        handler = _ReplaceChain(x0)
        with handlers.block(), handlers.seed(rng_seed=0), numpyro.plate("particles", x0.shape[0], dim=-1), handler:
            self.model(*self.args, **self.kwargs)
        return handler.log_reward


def lookahead_parts(kernel, model, args, kwargs, who):
    """The kernel's ``predict_x0`` and the model's :class:`LookaheadReward`, for ``who`` (named in errors)."""
    if kernel is None or not callable(getattr(kernel, "predict_x0", None)):
        where = (f"the kernel {type(kernel).__name__} has no predict_x0(k, x)" if kernel is not None
                 else "the chain is not built from a kernel")
        raise ValueError(
            f"{who} needs look-ahead rewards, but {where}. Build the chain with "
            "diffusion_chain(name, kernel, shape) over a kernel with predict_x0 (the denoiser's "
            "estimate of x_0), or use a twist without look-ahead."
        )
    return kernel.predict_x0, LookaheadReward(model, args, kwargs)
