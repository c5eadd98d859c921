"""TRI-TSMC: twisted SMC whose twist is learned by trust-region iterations.

Each iteration runs sequential importance sampling with the current twist (so the
N paths are i.i.d. draws of the twisted path law ``Q_j``), solves the trust-region
dual on their path log-weights for ``tau``, tempers the weights to ``R^tau`` (the
escort law ``Q_j^(1 - tau) pi^tau``, the closest law to the target within
``KL <= kl_budget`` of ``Q_j``), and projects it back on the twist family by
weighted maximum likelihood of the paths. The answer is a twisted SMC run with
the learned twist.
"""
import time
from collections import namedtuple

import torch
from tqdm.auto import tqdm

from ..smc.trust_region import trust_region_step
from ..chains.denoising import DenoisingKernel
from ..twists.linear import LinearTwist
from ..twists.neural import NeuralTwist
from .recycling import recycle
from .twisted_smc import TwistedSMC

IterationStats = namedtuple(
    "IterationStats",
    ["tau", "kl", "ess", "ess_per_step", "log_evidence", "mean_reward", "denoiser_evaluations", "seconds",
     "num_particles"],
)
IterationStats.__doc__ = """\
One TRI-TSMC iteration: ``tau`` and the realised ``kl`` of the trust-region step;
``ess`` of the run's path weights and ``ess_per_step``; the run's ``log_evidence``;
``mean_reward`` of its paths; ``denoiser_evaluations`` the run spent (the kernel's
own count, or one per particle and transition for kernels that keep none); and
wall-clock ``seconds``; ``num_particles`` of the run.
"""


def default_twist(structure, transitions, optim=None):
    """The twist family for the chain's kernel, from a first run's ``transitions``: a neural
    twist for denoising (diffusion) kernels, a per-step log-linear twist otherwise (exact
    for linear-Gaussian chains, fit in closed form, so ``optim`` is not used). It is built
    on the device of the states."""
    value = transitions[0].value
    if all(record.base_mean is None for record in transitions):
        chain = repr(structure.name) if structure.name else "(a hand-written loop)"
        raise ValueError(
            f"TRITSMC learns its default twist from the chain's Gaussian transitions, and the chain {chain} has "
            f"none (its states are {value.dtype}): steer it with TwistedSMC (bootstrap, or a twist of your own "
            "with propose(k, base)), or pass TRITSMC a twist whose fit() learns from these transitions"
        )
    with torch.device(value.device):
        if isinstance(structure.kernel, DenoisingKernel):
            return NeuralTwist(structure.num_steps, value.shape[1:], optim=optim)
        return LinearTwist(structure.num_steps, value.shape[1:], smoothing=2.0).to(value.dtype)


class TRITSMC:
    """Trust-region iterative twisted SMC.

    :param model: a Pyro model with a chain and reward sites (see :class:`TwistedSMC`).
    :param twist: a twist with ``log_psi(k, x)`` and ``fit(transitions, log_weights,
        log_reward)``, or ``None`` for the kernel's default family (see ``default_twist``),
        built after a first iteration of plain ancestral proposals.
    :param int num_particles: particles per learning iteration.
    :param int final_num_particles: particles of the final run (default ``num_particles``):
        a twist learned on few particles serves a larger final run.
    :param int num_iterations: trust-region iterations before the final run.
    :param float kl_budget: ``eps``, the KL allowed between successive path laws.
    :param resampling, ess_threshold: resampling of the final run (learning runs never resample).
    :param str final_proposal: the final run's proposal (see :class:`TwistedSMC`) in place of the
        twist's own; ``"newton"`` also follows the learned twist's curvature (one backward pass
        through the twist per state dimension and step, no denoiser call).
    :param optim: ``optim(parameters)``, the optimiser of a default family fit by gradient
        steps (the neural twist); a twist passed in brings its own.
    :param bool recycle: ``run()`` returns the learning runs pooled with the final run
        (see :func:`~pyro_twist.infer.recycling.recycle`) instead of the final run alone,
        which stays in ``final_result``; the learning evaluations then count in the answer.
    :param bool progress_bar: show a progress bar over iterations.
    """

    def __init__(self, model, twist=None, num_particles=256, num_iterations=8, kl_budget=0.5,
                 resampling="systematic", ess_threshold=0.5, final_num_particles=None, final_proposal=None, optim=None,
                 recycle=False, progress_bar=True):
        if int(num_iterations) != num_iterations or num_iterations < 0:
            raise ValueError(f"num_iterations must be a non-negative integer, got {num_iterations!r}")
        if not kl_budget > 0:
            raise ValueError(f"kl_budget must be positive, got {kl_budget!r}")
        if final_num_particles is not None and (int(final_num_particles) != final_num_particles
                                                or final_num_particles < 1):
            raise ValueError(f"final_num_particles must be a positive integer or None, got {final_num_particles!r}")
        if twist is not None and not callable(getattr(twist, "fit", None)):
            raise TypeError(
                "TRITSMC learns its twist: the twist needs fit(transitions, log_weights, log_reward) "
                "besides log_psi(k, x); use TwistedSMC to run a fixed twist"
            )
        if twist is not None and optim is not None:
            raise ValueError("optim configures the default twist family: pass it to your twist's constructor instead")
        self.model = model
        self.twist = twist
        self.optim = optim
        self.num_particles = num_particles
        self.num_iterations = int(num_iterations)
        self.kl_budget = kl_budget
        self.progress_bar = progress_bar
        self.final = TwistedSMC(model, final_num_particles or num_particles, twist=twist, resampling=resampling,
                                ess_threshold=ess_threshold, progress_bar=False, proposal=final_proposal)
        self.learner = TwistedSMC(model, num_particles, twist=twist, ess_threshold=0.0, progress_bar=False,
                                  record_transitions=True)
        self.recycle = recycle
        self.learning_results = []
        self.final_result = None
        self.history = []

    def _evaluations(self, structure):
        kernel = structure.kernel
        return getattr(kernel, "num_evaluations", None)

    def step(self, *args, **kwargs):
        """One trust-region iteration; returns its :class:`IterationStats`."""
        structure = self.learner.chain_structure(*args, **kwargs)
        start, evaluations = time.perf_counter(), self._evaluations(structure)
        self.learner.twist = self.twist
        result = self.learner._run(structure, args, kwargs)  # the chain just found serves the run
        trust_region = trust_region_step(result.log_weights, self.kl_budget)
        if self.twist is None:
            self.twist = default_twist(structure, result.transitions, self.optim)
        self.twist.fit(result.transitions, trust_region.log_weights, result.log_reward)
        if self.recycle:
            result.transitions = None  # the fit's records are the bulk of a run's memory
            self.learning_results.append(result)
        used = self._evaluations(structure)
        stats = IterationStats(
            tau=trust_region.tau,
            kl=trust_region.kl,
            ess=result.ess_final.item(),
            ess_per_step=result.ess,
            log_evidence=result.log_evidence.item(),
            mean_reward=result.log_reward.mean().item(),
            denoiser_evaluations=(self.num_particles * structure.num_steps if used is None else used - evaluations),
            seconds=time.perf_counter() - start,
            num_particles=self.num_particles,
        )
        self.history.append(stats)
        return stats

    def run(self, *args, **kwargs):
        """Learn the twist, then run twisted SMC with it; returns the final :class:`SMCResult`
        (pooled with this call's learning runs when ``recycle``)."""
        self.learning_results = []
        iterations = tqdm(range(self.num_iterations), disable=not self.progress_bar, desc="TRI-TSMC")
        for _ in iterations:
            stats = self.step(*args, **kwargs)
            iterations.set_postfix(tau=f"{stats.tau:.3f}", ess=f"{stats.ess:.0f}", log_Z=f"{stats.log_evidence:.3f}")
        self.final.twist = self.twist
        self.final_result = self.final.run(*args, **kwargs)
        return recycle(self.learning_results + [self.final_result]) if self.recycle else self.final_result
