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
from .tri_tsmc import TRITSMC
from .twisted_smc import TwistedSMC, is_array_pytree

PMMHState = namedtuple("PMMHState", ["i", "z", "log_target", "log_evidence", "accept_prob", "mean_accept_prob",
                                     "log_step_size", "scale", "warmup_mean", "warmup_m2", "rng_key", "twist"])
PMMHState.__doc__ = """\
``i``: the step; ``z``: the global sites' values on the unconstrained scale; ``log_target``: the SMC
estimate of ``log p(theta, y)`` the state was accepted with plus the log-Jacobian of the map to ``z``,
and ``log_evidence`` that estimate alone; ``accept_prob``: the last proposal's acceptance probability,
``mean_accept_prob`` its mean over the steps; ``log_step_size`` and ``scale`` (per unconstrained
coordinate): the random walk's; ``warmup_mean`` and ``warmup_m2``: the running moments of the first
half of warmup's draws, from which ``scale`` is set; ``rng_key``; ``twist``: the chain's learned twist
(``None`` without ``learn_twist``), an argument of the compiled step like the rest of the state."""


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
    :param learn_twist: a :class:`~numpyro_twist.infer.tri_tsmc.TRITSMC` built on ``model`` that learns
        the chain's twist, amortised over the global sites, before the chain starts (the compiled step
        cannot stop to learn). ``init`` runs a pilot chain of ``num_warmup // 2`` steps with ``smc``,
        adapting as warmup does, then takes one unguarded :meth:`TRITSMC.step` at each of
        ``num_iterations`` evenly spaced draws of the pilot's second half, on ``model`` conditioned on
        the draw. The chain then starts at the pilot's last draw, step size and scale, and every pass,
        warmup's included, is a :class:`TwistedSMC` of the ``TRITSMC``'s final settings
        (``final_num_particles``) with the learned twist: a sampler fixed before the chain's first step,
        so that the chain is exact as with ``smc``. The pilot's draws are discarded; it costs
        ``num_warmup // 2`` passes of ``smc`` on top of the chain's ``num_warmup + num_samples``, and the
        learning ``num_iterations`` passes of ``num_particles`` with a fit each (``num_warmup`` at least
        ``4 num_iterations``). The twist is a pytree of arrays in the chain's state (``LinearTwist``,
        ``NeuralTwist``), so each chain learns its own, ``chain_method="vectorized"`` included;
        ``twist_learner`` keeps the learner, whose ``history`` holds every chain's iterations in turn.
    :param context: ``context(values) -> array of shape (context_dim,)`` of the global sites' constrained
        values ``{name: value}``, set as the learned twist's context (:meth:`NeuralTwist.with_context`)
        at each learning draw and at each proposal, so that one twist serves every value the chain
        visits, e.g. ``lambda values: jnp.log(values["sigma"]).reshape(1)``. The twist is then a
        function of the proposal alone, so ``Z_hat`` stays unbiased and the chain exact, whatever was
        learned: a good twist lowers the estimate's variance, and with it the chain's stickiness.
    :param float step_size: the random walk's initial standard deviation (unconstrained scale).
    :param bool adapt_step_size: adapt the step size and per-coordinate scales during warmup.
    :param float target_accept_prob: the acceptance rate warmup aims at (0.25: with a noisy estimate
        the best rate is below the exact-likelihood 0.234's neighbourhood, see ``pyro_twist.infer.pmmh``).

    ``init_params``, where given to ``MCMC.run``, are the global sites' values on the unconstrained scale
    (default: a draw from their prior). ``extra_fields=("log_evidence", "accept_prob")`` collects each
    draw's SMC estimate and acceptance probability.
    """

    sample_field = "z"

    def __init__(self, model, smc=None, learn_twist=None, context=None, step_size=0.5, adapt_step_size=True,
                 target_accept_prob=0.25):
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size!r}")
        if not 0 < target_accept_prob < 1:
            raise ValueError(f"target_accept_prob must lie in (0, 1), got {target_accept_prob!r}")
        smc = TwistedSMC(model, 256) if smc is None else smc
        if not callable(getattr(smc, "on_model", None)) or getattr(smc, "model", None) is not model:
            raise ValueError("smc must be a one-pass sampler with on_model (TwistedSMC, FKSteering, TDS, ...) built "
                             "on the same model, e.g. PMMH(model, smc=TwistedSMC(model, 64))")
        self.model = model
        self.sampler = smc.on_model(self._conditioned)
        self._check_learning(learn_twist, context)
        self.learn_twist, self.context = learn_twist, context
        self.twist_learner = None if learn_twist is None else learn_twist.on_model(self._conditioned)
        # compiled once for every chain
        self._compiled_log_target = jax.jit(self.log_target)
        self._compiled_pilot = jax.jit(self._pilot, static_argnums=3)
        self.step_size = step_size
        self.adapt_step_size = adapt_step_size
        self.target_accept_prob = target_accept_prob
        self.transforms = None
        self._num_warmup = 0

    def _check_learning(self, learn_twist, context):
        if learn_twist is None:
            if context is not None:
                raise ValueError("context sets a learned twist's context: pass learn_twist=TRITSMC(model, ...) too")
            return
        if not isinstance(learn_twist, TRITSMC) or learn_twist.model is not self.model:
            raise ValueError("learn_twist must be a TRITSMC built on the same model, e.g. PMMH(model, learn_twist="
                             "TRITSMC(model, twist=NeuralTwist(..., context_dim=1)), context=...)")
        twist = learn_twist.twist
        if twist is not None and not is_array_pytree(twist):
            raise TypeError("the learned twist lives in the chain's state: learn_twist's twist must be a pytree of "
                            "arrays (LinearTwist, NeuralTwist, or None for the default family)")
        takes_context = getattr(twist, "context_dim", 0) > 0
        if context is not None and not takes_context:
            raise ValueError("context is set as the learned twist's context, and learn_twist's twist takes none: "
                             "give TRITSMC a twist with one, e.g. NeuralTwist(..., context_dim=1)")
        if takes_context and context is None:
            raise ValueError(f"learn_twist's twist takes a context of size {twist.context_dim}: pass PMMH(..., "
                             "context=lambda values: ...) giving it from the global sites' values")

    def _conditioned(self, values, *args, **kwargs):
        with handlers.condition(data=values):
            return self.model(*args, **kwargs)

    def constrained(self, z):
        """The global sites' values at the unconstrained ``z``."""
        return {name: self.transforms[name](value) for name, value in z.items()}

    def postprocess_fn(self, model_args, model_kwargs):
        return self.constrained

    def log_target(self, rng_key, z, model_args, model_kwargs, twist=None):
        """One SMC estimate of ``log p(theta, y)`` at the unconstrained ``z``, plus the log-Jacobian of the
        map to ``z``; returns that and the estimate alone. Without ``twist`` the pass is ``smc``'s, with
        it the learned sampler's (its context set from the values). A failed pass (no finite weight)
        scores minus infinity, so that its proposal is refused."""
        values = self.constrained(z)
        log_jacobian = sum(jnp.sum(self.transforms[name].log_abs_det_jacobian(z[name], values[name])) for name in z)
        if twist is None:
            output = self.sampler.pure_run(rng_key, values, *model_args, **model_kwargs)
        else:
            if self.context is not None:
                twist = twist.with_context(self.context(values))
            output = self.twist_learner.final.pure_run_with_twist(twist, rng_key, values, *model_args, **model_kwargs)
        log_evidence = output.log_evidence
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
        log_target, log_evidence = self._compiled_log_target(key_target, z, model_args, model_kwargs)
        flat = ravel_pytree(z)[0]
        zero = jnp.zeros((), flat.dtype)
        state = PMMHState(jnp.array(0), z, log_target, log_evidence, zero, zero, jnp.log(self.step_size) + zero,
                          jnp.ones_like(flat), jnp.zeros_like(flat), jnp.zeros_like(flat), rng_key, None)
        return state if self.learn_twist is None else self._learn(state, model_args, model_kwargs)

    def _learn(self, state, model_args, model_kwargs):
        """The pilot chain from ``state`` and the twist's learning at draws of its second half (see the
        class); returns the chain's start: the pilot's last draw, step size and scale, with the learned twist."""
        num_pilot, num_iterations = self._num_warmup // 2, self.twist_learner.num_iterations
        if num_pilot - num_pilot // 2 < num_iterations:
            raise ValueError(f"learn_twist learns at {num_iterations} draws of the second half of a pilot of "
                             f"num_warmup // 2 steps: num_warmup must be at least {4 * num_iterations}, got "
                             f"{self._num_warmup}")
        key_chain, key_target, *keys = jax.random.split(state.rng_key, num_iterations + 2)
        state, draws = self._compiled_pilot(state._replace(rng_key=key_chain), model_args, model_kwargs, num_pilot)
        learner = self.twist_learner
        learner.twist = self.learn_twist.twist  # every chain learns from the same start
        for i, key in enumerate(keys):
            index = num_pilot // 2 + i * (num_pilot - num_pilot // 2) // num_iterations
            values = self.constrained(jax.tree.map(lambda draw: draw[index], draws))
            if self.context is not None:
                learner.twist = learner.twist.with_context(self.context(values))
            learner.step(key, values, *model_args, **model_kwargs)
        twist = learner.twist
        if not is_array_pytree(twist):
            raise TypeError(f"the learned twist lives in the chain's state, and {type(twist).__name__} is not a "
                            "pytree of arrays: learn a LinearTwist or NeuralTwist")
        # the state's estimate is redrawn with the learned sampler, as every later one will be
        log_target, log_evidence = self._compiled_log_target(key_target, state.z, model_args, model_kwargs, twist)
        zero = jnp.zeros_like(state.accept_prob)
        return state._replace(i=jnp.zeros_like(state.i), log_target=log_target, log_evidence=log_evidence,
                              accept_prob=zero, mean_accept_prob=zero, warmup_mean=jnp.zeros_like(state.warmup_mean),
                              warmup_m2=jnp.zeros_like(state.warmup_m2), twist=twist)

    def _pilot(self, state, model_args, model_kwargs, num_steps):
        """``num_steps`` steps from ``state``, all of them warmup; returns the last state and every draw of ``z``."""
        def step(state, _):
            state = self._transition(state, model_args, model_kwargs, num_steps)
            return state, state.z

        return jax.lax.scan(step, state, None, length=num_steps)

    def sample(self, state, model_args, model_kwargs):
        model_kwargs = {} if model_kwargs is None else model_kwargs
        if not is_prng_key(state.rng_key):  # chain_method="vectorized": one state per chain
            return jax.vmap(lambda chain: self.sample(chain, model_args, model_kwargs))(state)
        return self._transition(state, model_args, model_kwargs, self._num_warmup)

    def _transition(self, state, model_args, model_kwargs, num_warmup):
        """One step of a chain whose first ``num_warmup`` steps adapt."""
        rng_key, key_move, key_target, key_accept = jax.random.split(state.rng_key, 4)
        flat, unravel = ravel_pytree(state.z)
        step = jnp.exp(state.log_step_size) * state.scale * jax.random.normal(key_move, flat.shape, flat.dtype)
        proposal = unravel(flat + step)
        log_target, log_evidence = self.log_target(key_target, proposal, model_args, model_kwargs, state.twist)
        log_ratio = log_target - state.log_target
        accept_prob = jnp.exp(jnp.minimum(jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio), 0.0))
        accepted = jax.random.uniform(key_accept, dtype=flat.dtype) < accept_prob
        z = jax.tree.map(lambda new, old: jnp.where(accepted, new, old), proposal, state.z)
        i = state.i + 1
        state = state._replace(
            i=i, z=z, log_target=jnp.where(accepted, log_target, state.log_target),
            log_evidence=jnp.where(accepted, log_evidence, state.log_evidence), accept_prob=accept_prob,
            mean_accept_prob=state.mean_accept_prob + (accept_prob - state.mean_accept_prob) / i, rng_key=rng_key)
        if self.adapt_step_size and num_warmup > 0:
            state = self._adapt(state, ravel_pytree(z)[0], num_warmup)
        return state

    def _adapt(self, state, flat, num_warmup):
        """Warmup's adaptation after step ``state.i`` (a no-op after the ``num_warmup`` steps of warmup)."""
        i, half = state.i, max(num_warmup // 2, 1)
        in_warmup = i <= num_warmup
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
