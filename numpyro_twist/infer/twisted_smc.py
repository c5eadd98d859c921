"""Twisted Sequential Monte Carlo over the chain of a NumPyro model, compiled as one ``jit``.

The model runs once, under a plate of N particles. Its chain (``markov_chain`` /
``diffusion_chain``) hands its law to the engine below, which runs the whole chain for all
particles as one ``lax.scan`` (see ``steps.py``) and hands the final states back to the
model as the chain's value; every factor and observed site adds its log-density to the
particles' weights, and the last twist is divided out, so the weights target
``p(x_{0:K}) * exp(sum of factors)`` whatever the twist.
"""
import copy
import warnings
from collections import namedtuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.primitives import Messenger
from twist_core.diagnostics import KHAT_UNRELIABLE

from ..chains.markov_chain import CHAIN_MESSAGE
from ..smc.resampling import get_resampler
from ..smc.weights import WEIGHTS_OK, weight_error, weight_status
from .result import SMCResult
from .sharding import ParticleSharding
from .steps import PROPOSALS, SMCSteps
from .structure import no_chain_error, per_particle_site_error, second_chain_error, site_log_prob

SMCOutput = namedtuple("SMCOutput", ["log_evidence", "log_weights", "log_reward", "ess", "resampled", "ancestors",
                                     "states", "after_chain", "weight_status", "final_weight_status", "transitions",
                                     "reward_log_probs", "observed"])
SMCOutput.__doc__ = """\
Everything one pass returns, as arrays (``vmap`` stacks them over passes). Per-step arrays run over
``k = K, ..., 0``; ``states`` holds each step's states after resampling, ``(K + 1, N, ...)`` (the last
only, ``(1, N, ...)``, without ``keep_paths``); ``after_chain`` the latent sites after the chain;
``transitions`` the steps' :data:`~numpyro_twist.infer.steps.TransitionRecord` stacked over steps
(``None`` without ``record_transitions``); ``reward_log_probs`` each factor and observed site after the chain:
its log-density ``(N,)``; ``observed`` the observed sites' data."""

ChainLayout = namedtuple("ChainLayout", ["name", "num_steps", "num_reward_sites", "kernel_type"])


class _ChainEngine(Messenger):
    """Runs the chain when the model reaches it, and sums the observed and factor sites per particle."""

    def __init__(self, sampler, twist, rng_key, args, kwargs):
        super().__init__()
        self.sampler, self.twist, self.rng_key, self.args, self.kwargs = sampler, twist, rng_key, args, kwargs
        n = sampler.num_particles
        self.layout = self.steps = None
        self.state = self.infos = None
        self.log_likelihood = jnp.zeros(n)
        self.log_reward = jnp.zeros(n)
        self.num_reward_sites = 0
        self.after_chain = {}
        self.reward_log_probs = {}
        self.observed = {}
        self.sites_before = []  # refused when a chain follows them; without a chain the error says so

    def process_message(self, msg):
        if msg["type"] == CHAIN_MESSAGE:
            name, init, transition, num_steps = msg["args"]
            if self.layout is not None:
                raise second_chain_error(name, self.layout.name)
            if self.sites_before:
                raise per_particle_site_error(self.sites_before[0], name)
            kernel = msg["infer"].get("kernel")
            self.steps = self.sampler.steps(num_steps, kernel, self.args, self.kwargs, self.twist)
            dtype = jnp.result_type(float)
            self.state, self.infos = self.steps.run_chain(self.rng_key, init, transition, num_steps, dtype)
            self.layout = ChainLayout(name, num_steps, 0, type(kernel))
            msg["value"] = self.state.x
        elif msg["type"] == "sample" and not msg["is_observed"] and self.layout is None:
            self.sites_before.append(msg["name"])

    def postprocess_message(self, msg):
        if msg["type"] != "sample":
            return
        if msg["is_observed"]:
            log_prob = site_log_prob(msg, self.sampler.num_particles)
            self.log_likelihood = self.log_likelihood + log_prob
            if self.layout is not None:
                self.num_reward_sites += 1
                self.log_reward = self.log_reward + log_prob
                self.reward_log_probs[msg["name"]] = log_prob
                if not isinstance(msg["fn"], dist.Unit):  # numpyro.factor sites have no data
                    self.observed[msg["name"]] = msg["value"]
        elif self.layout is not None:
            self.after_chain[msg["name"]] = msg["value"]


def is_array_pytree(twist):
    """Whether ``twist`` is ``None`` or a pytree whose leaves are all arrays, so that it can be an
    argument of a compiled pass."""
    leaves = jax.tree_util.tree_leaves(twist)
    return all(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves)


class TwistedSMC:
    """Twisted SMC over the diffusion (or any Markov) chain of a NumPyro model.

    :param model: a NumPyro model written for one particle, with a chain (``markov_chain`` /
        ``diffusion_chain``) followed by ``numpyro.factor`` or observed sites: the reward.
    :param int num_particles: number of particles N.
    :param twist: ``None`` (bootstrap proposal) or any object with ``log_psi(k, x)`` returning one
        value per particle, approximating ``log E[exp(reward) | x_k]``; ``k`` may be a traced integer.
        Gaussian steps are proposed from the base Normal with its mean shifted by variance times
        ``grad log_psi(k, .)`` at that mean (exact for twists linear in ``x``); a twist may set
        ``proposal`` to ``"bootstrap"`` or ``"gradient_at_state"`` (the gradient at ``x_k``), and may
        define ``combine(previous, log_psi)`` to carry a potential along each path.
    :param str proposal: one of those proposal names, in place of the twist's own.
    :param resampling: ``"systematic"``, ``"stratified"``, ``"multinomial"``, ``"residual"``, or a
        callable ``(rng_key, log_w, num_samples) -> ancestors`` that works under ``jit``.
    :param float ess_threshold: resample when ESS < ``ess_threshold * N`` (0: never, 1: always).
    :param resampling_steps: the steps ``k`` at which resampling may happen (default: all).
    :param float max_shift: bound of gradient proposals' shift of the base mean, in norms of the base
        standard deviation (``None``: unbounded); the weights stay exact either way.
    :param float twist_floor: where the twist is zero at a particle it is raised to ``twist_floor`` nats
        below the lowest positive twist value among the particles at that step.
    :param bool keep_paths: keep every step's states (memory ``K * N * d``), for whole trajectories.
    :param bool record_transitions: keep each step's states, base and proposal moments and log-weights
        in ``result.transitions`` (what twist learning fits to; memory ``4 K * N * d``).
    :param devices: ``None`` (the default device), or the devices to split the particles over: a sequence
        (``jax.devices()``) or a 1-d ``jax.sharding.Mesh``. Each device runs its block of ``N / len(devices)``
        particles (N must be a multiple of the device count); resampling draws from all particles, and the
        results equal one device's for the same key. Several hosts: see :mod:`numpyro_twist.infer.sharding`.

    ``run(rng_key, *args, **kwargs)`` compiles one pass (chain, weighting, resampling and reward) with
    ``jax.jit`` once per argument shapes, runs it and checks it; :meth:`pure_run` is the same pass as a
    pure function, for ``vmap`` over keys. A twist registered as a pytree of arrays (``LinearTwist``) is
    an argument of the compiled pass: ``sampler.twist = other`` of the same shapes runs without compiling
    again (see :meth:`pure_run_with_twist`). Any other twist is a constant of its compiled pass.
    """

    def __init__(self, model, num_particles, twist=None, proposal=None, resampling="systematic", ess_threshold=0.5,
                 resampling_steps=None, max_shift=None, twist_floor=1.0, keep_paths=True, record_transitions=False,
                 devices=None):
        if int(num_particles) != num_particles or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        if proposal is not None and proposal not in PROPOSALS:
            raise ValueError(f"proposal must be one of {PROPOSALS}, got {proposal!r}")
        if not 0 <= ess_threshold <= 1:
            raise ValueError(f"ess_threshold must lie in [0, 1], got {ess_threshold!r}")
        if twist is not None and not callable(getattr(twist, "log_psi", None)):
            raise TypeError("twist must have a method log_psi(k, x) returning one value per particle")
        if resampling_steps is not None and not hasattr(resampling_steps, "__iter__"):
            raise ValueError(f"resampling_steps must be a collection of steps k (e.g. range(0, 50, 5)), "
                             f"got {resampling_steps!r}")
        if max_shift is not None and not max_shift > 0:
            raise ValueError(f"max_shift must be positive or None, got {max_shift!r}")
        if not 0 < twist_floor < float("inf"):
            raise ValueError(f"twist_floor must be positive and finite, got {twist_floor!r}")
        self.model = model
        self.num_particles = int(num_particles)
        self.twist = twist
        self.proposal = proposal
        self.resampler = get_resampler(resampling)
        self.ess_threshold = ess_threshold
        self.resampling_steps = None if resampling_steps is None else set(resampling_steps)
        self.max_shift, self.twist_floor, self.keep_paths = max_shift, twist_floor, keep_paths
        self.record_transitions = record_transitions
        self.sharding = None if devices is None else ParticleSharding(devices, self.num_particles)
        self._layout = None
        self._compiled_with_twist = jax.jit(self.pure_run_with_twist)
        self._compiled, self._compiled_twist = None, None

    def on_model(self, model):
        """This sampler, its settings and twist, on another ``model`` (the same one with sites conditioned,
        say), with compiled passes of its own: a copy would share this one's, which run this model."""
        other = copy.copy(self)
        other.model, other._layout = model, None
        other._compiled_with_twist = jax.jit(other.pure_run_with_twist)
        other._compiled, other._compiled_twist = None, None
        return other

    def _twist_for_run(self, twist, kernel, args, kwargs):
        return twist

    def steps(self, num_steps, kernel, args, kwargs, twist):
        """The pure steps of a pass with ``twist`` over a chain of ``num_steps`` built on ``kernel`` (or ``None``)."""
        twist = self._twist_for_run(twist, kernel, args, kwargs)
        proposal = self.proposal or getattr(twist, "proposal", "gradient")
        if proposal not in PROPOSALS:
            raise ValueError(f"twist.proposal must be one of {PROPOSALS}, got {proposal!r}")
        allowed = [self.resampling_steps is None or k in self.resampling_steps for k in range(num_steps + 1)]
        return SMCSteps(self.num_particles, twist, proposal, self.resampler, self.ess_threshold, jnp.array(allowed),
                        self.max_shift, self.twist_floor, self.keep_paths, self.record_transitions, self.sharding,
                        kernel)

    def pure_run(self, rng_key, *args, **kwargs):
        """One pass on ``model(*args, **kwargs)`` as a pure function of its arguments: an :data:`SMCOutput`."""
        return self.pure_run_with_twist(self.twist, rng_key, *args, **kwargs)

    def pure_run_with_twist(self, twist, rng_key, *args, **kwargs):
        """:meth:`pure_run` with ``twist`` in place of the sampler's own: under ``jit`` a twist that is a
        pytree of arrays is traced like the other arguments, so one compiled pass serves every twist of
        its structure and shapes."""
        key_chain, key_model = jax.random.split(rng_key)
        engine = _ChainEngine(self, twist, key_chain, args, kwargs)
        with handlers.seed(rng_seed=key_model), numpyro.plate("particles", self.num_particles, dim=-1), engine:
            self.model(*args, **kwargs)
        if engine.layout is None:
            raise no_chain_error()
        self._layout = engine.layout._replace(num_reward_sites=engine.num_reward_sites)
        log_w, log_evidence = engine.steps.finish(engine.state, engine.log_likelihood)
        infos = engine.infos
        states = infos.x if self.keep_paths else engine.state.x[None]
        log_reward, reward_log_probs, ancestors = engine.log_reward, engine.reward_log_probs, infos.ancestors
        if self.sharding is not None:
            log_w, log_reward, reward_log_probs = self.sharding.constrain((log_w, log_reward, reward_log_probs))
            states, ancestors = self.sharding.constrain((states, ancestors), particle_axis=1)
        return SMCOutput(log_evidence, log_w, log_reward, infos.ess, infos.resampled, ancestors, states,
                         engine.after_chain, infos.weight_status, weight_status(log_w), infos.transition,
                         reward_log_probs, engine.observed)

    def run(self, rng_key, *args, **kwargs):
        """Run the sampler on ``model(*args, **kwargs)``; returns an :class:`SMCResult`. Warns when the
        final weights' Pareto k-hat is above 0.7 (see :meth:`SMCResult.print_summary`)."""
        result = self._run(rng_key, args, kwargs)
        khat = result.pareto_khat
        if khat > KHAT_UNRELIABLE:
            warnings.warn(
                f"{type(self).__name__}: the final weights are heavy-tailed (Pareto k-hat {khat:.2f} > "
                f"{KHAT_UNRELIABLE}; ESS {float(result.ess_final):.1f} of {self.num_particles}): a few particles "
                "carry log_evidence and the weighted samples, and neither they nor the standard error can be "
                "trusted. Use a twist closer to the target, or far more particles; result.print_summary() shows "
                "the health check",
                stacklevel=2,
            )
        return result

    def _run(self, rng_key, args, kwargs):
        """One compiled pass with the current twist, checked: an :class:`SMCResult`."""
        if is_array_pytree(self.twist):
            output = self._compiled_with_twist(self.twist, rng_key, *args, **kwargs)
        else:
            if self._compiled is None or self._compiled_twist is not self.twist:
                # a twist that holds functions is a constant of the pass: another twist needs its own
                self._compiled, self._compiled_twist = jax.jit(self.pure_run), self.twist
            output = self._compiled(rng_key, *args, **kwargs)
        self._check(output)
        return SMCResult(output, self._layout.name, self._layout.num_steps, rng_key)

    def _check(self, output):
        name, num_steps, num_reward_sites, _ = self._layout
        status = np.asarray(output.weight_status)
        bad = np.flatnonzero(status != WEIGHTS_OK)
        if bad.size:
            k = num_steps - int(bad[0])
            raise weight_error(status[bad[0]], f"at chain site '{name}_{k}' (step k={k})")
        if int(output.final_weight_status) != WEIGHTS_OK:
            raise weight_error(int(output.final_weight_status), "after the reward sites at the end of the model")
        if num_reward_sites == 0:
            warnings.warn("the model has no numpyro.factor or observed site after its chain, so there is no "
                          "reward to steer toward: this ran as plain sampling", stacklevel=4)
