"""Twisted Sequential Monte Carlo over the chain of a Pyro model.

The model runs once, vectorised over a particle plate. At every chain site the
handler draws the particles' next states from the twisted proposal, weights them

    log w_k = log p(x_{k-1} | x_k) + log psi_{k-1}(x_{k-1}) - log psi_k(x_k) - log q(x_{k-1} | x_k),

resamples when the effective sample size falls below ``ess_threshold * N``, and
hands the resampled states back to the model as the site's value. Every factor
and observed site adds its log-density to the weights; after the model returns,
the last twist is divided out, so the weights target
``p(x_{0:K}) * exp(sum of factors)`` whatever the twist.
"""
import math
import warnings
from collections import namedtuple

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger
from tqdm.auto import tqdm
from twist_core.diagnostics import KHAT_UNRELIABLE

from ..smc.resampling import RESAMPLERS, get_resampler
from ..smc.weights import checked_ess, log_mean_exp
from ..twists.gaussian import bounded_shift, newton_moments, newton_step_parts, value_and_grad
from .lookahead import lookahead_parts
from .memory import check_memory
from .result import SMCResult
from .structure import find_chain, invalid_factor_error, is_latent, observed_log_prob, per_particle_site_error

PROPOSALS = ("gradient", "newton", "gradient_at_state", "bootstrap")


def _base_family(fn):
    while isinstance(fn, (dist.Independent, dist.ExpandedDistribution)):
        fn = fn.base_dist
    return type(fn)


def _is_gaussian(fn):
    return issubclass(_base_family(fn), dist.Normal)


TransitionRecord = namedtuple(
    "TransitionRecord",
    ["step", "value", "state", "base_mean", "base_variance", "proposal_mean", "proposal_variance"],
)
TransitionRecord.__doc__ = """\
One chain step of a run, aligned with the particles after that step's resampling:
the new states ``x_k`` (``value``), the states ``x_{k+1}`` they were drawn from
(``state``; ``None`` for the first state), and the means and variances of the base
transition and of the proposal that drew them. The moments are ``None`` for a step whose
transition is not Gaussian (a deterministic or discrete step).
"""


def _transition_record(k, x, state, base, proposal, index):
    if state is not None and index is not None:
        state = state[index]
    if not _is_gaussian(base):
        return TransitionRecord(k, x, state, None, None, None, None)
    moments = [m.expand_as(x) for m in (base.mean, base.variance, proposal.mean, proposal.variance)]
    if index is not None:
        moments = [m[index] for m in moments]
    return TransitionRecord(k, x, state, *moments)


def _divergence_error(name, k, x, base, proposal):
    """The error to raise, in place of a weight error, when a Gaussian proposal moved the base mean
    by far more than a standard deviation or drew non-finite states; ``None`` otherwise."""
    if proposal is base or not (_is_gaussian(base) and _is_gaussian(proposal)):
        return None
    peak, shift, scale = torch.stack([x.abs().max(), (proposal.mean - base.mean).abs().max(),
                                      base.stddev.max()]).tolist()
    if math.isfinite(peak) and shift <= 1e3 * scale:
        return None
    return ValueError(
        f"the proposal at chain site {name!r} (step k={k}) diverged: it moved the base mean by up "
        f"to {shift:.3g} (the base standard deviation is at most {scale:.3g}) and its states reach "
        f"|x| = {peak:.3g}. Bound the guidance with max_shift (TDS bounds it at 1.0 by default), "
        "or smooth the reward (a higher temperature)"
    )


def floor_zero_twist(log_psi, twist_floor):
    """``log_psi`` with its ``-inf`` values raised to ``twist_floor`` nats below its lowest finite value
    (to ``-twist_floor`` where none is finite); NaN and ``+inf`` are left for the weight checks.

    A twist is a guess of ``E[exp(reward) | x_k]``. Where it says zero but the chain can still reach
    states the reward accepts (a look-ahead through a denoiser's guess of ``x_0``), the particles it
    drops take their share of the evidence with them: ``log_evidence`` comes out low and the
    accepted region is under-sampled. Any positive twist keeps the weights exact; a hard constraint
    in the reward still gives zero weight to the final states it rules out.
    """
    finite = torch.isfinite(log_psi)
    lowest = torch.where(finite, log_psi, torch.full_like(log_psi, math.inf)).min()
    floor = torch.where(torch.isfinite(lowest), lowest, torch.zeros_like(lowest)) - twist_floor
    return torch.where(torch.isneginf(log_psi), floor, log_psi)


class _UnbatchedRewardSites(Messenger):
    """Notes, inside the particle plate and so before it broadcasts them, the observed and factor sites
    after the chain's start whose batch shape is empty: one value for all particles (``x0.sum()`` where
    ``x0.sum(-1)`` was meant). Before the chain such a site is a global term (a prior of a parameter
    fixed by ``pyro.condition``, as in :class:`~pyro_twist.infer.pmmh.PMMH`) and belongs there."""

    def __init__(self):
        super().__init__()
        self.sites = []
        self.chain_started = False

    def _pyro_sample(self, msg):
        if is_latent(msg):
            self.chain_started = True
        elif msg["is_observed"] and self.chain_started and len(msg["fn"].batch_shape) == 0:
            self.sites.append(msg["name"])


class _TwistedSMCMessenger(Messenger):
    def __init__(self, structure, num_particles, twist, proposal, resampler, ess_threshold, resampling_steps,
                 progress_bar, record_transitions, max_shift, twist_floor, keep_paths):
        super().__init__()
        self.keep_paths = keep_paths
        self.max_shift, self.twist_floor = max_shift, twist_floor
        self.structure = structure
        self.num_particles = num_particles
        self.twist = twist
        self.proposal = proposal or getattr(twist, "proposal", "gradient")
        if self.proposal not in PROPOSALS:
            raise ValueError(f"twist.proposal must be one of {PROPOSALS}, got {self.proposal!r}")
        self.resampler = resampler
        self.ess_threshold = ess_threshold
        self.resampling_steps = resampling_steps
        self.gradient_batch_size = getattr(twist, "batch_size", None)
        self.progress = tqdm(total=structure.num_steps + 1, disable=not progress_bar, desc="twisted SMC", leave=False)
        self.device = structure.device
        self.log_w = torch.zeros(num_particles, dtype=torch.float64, device=self.device)
        self.log_evidence = torch.zeros((), dtype=torch.float64, device=self.device)
        self.log_psi = None  # log psi_k(x_k) of the current particles
        self.grad_log_psi = None  # its gradient at x_k, for proposals that use it
        self.chain_started = self.chain_ended = False
        self.reward_log_probs = {}  # each factor and observed site after the chain: its log-density (N,)
        self.observed = {}  # the observed sites' data
        self.sites, self.values, self.ancestors, self.ess, self.resampled = [], [], [], [], []
        self.after_chain = {}
        self.log_reward = torch.zeros(num_particles, dtype=torch.float64, device=self.device)
        self.transitions = [] if record_transitions else None
        self.step_log_weights = [] if record_transitions else None

    def _step_of(self, msg):
        if self.structure.steps is not None:
            return self.structure.steps.get(msg["name"])
        if msg["infer"].get("chain") == self.structure.name:
            return msg["infer"]["step"]
        return None

    def _pyro_sample(self, msg):
        if not is_latent(msg):
            return
        k = self._step_of(msg)
        if k is not None:
            self._propagate(msg, k)
        elif not self.chain_started:
            raise per_particle_site_error(msg["name"], self.structure.name)
        elif msg["infer"].get("chain", self.structure.name) != self.structure.name:
            raise ValueError(
                f"site {msg['name']!r} belongs to a second chain {msg['infer']['chain']!r} after the chain "
                f"{self.structure.name!r}: inference steers one chain per model. Write them as one chain "
                "whose state holds both."
            )

    def _pyro_post_sample(self, msg):
        if msg["is_observed"]:
            log_prob = observed_log_prob(msg, self.num_particles)
            self.log_w = self.log_w + log_prob
            if self.chain_ended:
                self.reward_log_probs[msg["name"]] = log_prob.expand(self.num_particles)
                if not isinstance(msg["fn"], dist.Unit):  # pyro.factor sites have no data
                    self.observed[msg["name"]] = msg["value"]
                self.log_reward = self.log_reward + log_prob
        elif self.chain_ended and self._step_of(msg) is None:
            self.after_chain[msg["name"]] = msg["value"]

    def _proposal(self, k, base):
        twist = self.twist
        if twist is None or self.proposal == "bootstrap" or issubclass(_base_family(base), dist.Delta):
            return base
        if hasattr(twist, "propose"):
            return twist.propose(k, base)
        if not _is_gaussian(base):
            return base
        event_dim = len(base.event_shape)
        if self.proposal == "newton":
            grad, hess_diag = newton_step_parts(twist.log_psi, k, base.mean)
            mean, variance = newton_moments(base.mean, base.variance, grad, hess_diag)
            return dist.Normal(mean, variance.sqrt()).to_event(event_dim)
        if self.proposal == "gradient_at_state":
            grad = self.grad_log_psi
            if grad is None:
                return base
        else:
            grad = self._value_and_grad(k, base.mean)[1]
        shift = bounded_shift(base.variance * grad, base.variance, self.max_shift)
        return dist.Normal(base.mean + shift, base.stddev).to_event(event_dim)

    def _value_and_grad(self, k, x):
        return value_and_grad(self.twist.log_psi, k, x, self.gradient_batch_size)

    def _twist_at(self, k, x):
        if self.proposal == "gradient_at_state":
            log_psi, self.grad_log_psi = self._value_and_grad(k, x)
        else:
            log_psi = self.twist.log_psi(k, x)
        if tuple(log_psi.shape) != (self.num_particles,):
            raise ValueError(
                f"twist.log_psi({k}, x) returned shape {tuple(log_psi.shape)} for {self.num_particles} particles: "
                f"it must return one value per particle, shape ({self.num_particles},) (reduce over the state's "
                "own dimensions, not over particles)"
            )
        log_psi = floor_zero_twist(log_psi, self.twist_floor)
        if self.log_psi is not None and hasattr(self.twist, "combine"):
            log_psi = self.twist.combine(self.log_psi, log_psi)
        return log_psi

    def _propagate(self, msg, k):
        name, base = msg["name"], msg["fn"]
        if self.chain_ended:
            raise ValueError(
                f"chain site {name!r} comes after the chain {self.structure.name or ''!r} has ended: the model "
                "runs a second chain under the same name. Site names must be unique (as everywhere in Pyro), and "
                "inference steers one chain per model: write them as one chain whose state holds both."
            )
        if tuple(base.batch_shape) != (self.num_particles,):
            raise ValueError(
                f"chain site {name!r} has batch shape {tuple(base.batch_shape)}; inference runs "
                f"{self.num_particles} particles along a leading dimension and needs batch shape "
                f"({self.num_particles},): declare the state's dimensions with .to_event(...)"
            )
        proposal = self._proposal(k, base)
        x = proposal.sample()
        if not self.chain_started and x.device != self.device:
            raise ValueError(
                f"chain site {name!r} has states on {x.device}, but the chain was found on {self.device}: "
                "build a new sampler after moving the model to another device"
            )
        self.chain_started = True
        log_w = self.log_w
        if proposal is not base:
            log_w = log_w + base.log_prob(x) - proposal.log_prob(x)
        if self.twist is not None:
            log_psi = self._twist_at(k, x)
            log_w = log_w + log_psi - (0.0 if self.log_psi is None else self.log_psi)
            self.log_psi = log_psi
        try:
            self.ess.append(checked_ess(log_w, f"at chain site {name!r} (step k={k})"))
        except ValueError as error:
            divergence = _divergence_error(name, k, x, base, proposal)
            if divergence is None:
                raise
            raise divergence from error
        self.log_w = log_w
        if self.step_log_weights is not None:
            self.step_log_weights.append(log_w)
        ancestors = proposal_index = None
        allowed = self.resampling_steps is None or k in self.resampling_steps
        if allowed and self.ess[-1] < self.ess_threshold * self.num_particles:
            ancestors = self._checked_ancestors(self.resampler(log_w, self.num_particles))
            x = x[ancestors]
            proposal_index = ancestors
            self._resampled(ancestors)
        if self.transitions is not None:
            state = self.values[-1] if self.values else None
            self.transitions.append(_transition_record(k, x, state, base, proposal, proposal_index))
        self.resampled.append(ancestors is not None)
        self.sites.append(name)
        if self.keep_paths:
            self.values.append(x)
            self.ancestors.append(ancestors)
        else:  # the result needs the last states only
            self.values, self.ancestors = [x], [None]
        msg["value"] = x
        msg["done"] = True
        self.chain_ended = k == 0
        self.progress.update()

    def _checked_ancestors(self, ancestors):
        n = self.num_particles
        if not (isinstance(ancestors, torch.Tensor) and ancestors.shape == (n,) and not ancestors.is_floating_point()):
            raise ValueError(
                f"the resampler returned {type(ancestors).__name__} of shape {tuple(getattr(ancestors, 'shape', ()))}: "
                f"it must return ({n},) integer ancestor indices, resampler(log_w, num_samples) -> LongTensor"
            )
        if self.resampler not in RESAMPLERS.values():  # the built-in schemes need no check (and no host read)
            low, high = torch.stack([ancestors.min(), ancestors.max()]).tolist()
            if low < 0 or high >= n:
                raise ValueError(f"the resampler returned ancestor indices in [{low}, {high}]: they must lie in "
                                 f"[0, {n - 1}]")
        return ancestors

    def _resampled(self, ancestors):
        self.log_evidence = self.log_evidence + log_mean_exp(self.log_w)
        self.log_w = torch.zeros_like(self.log_w)
        if self.log_psi is not None:
            self.log_psi = self.log_psi[ancestors]
        if self.grad_log_psi is not None:
            self.grad_log_psi = self.grad_log_psi[ancestors]

    def finish(self):
        self.progress.close()
        if self.log_psi is not None:
            self.log_w = self.log_w - self.log_psi
        checked_ess(self.log_w, "after the reward sites at the end of the model")
        self.log_evidence = self.log_evidence + log_mean_exp(self.log_w)


class TwistedSMC:
    """Twisted SMC over the diffusion (or any Markov) chain of a Pyro model.

    :param model: a Pyro model written for one particle, with a chain
        (``markov_chain``/``diffusion_chain``, or a hand-written loop of sample sites)
        followed by ``pyro.factor`` or observed sites: the reward.
    :param int num_particles: number of particles N.
    :param twist: ``None`` (bootstrap proposal) or any object with ``log_psi(k, x)``
        returning one value per particle, approximating ``log E[exp(reward) | x_k]``
        for ``k = num_steps, ..., 0``. Gaussian sites are proposed from the base
        Normal with its mean shifted by variance times ``grad log_psi(k, .)`` at that
        mean (exact for twists linear in ``x``); a twist may instead define
        ``propose(k, base)`` or set ``proposal`` to ``"newton"`` (mean and variance from the
        gradient and the Hessian's diagonal: exact for log-quadratic twists, one backward
        pass per state dimension), ``"bootstrap"`` or ``"gradient_at_state"``;
        a twist with ``bind(*args, **kwargs)`` is bound to each run's arguments, and one with
        ``batch_size`` has its gradients taken on at most that many particles at a time.
        Everything the sampler makes lives on the device of the chain's states; a twist that
        is an ``nn.Module`` is moved there by its owner.
    :param str proposal: one of those proposal names, in place of the twist's own.
    :param resampling: ``"systematic"``, ``"stratified"``, ``"multinomial"``, ``"residual"``,
        or a callable ``(log_w, num_samples) -> ancestors``.
    :param float ess_threshold: resample when ESS < ``ess_threshold * N`` (0: never, 1: always).
    :param resampling_steps: the steps ``k`` at which resampling may happen (default: all).
    :param bool progress_bar: show a progress bar over the chain's steps.
    :param bool record_transitions: keep each step's base and proposal moments in
        ``result.transitions`` (what twist learning fits to).
    :param float max_shift: a bound on gradient proposals' guidance: the shift of the base mean is
        scaled down where its norm exceeds ``max_shift`` times the norm of the base standard deviation
        (``None``: unbounded). A sharp reward's gradient can otherwise throw states far off the data
        (the chain cannot follow it); the weights stay exact either way.
    :param float twist_floor: where the twist is zero at a particle (``log_psi = -inf``, e.g. a
        look-ahead through a hard constraint), it is raised to ``twist_floor`` nats below the lowest
        positive twist value among the particles at that step (see :func:`floor_zero_twist`): a zero
        twist where the chain can still reach accepted states would bias ``log_evidence``. Larger
        values steer harder away from such particles, at the cost of rare large weights.
    :param bool keep_paths: keep every step's states and ancestors, so that ``result.trajectories()``
        gives whole paths (memory ``K * N * d``); ``False`` keeps the final states only (memory
        ``N * d``), and the trajectories hold the last chain site and the sites after the chain.
        Before a run starts, the memory its kept states need is estimated from one particle, and a
        run whose need exceeds the device's free memory is refused with the numbers.
    """

    def __init__(self, model, num_particles, twist=None, resampling="systematic", ess_threshold=0.5,
                 resampling_steps=None, progress_bar=True, record_transitions=False, proposal=None, max_shift=None,
                 twist_floor=1.0, keep_paths=True):
        if int(num_particles) != num_particles or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        if proposal is not None and proposal not in PROPOSALS:
            raise ValueError(f"proposal must be one of {PROPOSALS}, got {proposal!r}")
        if not 0 <= ess_threshold <= 1:
            raise ValueError(f"ess_threshold must lie in [0, 1], got {ess_threshold!r}")
        if twist is not None and not callable(getattr(twist, "log_psi", None)):
            raise TypeError("twist must have a method log_psi(k, x) returning one value per particle")
        self.model = model
        self.num_particles = int(num_particles)
        self.twist = twist
        self.resampler = get_resampler(resampling)
        self.ess_threshold = ess_threshold
        if resampling_steps is not None and not hasattr(resampling_steps, "__iter__"):
            raise ValueError(
                f"resampling_steps must be a collection of steps k (e.g. range(0, 50, 5) or [40, 20]), "
                f"got {resampling_steps!r}"
            )
        self.resampling_steps = None if resampling_steps is None else set(resampling_steps)
        self.progress_bar = progress_bar
        self.record_transitions = record_transitions
        self.proposal = proposal
        if max_shift is not None and not max_shift > 0:
            raise ValueError(f"max_shift must be positive or None, got {max_shift!r}")
        self.max_shift = max_shift
        if not 0 < twist_floor < math.inf:
            raise ValueError(f"twist_floor must be positive and finite, got {twist_floor!r}")
        self.twist_floor = twist_floor
        self.keep_paths = keep_paths

    def chain_structure(self, *args, **kwargs):
        """The model's chain for these arguments: found anew for every run, since the kernel, the
        number of steps or the device may depend on the arguments (one model, several kernels)."""
        return find_chain(self.model, args, kwargs)

    def _twist_for_run(self, structure, args, kwargs):
        if hasattr(self.twist, "bind"):  # a twist that takes the run's arguments as input
            self.twist.bind(*args, **kwargs)
        if getattr(self.twist, "lookahead", False):  # a twist with the look-ahead reward as a feature
            predict_x0, reward, batch_size = lookahead_parts(structure, self.model, args, kwargs,
                                                             type(self.twist).__name__)
            self.twist.set_lookahead(lambda k, x: reward(predict_x0(k, x)), batch_size)
        return self.twist

    def run(self, *args, **kwargs):
        """Run the sampler on ``model(*args, **kwargs)``; returns an :class:`SMCResult`. Warns when the
        final weights' Pareto k-hat is above 0.7 (see :meth:`SMCResult.summary`)."""
        result = self._run(self.chain_structure(*args, **kwargs), args, kwargs)
        khat = result.pareto_khat
        if khat > KHAT_UNRELIABLE:
            warnings.warn(
                f"{type(self).__name__}: the final weights are heavy-tailed (Pareto k-hat {khat:.2f} > "
                f"{KHAT_UNRELIABLE}; ESS {result.ess_final.item():.1f} of {self.num_particles}): a few particles carry "
                "log_evidence and the weighted samples, and neither they nor the standard error can be trusted. "
                "Use a twist closer to the target, or far more particles; result.summary() shows the health check",
                stacklevel=2,
            )
        return result

    def _run(self, structure, args, kwargs):
        """One run on the chain ``structure`` already found for these arguments."""
        check_memory(structure, self.num_particles, self.keep_paths, self.record_transitions)
        engine = _TwistedSMCMessenger(
            structure, self.num_particles, self._twist_for_run(structure, args, kwargs), self.proposal, self.resampler,
            self.ess_threshold, self.resampling_steps, self.progress_bar, self.record_transitions, self.max_shift,
            self.twist_floor, self.keep_paths,
        )
        try:
            unbatched = _UnbatchedRewardSites()
            particles = pyro.plate("particles", self.num_particles, dim=-1, device=structure.device)
            with torch.no_grad(), engine, particles, unbatched:
                self.model(*args, **kwargs)
        except ValueError as error:
            invalid_factor = invalid_factor_error(error)
            if invalid_factor is not None:
                raise invalid_factor from error
            if "inside plate('particles')" not in str(error):
                raise
            raise ValueError(
                f"{error}. Inference runs the model for {self.num_particles} particles along a leading "
                "dimension: declare each site's own dimensions as event dimensions with .to_event(...)"
            ) from error
        engine.finish()
        if unbatched.sites:
            warnings.warn(
                f"site(s) {unbatched.sites} give one value for all {self.num_particles} particles (batch shape ()), "
                "so they steer nothing and only shift log_evidence. If they should depend on each particle's state, "
                "reduce over the state's own dimensions only (x0.sum(-1), not x0.sum()), or use .to_event(...)",
                stacklevel=2,
            )
        if not engine.reward_log_probs:
            warnings.warn(
                "the model has no pyro.factor or observed site after its chain, so there is no "
                "reward to steer toward: this ran as plain sampling",
                stacklevel=2,
            )
        return SMCResult(
            log_evidence=engine.log_evidence,
            log_weights=engine.log_w,
            ess=torch.tensor(engine.ess, dtype=torch.float64, device=structure.device),
            resampled=torch.tensor(engine.resampled, device=structure.device),
            chain_sites=engine.sites,
            chain_values=engine.values,
            ancestors=engine.ancestors,
            after_chain=engine.after_chain,
            log_reward=engine.log_reward,
            reward_log_probs=engine.reward_log_probs,
            observed=engine.observed,
            transitions=engine.transitions,
            step_log_weights=engine.step_log_weights,
        )
