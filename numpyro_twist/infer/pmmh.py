"""Particle marginal Metropolis-Hastings: MCMC over a model's global parameters with the chain
marginalised by SMC (Andrieu, Doucet and Holenstein 2010), as a kernel for ``numpyro.infer.MCMC``.

A model's latent sites before its chain (a noise level: one value for the whole model) cannot be
particles: resampling would tear them from the states they produced. Fixed by
``numpyro.handlers.condition``, they leave a model whose twisted SMC ``Z_hat`` is an unbiased
estimate of ``p(theta) p(y | theta)`` (the conditioned sites enter the weights as observations),
and a Metropolis-Hastings chain that keeps each state's estimate until a proposal replaces it
samples ``p(theta | y)`` exactly (the pseudo-marginal argument of Andrieu and Roberts 2009), however
noisy the estimate: noise only lowers the acceptance rate. As ``pyro_twist.infer.pmmh``.
"""
import copy
import math
from collections import namedtuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.mcmc import MCMCKernel
from numpyro.primitives import Messenger
from numpyro.util import is_prng_key

from ..chains.markov_chain import CHAIN_MESSAGE
from .twisted_smc import TwistedSMC

PMMHState = namedtuple("PMMHState", ["i", "z", "log_target", "log_evidence", "accept_prob", "mean_accept_prob",
                                     "log_step_size", "scale", "warmup_mean", "warmup_m2", "rng_key"])
PMMHState.__doc__ = """\
``i``: the step; ``z``: the global sites' values on the unconstrained scale; ``log_target``: the SMC
estimate of ``log p(theta, y)`` the state was accepted with plus the log-Jacobian of the map to ``z``,
and ``log_evidence`` that estimate alone; ``accept_prob``: the last proposal's acceptance probability,
``mean_accept_prob`` its mean over the steps; ``log_step_size`` and ``scale`` (per unconstrained
coordinate): the random walk's; ``warmup_mean`` and ``warmup_m2``: the running moments of the first
half of warmup's draws, from which ``scale`` is set; ``rng_key``."""


class _ChainReached(Exception):
    pass


class _GlobalSites(Messenger):
    """Records the latent sites a model samples before its chain, then stops the model."""

    def __init__(self):
        super().__init__()
        self.sites = {}

    def process_message(self, msg):
        if msg["type"] == CHAIN_MESSAGE:
            raise _ChainReached

    def postprocess_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            self.sites[msg["name"]] = msg


def global_sites(model, rng_key, args, kwargs):
    """The latent sites ``model`` samples before its chain, as ``{name: site}`` (one prior draw)."""
    finder = _GlobalSites()
    try:
        with handlers.seed(rng_seed=rng_key), finder:
            model(*args, **kwargs)
    except _ChainReached:
        return finder.sites
    raise ValueError("PMMH marginalises a chain written with markov_chain or diffusion_chain, and the model has none "
                     "(a hand-written loop's sites cannot be told from global parameters)")


class PMMH(MCMCKernel):
    """Pseudo-marginal Metropolis-Hastings over the model's global sites, for ``numpyro.infer.MCMC``.

    Each step proposes a Gaussian random walk on the unconstrained scale, runs one SMC pass of the
    model with the proposed values fixed by ``numpyro.handlers.condition``, and accepts with the ratio
    of the estimated evidences (the conditioned sites' prior included) times the change of variables;
    the whole step compiles with the chain. During warmup the step size follows the acceptance rate to
    ``target_accept_prob`` (Robbins-Monro on its logarithm), and from half-way on each unconstrained
    coordinate's scale is the spread of its draws in the first half.

    :param model: a NumPyro model with latent sites before a ``markov_chain``/``diffusion_chain``.
    :param smc: the sampler of each pass, built on ``model`` (``TwistedSMC(model, 64)``, or any sampler
        of this package); it runs on ``model`` conditioned on the proposal. Default: bootstrap
        :class:`~numpyro_twist.infer.twisted_smc.TwistedSMC` with 256 particles.
    :param float step_size: the random walk's initial standard deviation (unconstrained scale).
    :param bool adapt_step_size: adapt the step size and per-coordinate scales during warmup.
    :param float target_accept_prob: the acceptance rate warmup aims at (0.25: with a noisy estimate
        the best rate is below the exact-likelihood 0.234's neighbourhood, see ``pyro_twist.infer.pmmh``).

    ``init_params``, where given to ``MCMC.run``, are the global sites' values on the unconstrained scale
    (default: a draw from their prior). ``extra_fields=("log_evidence", "accept_prob")`` collects each
    draw's SMC estimate and acceptance probability.
    """

    sample_field = "z"

    def __init__(self, model, smc=None, step_size=0.5, adapt_step_size=True, target_accept_prob=0.25):
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size!r}")
        if not 0 < target_accept_prob < 1:
            raise ValueError(f"target_accept_prob must lie in (0, 1), got {target_accept_prob!r}")
        smc = TwistedSMC(model, 256) if smc is None else smc
        if not callable(getattr(smc, "pure_run", None)) or getattr(smc, "model", None) is not model:
            raise ValueError("smc must be a one-pass sampler with pure_run (TwistedSMC, FKSteering, TDS, ...) built "
                             "on the same model, e.g. PMMH(model, smc=TwistedSMC(model, 64))")
        self.model = model
        self.sampler = copy.copy(smc)
        self.sampler.model = self._conditioned
        self.step_size = step_size
        self.adapt_step_size = adapt_step_size
        self.target_accept_prob = target_accept_prob
        self.transforms = None
        self._num_warmup = 0

    def _conditioned(self, values, *args, **kwargs):
        with handlers.condition(data=values):
            return self.model(*args, **kwargs)

    def constrained(self, z):
        """The global sites' values at the unconstrained ``z``."""
        return {name: self.transforms[name](value) for name, value in z.items()}

    def postprocess_fn(self, model_args, model_kwargs):
        return self.constrained

    def log_target(self, rng_key, z, model_args, model_kwargs):
        """One SMC estimate of ``log p(theta, y)`` at the unconstrained ``z``, plus the log-Jacobian of the
        map to ``z``; returns that and the estimate alone. A failed pass (no finite weight) scores minus
        infinity, so that its proposal is refused."""
        values = self.constrained(z)
        log_jacobian = sum(jnp.sum(self.transforms[name].log_abs_det_jacobian(z[name], values[name])) for name in z)
        log_evidence = self.sampler.pure_run(rng_key, values, *model_args, **model_kwargs).log_evidence
        log_evidence = jnp.where(jnp.isnan(log_evidence), -jnp.inf, log_evidence)
        return log_evidence + log_jacobian, log_evidence

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        model_kwargs = {} if model_kwargs is None else model_kwargs
        if is_prng_key(rng_key):
            return self._init_chain(rng_key, num_warmup, init_params, model_args, model_kwargs)
        # chain_method="vectorized": a batch of keys (and of init_params), one state per chain, stacked
        states = [self._init_chain(key, num_warmup,
                                   None if init_params is None else jax.tree.map(lambda v: v[c], init_params),
                                   model_args, model_kwargs)
                  for c, key in enumerate(rng_key)]
        return jax.tree.map(lambda *values: jnp.stack(values), *states)

    def _init_chain(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        key_prior, key_target, rng_key = jax.random.split(rng_key, 3)
        sites = global_sites(self.model, key_prior, model_args, model_kwargs)
        if not sites:
            raise ValueError("the model samples no latent site before its chain: there is nothing for PMMH to "
                             "sample; run TwistedSMC (or TRITSMC) on it directly")
        self.transforms = {name: biject_to(site["fn"].support) for name, site in sites.items()}
        self._num_warmup = int(num_warmup)
        if init_params is None:
            init_params = {name: self.transforms[name].inv(site["value"]) for name, site in sites.items()}
        elif set(init_params) != set(sites):
            raise ValueError(f"init_params must give the global sites {sorted(sites)} (unconstrained), "
                             f"got {sorted(init_params)}")
        z = {name: jnp.asarray(value, dtype=jnp.result_type(float)) for name, value in init_params.items()}
        log_target, log_evidence = jax.jit(self.log_target)(key_target, z, model_args, model_kwargs)
        flat = ravel_pytree(z)[0]
        zero = jnp.zeros((), flat.dtype)
        return PMMHState(jnp.array(0), z, log_target, log_evidence, zero, zero, jnp.log(self.step_size) + zero,
                         jnp.ones_like(flat), jnp.zeros_like(flat), jnp.zeros_like(flat), rng_key)

    def sample(self, state, model_args, model_kwargs):
        model_kwargs = {} if model_kwargs is None else model_kwargs
        if not is_prng_key(state.rng_key):  # chain_method="vectorized": one state per chain
            return jax.vmap(lambda chain: self.sample(chain, model_args, model_kwargs))(state)
        rng_key, key_move, key_target, key_accept = jax.random.split(state.rng_key, 4)
        flat, unravel = ravel_pytree(state.z)
        step = jnp.exp(state.log_step_size) * state.scale * jax.random.normal(key_move, flat.shape, flat.dtype)
        proposal = unravel(flat + step)
        log_target, log_evidence = self.log_target(key_target, proposal, model_args, model_kwargs)
        log_ratio = log_target - state.log_target
        accept_prob = jnp.exp(jnp.minimum(jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio), 0.0))
        accepted = jax.random.uniform(key_accept, dtype=flat.dtype) < accept_prob
        z = jax.tree.map(lambda new, old: jnp.where(accepted, new, old), proposal, state.z)
        i = state.i + 1
        state = state._replace(
            i=i, z=z, log_target=jnp.where(accepted, log_target, state.log_target),
            log_evidence=jnp.where(accepted, log_evidence, state.log_evidence), accept_prob=accept_prob,
            mean_accept_prob=state.mean_accept_prob + (accept_prob - state.mean_accept_prob) / i, rng_key=rng_key)
        if self.adapt_step_size and self._num_warmup > 0:
            state = self._adapt(state, ravel_pytree(z)[0])
        return state

    def _adapt(self, state, flat):
        """Warmup's adaptation after step ``state.i`` (a no-op after warmup)."""
        i, half = state.i, max(self._num_warmup // 2, 1)
        in_warmup = i <= self._num_warmup
        log_step = state.log_step_size + (state.accept_prob - self.target_accept_prob) / i ** 0.6
        # running moments of the first half's draws (Welford), then their spread as the scale
        in_first_half = i <= half
        delta = flat - state.warmup_mean
        mean = jnp.where(in_first_half, state.warmup_mean + delta / i, state.warmup_mean)
        m2 = jnp.where(in_first_half, state.warmup_m2 + delta * (flat - mean), state.warmup_m2)
        if half >= 20:
            rescale = i == half
            scale = jnp.where(rescale, jnp.maximum(jnp.sqrt(m2 / (i - 1)), 1e-3), state.scale)
            # the step size restarts its search at the new scale
            log_step = jnp.where(rescale, math.log(2.38 / math.sqrt(flat.size)), log_step)
        else:
            scale = state.scale
        return state._replace(log_step_size=jnp.where(in_warmup, log_step, state.log_step_size), scale=scale,
                              warmup_mean=mean, warmup_m2=m2)

    def get_diagnostics_str(self, state):
        return f"step size {float(jnp.exp(state.log_step_size)):.3g}, acc. prob {float(state.mean_accept_prob):.3f}"
