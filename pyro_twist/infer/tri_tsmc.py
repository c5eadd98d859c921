"""TRI-TSMC: twisted SMC whose twist is learned by trust-region iterations.

Each iteration runs sequential importance sampling with the current twist (so the
N paths are i.i.d. draws of the twisted path law ``Q_j``), solves the trust-region
dual on their path log-weights for ``tau``, tempers the weights to ``R^tau`` (the
escort law ``Q_j^(1 - tau) pi^tau``, the closest law to the target within
``KL <= kl_budget`` of ``Q_j``), and projects it back on the twist family by
weighted maximum likelihood of the paths. The answer is a twisted SMC run with
the learned twist.
"""
import copy
import math
import os
import time
import warnings

import torch
from tqdm.auto import tqdm
from twist_core.learning import (
    Candidate, IterationStats, Measurement, best_candidate, disagreement, guarded_run_accepts, learning_diagnosis,
    run_measurement,
)

from ..smc.trust_region import trust_region_step
from ..chains.linear_gaussian import LinearGaussianKernel
from ..twists.linear import LinearTwist
from ..twists.neural import NeuralTwist
from .checkpoint import rng_state, save_whole, set_rng_state
from .recycling import recycle
from .result import SMCResult
from .twisted_smc import TwistedSMC



def resampling_ess(result):
    """The least ESS that the final weights would keep after resampling at any one step, from a run
    without resampling: resampled at step k in proportion to ``w_k``, path ``i`` ends with weight
    ``w_final(i) / w_k(i)``, whose ESS is ``N (sum w_final)^2 / (sum w_k * sum w_final^2 / w_k)``.

    The path ESS cannot see a twist whose values are wrong (its proposals only use their
    gradients, and its values telescope out of the path weights); resampling acts on them, and a
    twist that rates low the paths that carry the mass makes resampling discard that mass.
    """
    log_final = result.log_weights
    log_w = torch.stack(result.step_log_weights)  # (steps, N)
    ratio = torch.where(torch.isfinite(log_w), 2 * log_final - log_w, torch.full_like(log_w, -math.inf))
    log_share = 2 * torch.logsumexp(log_final, 0) - torch.logsumexp(log_w, 1) - torch.logsumexp(ratio, 1)
    return log_share.min().exp().item() * log_final.shape[0]


def default_family(structure, transitions):
    """The twist family for the chain, from a first run's ``transitions``, as a description that
    :func:`build_family` turns into a twist (and a checkpoint keeps): a per-step log-linear twist
    for a :class:`LinearGaussianKernel` (its optimal twist is log-linear; fit in closed form), and a
    neural twist for every other chain (diffusion kernels, ``markov_chain``s and hand-written loops,
    whose value functions are not linear), on the device and in the dtype of the states."""
    value = transitions[0].value
    if all(record.base_mean is None for record in transitions):
        chain = repr(structure.name) if structure.name else "(a hand-written loop)"
        raise ValueError(
            f"TRITSMC learns its default twist from the chain's Gaussian transitions, and the chain {chain} has "
            f"none (its states are {value.dtype}): steer it with TwistedSMC (bootstrap, or a twist of your own "
            "with propose(k, base)), or pass TRITSMC a twist whose fit() learns from these transitions"
        )
    return {
        "kind": "LinearTwist" if isinstance(structure.kernel, LinearGaussianKernel) else "NeuralTwist",
        "num_steps": structure.num_steps,
        "event_shape": list(value.shape[1:]),
        "dtype": str(value.dtype).removeprefix("torch."),
        "device": str(value.device),
    }


def build_family(family, optim=None):
    """A fresh twist of the :func:`default_family` ``family`` (``optim``: the neural twist's optimiser;
    the log-linear twist is fit in closed form)."""
    with torch.device(family["device"]):
        if family["kind"] == "LinearTwist":
            return LinearTwist(family["num_steps"], family["event_shape"], smoothing=2.0).to(
                getattr(torch, family["dtype"]))
        return NeuralTwist(family["num_steps"], family["event_shape"], optim=optim)


class TRITSMC:
    """Trust-region iterative twisted SMC.

    :param model: a Pyro model with a chain and reward sites (see :class:`TwistedSMC`).
    :param twist: a twist with ``log_psi(k, x)`` and ``fit(transitions, log_weights,
        log_reward)``, or ``None`` for the kernel's default family (see ``default_family``),
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
    :param str checkpoint: a file that ``run()`` writes the learning state to after every
        iteration (see :meth:`state_dict`) and, when the file exists before this object has run,
        resumes from: an interrupted ``run()`` started again goes on where it stopped and gives what
        the uninterrupted one would have. Delete the file for a fresh start.
    :param bool progress_bar: show a progress bar over iterations.
    """

    def __init__(self, model, twist=None, num_particles=256, num_iterations=8, kl_budget=0.5,
                 resampling="systematic", ess_threshold=0.5, final_num_particles=None, final_proposal=None, optim=None,
                 recycle=False, checkpoint=None, progress_bar=True):
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
        # every twist measured in this run(), the start first, as twist_core.learning.Candidates
        self._candidates = []
        self._family = twist  # the twist object whose snapshots are restored
        self._default_family = None  # its description, when TRITSMC chose it (see default_family)
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self._iteration, self._first = 0, 0  # iterations done by the current run(), where its history starts
        self._resuming = False
        self._at_best = False
        self._budget = kl_budget

    def _evaluations(self, structure):
        kernel = structure.kernel
        return getattr(kernel, "num_evaluations", None)

    def _snapshot(self):
        if self.twist is None:
            return None
        if callable(getattr(self.twist, "state_dict", None)):
            return {name: value.detach().clone() for name, value in self.twist.state_dict().items()}
        return copy.deepcopy(self.twist)

    def _restore(self, snapshot):
        if snapshot is None:
            self.twist = None  # the base chain: the next fit starts the default family afresh
        elif isinstance(snapshot, dict):
            self.twist = self._family
            self.twist.load_state_dict(snapshot)
        else:
            self.twist = copy.deepcopy(snapshot)

    def step(self, *args, **kwargs):
        """One trust-region iteration, always taken; returns its :class:`IterationStats`. Steps may
        alternate between run arguments (an amortised twist); ``run()`` guards its steps instead."""
        return self._step(args, kwargs, guarded=False)

    def _step(self, args, kwargs, guarded):
        """One iteration. Guarded (within one ``run()``, so for one set of arguments), the run measures
        the current twist by its :func:`twist_score` and ESS; a twist that is not as good as the best one so far
        (``twist_core.learning.best_candidate``) is rejected: the best is restored, the KL budget halved, and
        the next iteration measures the best again before stepping from it. Otherwise the
        trust-region step is taken from the run's paths (and a budget halved before grows back)."""
        structure = self.learner.chain_structure(*args, **kwargs)
        start, evaluations = time.perf_counter(), self._evaluations(structure)
        self.learner.twist = self.twist
        result = self.learner._run(structure, args, kwargs)  # the chain just found serves the run
        ess, log_evidence = result.ess_final.item(), result.log_evidence.item()
        measurement = run_measurement(log_evidence, result.log_evidence_se, ess, resampling_ess(result),
                                      result.pareto_khat, self.num_particles)
        accepted = not guarded or guarded_run_accepts(self._candidates, self._at_best, self._snapshot, measurement)
        tau = kl = math.nan
        budget = self._budget
        if accepted:
            trust_region = trust_region_step(result.log_weights, budget)
            tau, kl = trust_region.tau, trust_region.kl
            if self.twist is None:
                self._default_family = default_family(structure, result.transitions)
                self.twist = self._family = build_family(self._default_family, self.optim)
            self.twist.fit(result.transitions, trust_region.log_weights, result.log_reward)
            self._budget = min(self.kl_budget, 2 * budget)
            self._at_best = False
        else:
            self._restore(self._best().snapshot)
            self._budget = budget / 2
            self._at_best = True
        if self.recycle:
            result.transitions = None  # the fit's records are the bulk of a run's memory
            self.learning_results.append(result)
        used = self._evaluations(structure)
        stats = IterationStats(
            tau=tau,
            kl=kl,
            ess=ess,
            ess_per_step=result.ess,
            log_evidence=log_evidence,
            mean_reward=result.log_reward.mean().item(),
            denoiser_evaluations=(self.num_particles * structure.num_steps if used is None else used - evaluations),
            seconds=time.perf_counter() - start,
            num_particles=self.num_particles,
            score=measurement.score,
            accepted=accepted,
            kl_budget=budget,
            pareto_khat=result.pareto_khat,
        )
        self.history.append(stats)
        return stats

    def run(self, *args, **kwargs):
        """Learn the twist, then run twisted SMC with it; returns the final :class:`SMCResult`
        (pooled with this call's learning runs when ``recycle``). Warns when learning stalls or its
        family stops improving (see :func:`learning_diagnosis`), when no learned twist beat the
        start, and when the final run's ``log_evidence`` disagrees with the learning runs' measure
        of the same twist."""
        if self.checkpoint is not None and not self._resuming and not self.history and os.path.exists(self.checkpoint):
            self.load_state_dict(torch.load(self.checkpoint, weights_only=True))
        if not self._resuming:
            self.learning_results = []
            self._candidates, self._at_best, self._budget = [], False, self.kl_budget
            self._iteration, self._first = 0, len(self.history)
        self._resuming = False
        iterations = tqdm(total=self.num_iterations, initial=min(self._iteration, self.num_iterations),
                          disable=not self.progress_bar, desc="TRI-TSMC")
        while self._iteration < self.num_iterations:
            stats = self._step(args, kwargs, guarded=True)
            self._iteration += 1
            if self.checkpoint is not None:
                save_whole(self.state_dict(), self.checkpoint)
            iterations.update()
            iterations.set_postfix(tau=f"{stats.tau:.3f}", ess=f"{stats.ess:.0f}", log_Z=f"{stats.log_evidence:.3f}")
        iterations.close()
        diagnosis = learning_diagnosis(self.history[self._first:])
        if diagnosis is not None:
            warnings.warn(f"TRITSMC: {diagnosis}", stacklevel=2)
        best = self._keep_best() if self._candidates else None
        self.final.twist = self.twist
        self.final_result = self.final.run(*args, **kwargs)
        if best is not None:
            self._check_agreement(best, self.final_result)
        return recycle(self.learning_results + [self.final_result]) if self.recycle else self.final_result

    def state_dict(self):
        """The learning state of the current ``run()``, as tensors, numbers, strings, lists and dicts
        (``torch.save`` it; ``torch.load(..., weights_only=True)`` reads it): the twist's parameters
        and its own learning state (a :class:`NeuralTwist`'s replayed fits; each fit creates its
        optimiser afresh, so there is no optimiser state), the default family's description, the
        twists measured with their scores, the KL budget, ``history``, the iterations done, this
        run's learning runs when ``recycle``, and the random number generators' states."""
        if self.twist is not None and not callable(getattr(self.twist, "state_dict", None)):
            raise TypeError(f"TRITSMC can checkpoint a twist with state_dict() and load_state_dict() (a "
                            f"torch.nn.Module), not a {type(self.twist).__name__}")
        twist = None
        if self.twist is not None:
            twist = {"parameters": self.twist.state_dict(),
                     "learning": self.twist.learning_state() if hasattr(self.twist, "learning_state") else None}
        return {
            "default_family": self._default_family,
            "twist": twist,
            "candidates": [{"snapshot": c.snapshot, "measurements": [m._asdict() for m in c.measurements]}
                           for c in self._candidates],
            "at_best": self._at_best,
            "budget": self._budget,
            "iteration": self._iteration,
            "first": self._first,
            "history": [stats._asdict() for stats in self.history],
            "learning_results": [result.state_dict() for result in self.learning_results],
            "rng": rng_state(),
        }

    def load_state_dict(self, state):
        """Take up learning from :meth:`state_dict`: the next ``run()`` goes on with the iterations
        left (build this object as the saved one was, with the same model and twist family)."""
        if state["default_family"] is not None:
            if self._family is not None and self._default_family is None:
                raise ValueError("the checkpoint was learned with TRITSMC's default twist family, but this TRITSMC "
                                 f"was given a twist ({type(self._family).__name__}): build it with twist=None")
            self._default_family = state["default_family"]
            self._family = build_family(self._default_family, self.optim)
        elif self._family is None and state["twist"] is not None:
            raise ValueError("the checkpoint holds a twist passed to TRITSMC: build this TRITSMC with a twist of "
                             "the same kind")
        self.twist = None if state["twist"] is None else self._family
        if self.twist is not None:
            self.twist.load_state_dict(state["twist"]["parameters"])
            if state["twist"]["learning"] is not None:
                self.twist.load_learning_state(state["twist"]["learning"])
        self._candidates = [Candidate(c["snapshot"], [Measurement(**m) for m in c["measurements"]])
                            for c in state["candidates"]]
        self._at_best, self._budget = state["at_best"], state["budget"]
        self._iteration, self._first = state["iteration"], state["first"]
        self.history = [IterationStats(**stats) for stats in state["history"]]
        self.learning_results = [SMCResult.from_state_dict(result) for result in state["learning_results"]]
        set_rng_state(state["rng"])
        self._resuming = True

    def _best(self):
        return best_candidate(self._candidates)

    def _keep_best(self):
        """Restore the best twist measured in this run (``best_candidate``; the last fit is not measured),
        warn when that is the twist learning started from, and return its :class:`Candidate`."""
        best = self._best()
        self._restore(best.snapshot)
        if self.num_iterations >= 2 and best is self._candidates[0]:
            start = "the base chain (no twist)" if best.snapshot is None else "the twist it started from"
            learned = max((candidate.score for candidate in self._candidates[1:]), default=math.nan)
            warnings.warn(
                f"TRITSMC: no learned twist measured better than {start} (score log Z_hat - 2 se {best.score:.3f}; "
                f"the learned twists' best {learned:.3f}), so the final run uses {start}. "
                f"The twist family ({type(self._family).__name__}) did not improve on it here: try more particles, "
                "a smaller kl_budget, more iterations, or another family (NeuralTwist where a LinearTwist fails)",
                stacklevel=3,
            )
        return best

    def _check_agreement(self, best, final):
        """Warn when the final run's ``log_evidence`` disagrees with the learning runs' measurements of
        the same twist (see :func:`twist_core.learning.disagreement`)."""
        message = disagreement(best, float(final.log_evidence), final.log_evidence_se, "summary()")
        if message is not None:
            warnings.warn(message, stacklevel=3)
