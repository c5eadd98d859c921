"""Particle marginal Metropolis-Hastings: MCMC over a model's global parameters with the chain
marginalised by SMC (Andrieu, Doucet and Holenstein 2010).

A model's latent sites before its chain (a noise level, a blur width: one value for the whole
model) cannot be particles: resampling would tear them from the states they produced. Fixed by
``pyro.condition``, they leave a model whose twisted SMC ``Z_hat`` is an unbiased estimate of
``p(theta) p(y | theta)`` (the conditioned sites enter the weights as observations), and a
Metropolis-Hastings chain that keeps each state's estimate until a proposal replaces it samples
``p(theta | y)`` exactly (the pseudo-marginal argument of Andrieu and Roberts 2009), however noisy
the estimate: noise only lowers the acceptance rate.
"""
import math
import warnings

import pyro
import torch
from pyro.distributions.transforms import biject_to
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.poutine.messenger import Messenger

from .structure import is_latent
from .twisted_smc import TwistedSMC


class _ChainReached(Exception):
    pass


class _GlobalSites(Messenger):
    """Records the latent sites a model samples before its chain, then stops the model."""

    def __init__(self):
        super().__init__()
        self.sites = {}

    def _pyro_markov_chain(self, msg):
        raise _ChainReached

    def _pyro_sample(self, msg):
        if is_latent(msg) and "chain" in msg["infer"]:
            raise _ChainReached

    def _pyro_post_sample(self, msg):
        if is_latent(msg):
            self.sites[msg["name"]] = msg


def global_sites(model, args, kwargs):
    """The latent sites ``model`` samples before its chain, as ``{name: site}`` (one prior draw)."""
    finder = _GlobalSites()
    try:
        with torch.no_grad(), pyro.poutine.block(), finder:
            model(*args, **kwargs)
    except _ChainReached:
        return finder.sites
    raise ValueError("PMMH marginalises a chain written with markov_chain or diffusion_chain, and the model has none "
                     "(a hand-written loop's sites cannot be told from global parameters)")


def on_global_values(model):
    """``model`` as a function of its global sites' values too: ``conditioned(*args, global_values, **kwargs)``
    runs ``model(*args, **kwargs)`` with the sites in ``global_values`` (``{name: value}``) fixed. One model
    serves every PMMH step, and a twist bound to a run's arguments sees the values (its context)."""

    def conditioned(*args, global_values, **kwargs):
        return pyro.condition(model, data=global_values)(*args, **kwargs)

    return conditioned


class PMMH(MCMCKernel):
    """Pseudo-marginal Metropolis-Hastings over the model's global sites, as a kernel for
    ``pyro.infer.MCMC``.

    Each step proposes a Gaussian random walk on the unconstrained scale, runs one SMC pass on the
    model with the proposed values fixed, and accepts with the ratio of the estimated evidences
    (the conditioned sites' prior included) times the change of variables. During warmup the
    step size follows the acceptance rate to ``target_accept_prob`` (Robbins-Monro on its
    logarithm), and from half-way on each site's scale is the spread of its warmup draws.

    :param model: a Pyro model with latent sites before a ``markov_chain``/``diffusion_chain``.
    :param smc: ``smc(conditioned_model)`` gives the sampler of one pass (default: bootstrap
        :class:`TwistedSMC` with 256 particles); any sampler of this package, a learned twist's too.
    :param learn_twist: ``learn_twist(conditioned_model)`` gives a :class:`TRITSMC` that learns a
        twist half-way through warmup, amortised over the global sites: its iterations run at warmup
        draws of them spread over the second quarter of warmup (the chain is in the posterior by
        then), one draw per iteration, each fit on its own draw's paths. From then on each step is a
        run of the ``TRITSMC``'s final sampler (its final particle count, resampling and proposal) with
        that twist, in place of ``smc``. A twist takes the global sites' values as input through its context: PMMH runs
        every pass as ``run(*args, global_values={name: value}, **kwargs)`` on the model conditioned
        on them, so e.g. ``NeuralTwist(..., context=lambda *args, global_values, **kwargs:
        global_values["sigma"].log().reshape(1), context_dim=1)``. Any twist keeps the estimate
        unbiased, so the chain stays exact; a good one lowers the estimate's variance.
    :param float step_size: the random walk's initial standard deviation (unconstrained scale).
    :param bool adapt_step_size: adapt the step size and per-site scales during warmup.
    :param float target_accept_prob: the acceptance rate warmup aims at. With a noisy estimate
        the best rate is lower than the exact-likelihood 0.234 (Sherlock et al. 2015 find 0.07-0.15
        in high dimension), so the default is 0.25 for the few global parameters models have.
    """

    def __init__(self, model, smc=None, learn_twist=None, step_size=0.5, adapt_step_size=True,
                 target_accept_prob=0.25):
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size!r}")
        self.model = model
        self.smc = smc or (lambda conditioned: TwistedSMC(conditioned, 256, progress_bar=False))
        self.learn_twist = learn_twist
        self.step_size = step_size
        self.adapt_step_size = adapt_step_size
        self.target_accept_prob = target_accept_prob
        self.transforms = None
        self._initial_params = None
        self.log_evidence = []  # each accepted state's estimate, in order of the chain's draws
        self.conditioned_model = on_global_values(model)
        self._reset()

    def _reset(self):
        self._state = None  # (params, log target) of the current state
        self.twist_learner = None  # the TRITSMC that learned this chain's twist, once it has
        self.sampler = None  # the sampler of every pass: smc's until a twist is learned
        self._chain_draws = []  # the warmup draws, for the twist's learning
        self._num_steps, self._num_accepted = 0, 0
        self._log_step = math.log(self.step_size)
        self._scale = None

    def setup(self, warmup_steps, *args, **kwargs):
        self._warmup_steps = warmup_steps
        self._args, self._kwargs = args, kwargs
        sites = global_sites(self.model, args, kwargs)
        if not sites:
            raise ValueError("the model samples no latent site before its chain: there is nothing for PMMH to "
                             "sample; run TwistedSMC (or TRITSMC) on it directly")
        self.transforms = {name: biject_to(site["fn"].support).inv for name, site in sites.items()}
        if self._initial_params is None:
            self._initial_params = {name: self.transforms[name](site["value"]) for name, site in sites.items()}
        self._reset()
        self.sampler = self.smc(self.conditioned_model)

    @property
    def initial_params(self):
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params):
        self._initial_params = params

    def constrained(self, params):
        return {name: self.transforms[name].inv(value) for name, value in params.items()}

    def log_target(self, params):
        """One SMC estimate of ``log p(theta, y)`` at the unconstrained ``params``, plus the log-Jacobian
        of the map to them; returns it and the run's result."""
        values = self.constrained(params)
        log_jacobian = sum(self.transforms[name].inv.log_abs_det_jacobian(params[name], values[name]).sum()
                           for name in params)
        with warnings.catch_warnings():
            # a noisy estimate is valid here (it only lowers the acceptance rate): no warning per step
            warnings.filterwarnings("ignore", message=".*heavy-tailed \\(Pareto k-hat")
            result = self.sampler.run(*self._args, global_values=values, **self._kwargs)
        return result.log_evidence.item() + float(log_jacobian), result

    def _learn_twist(self):
        """Learn the twist over the draws of warmup's second quarter, one per iteration, evenly spaced;
        the current state's estimate is then redrawn with it."""
        learner = self.learn_twist(self.conditioned_model)
        draws = self._chain_draws[len(self._chain_draws) // 2:]
        for i in range(learner.num_iterations):
            values = self.constrained(draws[i * len(draws) // learner.num_iterations])
            learner.step(*self._args, global_values=values, **self._kwargs)
        self.twist_learner = learner
        learner.final.twist = learner.twist  # the learner's own final sampler, with its settings
        self.sampler = learner.final
        params = self._state[0]
        self._state = (params, self.log_target(params)[0])

    def sample(self, params):
        if self._state is None or self._state[0] is not params:  # a first step, or a state set from outside
            self._state = (params, self.log_target(params)[0])
        current, current_log_target = self._state
        if self._scale is None:
            self._scale = {name: torch.ones_like(value) for name, value in current.items()}
        step = math.exp(self._log_step)
        proposal = {name: value + step * self._scale[name] * torch.randn_like(value)
                    for name, value in current.items()}
        proposal_log_target, _ = self.log_target(proposal)
        log_ratio = proposal_log_target - current_log_target
        accepted = math.log(torch.rand(()).item()) < log_ratio
        if accepted:
            self._state = (proposal, proposal_log_target)
        self._num_steps += 1
        self._num_accepted += accepted
        if self._num_steps <= self._warmup_steps:
            self._chain_draws.append(self._state[0])
            self._adapt(min(1.0, math.exp(min(log_ratio, 0.0))))
            if self._num_steps == max(self._warmup_steps // 2, 1) and self.learn_twist is not None:
                self._learn_twist()
        else:
            self.log_evidence.append(self._state[1])
        return self._state[0]

    def _adapt(self, accept_prob):
        if not self.adapt_step_size:
            return
        self._log_step += (accept_prob - self.target_accept_prob) / self._num_steps ** 0.6
        if self._num_steps == self._warmup_steps // 2 and self._num_steps >= 20:
            # per-site spread of the draws so far; the step size restarts its search at that scale
            self._scale = {name: torch.stack([draw[name] for draw in self._chain_draws]).std(0).clamp(min=1e-3)
                           for name in self._state[0]}
            self._log_step = math.log(2.38 / math.sqrt(sum(v.numel() for v in self._scale.values())))

    @property
    def accept_rate(self):
        return self._num_accepted / max(self._num_steps, 1)

    def logging(self):
        return {"step size": f"{math.exp(self._log_step):.3g}", "acc. prob": f"{self.accept_rate:.3f}"}

    def diagnostics(self):
        return {"acceptance rate": self.accept_rate, "step size": math.exp(self._log_step)}
