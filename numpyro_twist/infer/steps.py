"""One pass of twisted SMC as pure functions over a namedtuple state, for ``lax.scan``.

``init`` draws the chain's first state, ``step`` moves every particle from ``x_k`` to
``x_{k-1}``, ``finish`` applies the reward. Each draw is weighted

    log w += log p(x_{k-1} | x_k) - log q(x_{k-1} | x_k) + log psi_{k-1}(x_{k-1}) - log psi_k(x_k),

and the particles are resampled when the effective sample size falls below
``ess_threshold * N``; resampling adds ``log mean(w)`` to ``log_evidence`` and resets the
weights, so that the final ``log_evidence`` is ``log Z_hat`` with ``Z_hat`` unbiased.
Particles are the leading axis of every array; every shape is fixed, so that a whole pass
compiles once and ``vmap`` runs independent passes.
"""
from collections import namedtuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import distributions as dist

from ..smc.weights import ess, log_mean_exp, weight_status
from ..twists.gaussian import bounded_shift

PROPOSALS = ("gradient", "gradient_at_state", "bootstrap")

SMCState = namedtuple("SMCState", ["x", "log_w", "log_psi", "grad_log_psi", "log_evidence", "denoised"])
SMCState.__doc__ = """\
The particles after a step: states ``x`` ``(N, ...)``, log-weights ``log_w`` since the last
resampling, the twist ``log_psi`` at ``x``, its gradient (for the ``gradient_at_state`` proposal,
else ``None``), ``log_evidence``, the log-mean weights of the resampling epochs so far, and the
kernel's denoiser output at ``x`` (``None`` for a chain without a kernel that shares it, see
:func:`shares_denoiser`)."""

StepInfo = namedtuple("StepInfo", ["x", "ess", "resampled", "ancestors", "weight_status", "transition"])
StepInfo.__doc__ = """\
What a step reports: the states after resampling (``None`` when paths are not kept), the ESS of
the step's weights before resampling, whether it resampled, the ancestors (the identity where it
did not), a ``weight_status`` code (see ``smc.weights``) for the host to turn into an error, and
the step's :data:`TransitionRecord` (``None`` unless transitions are recorded)."""

TransitionRecord = namedtuple("TransitionRecord",
                              ["value", "base_mean", "base_variance", "proposal_mean", "gaussian", "log_weights"])
TransitionRecord.__doc__ = """\
One chain step, aligned with the particles after that step's resampling: the new states ``x_k``
(``value``), the mean and variance of the base transition and the mean of the proposal that drew
them (each of the states' shape; zeros where the step is not Gaussian), ``gaussian``: whether the
base transition is Gaussian (a deterministic or discrete step has no moments), and ``log_weights``,
the particles' log-weights after the step's twist, before resampling. A pass stacks them over
``k = K, ..., 0``: what twist learning fits to (see ``LinearTwist.fit``)."""


def shares_denoiser(kernel):
    """Whether ``kernel`` exposes its denoiser call: ``denoise_step(k, x)``, and ``transition_from(k, x, denoised)``
    and ``predict_x0_from(k, x, denoised)`` that take its output. Inference then calls the denoiser once per
    step, at the new states, and hands its output to the look-ahead twist and to the next transition."""
    return all(callable(getattr(kernel, name, None)) for name in ("denoise_step", "transition_from", "predict_x0_from"))


def _is_clean(k):
    """Whether ``k`` is the chain's last state, ``x_0``: no transition leaves it and it is its own look-ahead.
    Only the last step, outside the scan, reaches it, with a Python integer."""
    return isinstance(k, (int, np.integer)) and k == 0


def _is_gaussian(law):
    while isinstance(law, (dist.Independent, dist.ExpandedDistribution)):
        law = law.base_dist
    return isinstance(law, dist.Normal)


def floor_zero_twist(log_psi, twist_floor):
    """``log_psi`` with its ``-inf`` values raised to ``twist_floor`` nats below its lowest finite value
    (to ``-twist_floor`` where none is finite).

    A twist is a guess of ``E[exp(reward) | x_k]``. Where it says zero but the chain can still reach
    states the reward accepts (a look-ahead through a denoiser's guess of ``x_0``), the particles it
    drops would take their share of the evidence with them. Any positive twist keeps the weights exact.
    """
    lowest = jnp.min(jnp.where(jnp.isfinite(log_psi), log_psi, jnp.inf))
    floor = jnp.where(jnp.isfinite(lowest), lowest, 0.0) - twist_floor
    return jnp.where(jnp.isneginf(log_psi), floor, log_psi)


def _transition_record(x, base, proposal, log_w, ancestors):
    """The :data:`TransitionRecord` of a step that drew ``x[ancestors]`` (``x`` after resampling)."""
    if not _is_gaussian(base):
        zeros = jnp.zeros_like(x)
        return TransitionRecord(x, zeros, zeros, zeros, jnp.array(False), log_w)
    moments = [jnp.broadcast_to(m, x.shape)[ancestors] for m in (base.mean, base.variance, proposal.mean)]
    return TransitionRecord(x, *moments, jnp.array(True), log_w)


class SMCSteps:
    """The configuration of a pass; its methods are pure functions of their arguments.

    :param int num_particles: N. :param twist: ``None`` or an object with ``log_psi(k, x)``.
    :param str proposal: one of ``PROPOSALS``. :param resampler: ``(rng_key, log_w, n) -> ancestors``.
    :param float ess_threshold: resample when ESS < ``ess_threshold * N``.
    :param resampling_mask: boolean array over ``k = 0..K``: the steps allowed to resample.
    :param max_shift: bound of gradient proposals' shift, in base standard deviations (``None``: none).
    :param float twist_floor: see :func:`floor_zero_twist`. :param bool keep_paths: report each step's states.
    :param bool record_transitions: report each step's :data:`TransitionRecord`.
    :param sharding: ``None`` (one device) or a :class:`~numpyro_twist.infer.sharding.ParticleSharding` that
        splits every particle array of the state over its devices.
    :param kernel: the chain's kernel, or ``None``. Where it shares its denoiser (:func:`shares_denoiser`), each
        step calls the denoiser once: its output at the new states feeds the twist, when the twist looks ahead
        through this kernel's ``predict_x0`` (a :class:`~numpyro_twist.twists.LookaheadTwist` over it), and,
        gathered with the particles on resampling, the next step's transition.
    """

    def __init__(self, num_particles, twist, proposal, resampler, ess_threshold, resampling_mask, max_shift,
                 twist_floor, keep_paths, record_transitions=False, sharding=None, kernel=None):
        self.num_particles, self.twist, self.proposal = num_particles, twist, proposal
        self.resampler, self.ess_threshold, self.resampling_mask = resampler, ess_threshold, resampling_mask
        self.max_shift, self.twist_floor, self.keep_paths = max_shift, twist_floor, keep_paths
        self.record_transitions = record_transitions
        self.sharding = sharding
        self.kernel = kernel if shares_denoiser(kernel) else None
        self.lookahead_through_kernel = (self.kernel is not None and callable(getattr(twist, "log_reward", None))
                                         and getattr(twist, "predict_x0", None) == self.kernel.predict_x0)

    def _placed(self, tree):
        """``tree``'s particle arrays split over the devices (unchanged on one device)."""
        return tree if self.sharding is None else self.sharding.constrain(tree)

    def init(self, rng_key, law, k, dtype):
        """Draw the first state ``x_k`` (``k = K``) from ``law``, the law of one particle's state."""
        if law.batch_shape != ():
            raise ValueError(
                f"the first state of the chain has batch shape {law.batch_shape}; it must be the law of one "
                "particle's whole state: declare the state's dimensions with .to_event(...)"
            )
        n = self.num_particles
        blank = SMCState(None, jnp.zeros(n, dtype), jnp.zeros(n, dtype), None, jnp.zeros((), dtype), None)
        return self._advance(rng_key, k, law.expand((n,)), blank, first=True)

    def step(self, rng_key, k, transition, state):
        """Move the particles from ``x_k`` to ``x_{k-1}`` under ``transition(k, x)`` (from the carried denoiser
        output, where the kernel shares it)."""
        if state.denoised is None:
            base = transition(k, state.x)
        else:
            base = self.kernel.transition_from(k, state.x, state.denoised)
        if not isinstance(base, dist.Distribution):
            raise TypeError(f"transition(k, x) returned a {type(base).__name__}, not a distribution: return the law "
                            "of the next state, e.g. dist.Normal(mean, scale).to_event(1)")
        if base.batch_shape != (self.num_particles,):
            raise ValueError(
                f"transition(k, x) has batch shape {base.batch_shape}; inference runs {self.num_particles} "
                f"particles along a leading axis and needs batch shape ({self.num_particles},): declare the "
                "state's dimensions with .to_event(...)"
            )
        return self._advance(rng_key, k - 1, base, state, first=False)

    def finish(self, state, log_likelihood):
        """Divide the last twist out and apply the reward: final log-weights and ``log_evidence``."""
        log_w = state.log_w + log_likelihood - state.log_psi
        return log_w, state.log_evidence + log_mean_exp(log_w)

    def _proposal(self, k, base, grad_at_state):
        if self.twist is None or self.proposal == "bootstrap" or not _is_gaussian(base):
            return base
        shape = base.batch_shape + base.event_shape
        mean, variance = jnp.broadcast_to(base.mean, shape), jnp.broadcast_to(base.variance, shape)
        if self.proposal == "gradient_at_state":
            if grad_at_state is None:  # the first state has no state before it
                return base
            grad = grad_at_state
        else:
            grad = jax.grad(lambda m: self.twist.log_psi(k, m).sum())(mean)
            grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
        shift = bounded_shift(variance * grad, variance, self.max_shift)
        return dist.Normal(mean + shift, jnp.sqrt(variance)).to_event(len(base.event_shape))

    def _look(self, k, x):
        """The twist at ``x_k = x`` and the kernel's denoiser output there (each ``None`` where there is
        none to compute), from one denoiser call."""
        denoised = None if self.kernel is None or _is_clean(k) else self.kernel.denoise_step(k, x)
        if self.twist is None:
            return None, denoised
        if self.lookahead_through_kernel and denoised is not None:
            return self.twist.log_reward(self.kernel.predict_x0_from(k, x, denoised)), denoised
        return self.twist.log_psi(k, x), denoised

    def _twist_at(self, k, x, previous):
        """The twist at ``x_k = x`` floored and combined along the path, its gradient (``gradient_at_state``
        proposals, else ``None``), and the kernel's denoiser output at ``x`` (or ``None``)."""
        if self.proposal == "gradient_at_state":
            def total(x):
                log_psi, denoised = self._look(k, x)
                return log_psi.sum(), (log_psi, denoised)

            (_, (log_psi, denoised)), grad = jax.value_and_grad(total, has_aux=True)(x)
            # a particle whose twist is not finite gives the proposal no direction
            finite = jnp.isfinite(log_psi).reshape((-1,) + (1,) * (x.ndim - 1))
            grad = jnp.where(finite & jnp.isfinite(grad), grad, 0.0)
        else:
            (log_psi, denoised), grad = self._look(k, x), None
        if jnp.shape(log_psi) != (self.num_particles,):
            raise ValueError(
                f"twist.log_psi(k, x) returned shape {jnp.shape(log_psi)} for {self.num_particles} particles: "
                f"it must return one value per particle, shape ({self.num_particles},) (reduce over the state's "
                "own dimensions, not over particles)"
            )
        log_psi = floor_zero_twist(log_psi, self.twist_floor)
        if previous is not None and hasattr(self.twist, "combine"):
            log_psi = self.twist.combine(previous, log_psi)
        return log_psi, grad, denoised

    def _advance(self, rng_key, k, base, state, first):
        """Draw ``x_k`` from the proposal for ``base``, weight it, and resample if the ESS is low."""
        key_draw, key_resample = jax.random.split(rng_key)
        n = self.num_particles
        proposal = self._proposal(k, base, state.grad_log_psi)
        x = self._placed(proposal.sample(key_draw))
        log_w = state.log_w
        if proposal is not base:
            log_w = log_w + base.log_prob(x) - proposal.log_prob(x)
        if self.twist is None:
            log_psi, grad, denoised = state.log_psi, None, self._look(k, x)[1]
        else:
            log_psi, grad, denoised = self._twist_at(k, x, None if first else state.log_psi)
            log_w = log_w + log_psi - state.log_psi
        step_ess = ess(log_w)
        resampled = (step_ess < self.ess_threshold * n) & self.resampling_mask[k]
        ancestors = self.resampler(key_resample, log_w, n)
        if jnp.shape(ancestors) != (n,) or not jnp.issubdtype(jnp.result_type(ancestors), jnp.integer):
            raise ValueError(f"the resampler returned an array of shape {jnp.shape(ancestors)} and dtype "
                             f"{jnp.result_type(ancestors)}: it must return ({n},) integer ancestor indices")
        ancestors = jnp.where(resampled, ancestors, jnp.arange(n))
        status = weight_status(log_w)
        log_evidence = state.log_evidence + jnp.where(resampled, log_mean_exp(log_w), 0.0)
        step_log_w, log_w = log_w, jnp.where(resampled, 0.0, log_w)
        x, log_psi, grad, denoised = jax.tree.map(lambda v: v[ancestors], (x, log_psi, grad, denoised))
        x, log_w, log_psi, grad, denoised = self._placed((x, log_w, log_psi, grad, denoised))
        record = _transition_record(x, base, proposal, step_log_w, ancestors) if self.record_transitions else None
        info = StepInfo(x if self.keep_paths else None, step_ess, resampled, ancestors, status, record)
        return SMCState(x, log_w, log_psi, grad, log_evidence, denoised), info

    def run_chain(self, rng_key, init, transition, num_steps, dtype):
        """The whole chain: ``init`` at ``k = K``, a ``lax.scan`` over ``k = K..2``, and the last step
        on its own, since a diffusion's last step is often deterministic (a ``Delta``, another law than
        the scanned steps'). Returns the final state and the steps' infos stacked over ``k = K..0``."""
        keys = jax.random.split(rng_key, num_steps + 1)
        state, first = self.init(keys[0], init, num_steps, dtype)
        infos = [jax.tree.map(lambda v: v[None], first)]
        if num_steps >= 2:
            def body(state, inputs):
                k, key = inputs
                return self.step(key, k, transition, state)

            state, scanned = jax.lax.scan(body, state, (jnp.arange(num_steps, 1, -1), keys[1:num_steps]))
            infos.append(scanned)
        if num_steps >= 1:
            state, last = self.step(keys[num_steps], 1, transition, state)
            infos.append(jax.tree.map(lambda v: v[None], last))
        return state, jax.tree.map(lambda *v: jnp.concatenate(v), *infos)
