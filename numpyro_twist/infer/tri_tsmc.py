"""TRI-TSMC: twisted SMC whose twist is learned by trust-region iterations.

Each iteration runs sequential importance sampling with the current twist (so the N paths are
i.i.d. draws of the twisted path law ``Q_j``), solves the trust-region dual on their path
log-weights for ``tau``, tempers the weights to ``R^tau`` (the escort law ``Q_j^(1 - tau) pi^tau``,
the closest law to the target within ``KL <= kl_budget`` of ``Q_j``), and projects it back on the
twist family by weighted maximum likelihood of the paths. The answer is a twisted SMC run with the
learned twist. As ``pyro_twist.infer.tri_tsmc``; each pass is one compiled ``lax.scan``, and a twist
that is a pytree of arrays (``LinearTwist``, ``NeuralTwist``) is its argument, so the learning passes compile once.
"""
import copy
import math
import time
import warnings

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from tqdm.auto import tqdm
from twist_core.learning import (
    IterationStats, best_candidate, disagreement, guarded_run_accepts, learning_diagnosis, run_measurement,
)

from ..chains.linear_gaussian import LinearGaussianKernel
from ..smc.trust_region import trust_region_step
from ..twists.linear import LinearTwist
from ..twists.neural import NeuralTwist
from .recycling import recycle
from .twisted_smc import TwistedSMC



def resampling_ess(result):
    """The least ESS that the final weights would keep after resampling at any one step, from a run
    without resampling: resampled at step k in proportion to ``w_k``, path ``i`` ends with weight
    ``w_final(i) / w_k(i)``, whose ESS is ``N (sum w_final)^2 / (sum w_k * sum w_final^2 / w_k)``.

    The path ESS cannot see a twist whose values are wrong (its proposals only use their
    gradients, and its values telescope out of the path weights); resampling acts on them, and a
    twist that rates low the paths that carry the mass makes resampling discard that mass.
    """
    return float(_least_resampling_share(result.log_weights, result.transitions.log_weights)) * result.num_particles


@jax.jit
def _least_resampling_share(log_final, log_w):
    ratio = jnp.where(jnp.isfinite(log_w), 2 * log_final - log_w, -jnp.inf)
    log_share = 2 * logsumexp(log_final) - logsumexp(log_w, 1) - logsumexp(ratio, 1)
    return jnp.exp(log_share.min())


def default_twist(sampler, rng_key, args, kwargs):
    """The twist family for the model's chain, found by tracing one pass (nothing is compiled or run),
    at the base chain: a per-step log-linear twist for a :class:`LinearGaussianKernel`, whose optimal
    twist is log-linear and fit in closed form, and a :class:`NeuralTwist` (its weights drawn from
    ``rng_key``) for any other chain of real-valued states."""
    output = jax.eval_shape(sampler.pure_run_with_twist, None, rng_key, *args, **kwargs)
    layout = sampler._layout
    states = output.transitions.value  # (K + 1, N) + event shape
    if issubclass(layout.kernel_type, LinearGaussianKernel):
        return LinearTwist.zeros(layout.num_steps, states.shape[2:], states.dtype, smoothing=2.0)
    if not jnp.issubdtype(states.dtype, jnp.floating):
        raise NotImplementedError(
            f"the chain {layout.name!r} has states of dtype {states.dtype}: numpyro_twist's twist families steer "
            "Gaussian transitions of real-valued states. Pass TRITSMC a twist of your own with log_psi(k, x) and "
            "fit(transitions, log_weights, log_reward) returning the fitted twist, or steer the chain with FKSteering"
        )
    return NeuralTwist(layout.num_steps, states.shape[2:], rng_key, dtype=states.dtype)


class TRITSMC:
    """Trust-region iterative twisted SMC.

    :param model: a NumPyro model with a chain and reward sites (see :class:`TwistedSMC`).
    :param twist: a twist with ``log_psi(k, x)`` and ``fit(transitions, log_weights, log_reward)``
        returning the fitted twist (see :meth:`LinearTwist.fit`), or ``None`` for the kernel's default
        family (see :func:`default_twist`), starting from the base chain. A twist registered as a pytree
        of arrays is an argument of the compiled learning pass, compiled once; any other twist is
        compiled into the pass, once per fit.
    :param int num_particles: particles per learning iteration.
    :param int num_iterations: trust-region iterations before the final run.
    :param float kl_budget: ``eps``, the KL allowed between successive path laws.
    :param resampling, ess_threshold: resampling of the final run (learning runs never resample).
    :param int final_num_particles: particles of the final run (default ``num_particles``):
        a twist learned on few particles serves a larger final run.
    :param bool recycle: ``run()`` returns the learning runs pooled with the final run (see
        :func:`~numpyro_twist.infer.recycling.recycle`) instead of the final run alone, which stays in
        ``final_result``; the learning evaluations then count in the answer.
    :param bool progress_bar: show a progress bar over iterations.

    ``run(rng_key, *args, **kwargs)`` learns, keeps the best twist measured (``twist``), and returns
    the final run's :class:`SMCResult`; ``history`` holds an :data:`IterationStats` per iteration.
    ``step(rng_key, *args, **kwargs)`` takes one iteration on its own, so that steps may alternate
    between run arguments (one twist amortised over them).
    """

    def __init__(self, model, twist=None, num_particles=256, num_iterations=8, kl_budget=0.5,
                 resampling="systematic", ess_threshold=0.5, final_num_particles=None, recycle=False,
                 progress_bar=True):
        if int(num_iterations) != num_iterations or num_iterations < 0:
            raise ValueError(f"num_iterations must be a non-negative integer, got {num_iterations!r}")
        if not kl_budget > 0:
            raise ValueError(f"kl_budget must be positive, got {kl_budget!r}")
        if final_num_particles is not None and (int(final_num_particles) != final_num_particles
                                                or final_num_particles < 1):
            raise ValueError(f"final_num_particles must be a positive integer or None, got {final_num_particles!r}")
        if twist is not None and not callable(getattr(twist, "fit", None)):
            raise TypeError(
                "TRITSMC learns its twist: the twist needs fit(transitions, log_weights, log_reward), returning "
                "the fitted twist, besides log_psi(k, x); use TwistedSMC to run a fixed twist"
            )
        self.model = model
        self.twist = twist
        self.num_particles = int(num_particles)
        self.num_iterations = int(num_iterations)
        self.kl_budget = kl_budget
        self.progress_bar = progress_bar
        self.final = TwistedSMC(model, final_num_particles or num_particles, twist=twist, resampling=resampling,
                                ess_threshold=ess_threshold)
        # the records hold the paths the fit needs; a pool needs them as trajectories too
        self.learner = TwistedSMC(model, num_particles, twist=twist, ess_threshold=0.0, keep_paths=recycle,
                                  record_transitions=True)
        self.recycle = recycle
        self.learning_results = []
        self.final_result = None
        self.history = []
        self._candidates = []  # every twist measured in this run(), the start first
        self._from_base = False  # whether this run() started from the base chain
        self._at_best = False
        self._budget = kl_budget

    def run(self, rng_key, *args, **kwargs):
        """Learn the twist, then run twisted SMC with it; returns the final :class:`SMCResult` (pooled with
        this call's learning runs when ``recycle``). Warns when learning stalls or its family stops
        improving (see :func:`learning_diagnosis`), when no learned twist beat the start, and when the
        final run's ``log_evidence`` disagrees with the learning runs' measure of the same twist."""
        keys = jax.random.split(rng_key, self.num_iterations + 1)
        self._candidates, self._at_best, self._budget = [], False, self.kl_budget
        self.learning_results = []
        self._from_base = self.twist is None
        if self.twist is None and self.num_iterations > 0:
            self.twist = default_twist(self.learner, keys[0], args, kwargs)
        first = len(self.history)
        iterations = tqdm(keys[:-1], disable=not self.progress_bar, desc="TRI-TSMC")
        for key in iterations:
            stats = self._step(key, args, kwargs, guarded=True)
            iterations.set_postfix(tau=f"{stats.tau:.3f}", ess=f"{stats.ess:.0f}", log_Z=f"{stats.log_evidence:.3f}")
        iterations.close()
        diagnosis = learning_diagnosis(self.history[first:])
        if diagnosis is not None:
            warnings.warn(f"TRITSMC: {diagnosis}", stacklevel=2)
        best = self._keep_best() if self._candidates else None
        self.final.twist = self.twist
        self.final_result = self.final.run(keys[-1], *args, **kwargs)
        if best is not None:
            self._check_agreement(best, self.final_result)
        return recycle(self.learning_results + [self.final_result]) if self.recycle else self.final_result

    def on_model(self, model):
        """A learner of this one's settings, starting from its twist, on another ``model`` (the same one with
        sites conditioned, say), with no history and compiled passes of its own."""
        other = copy.copy(self)
        other.model = model
        other.learner, other.final = self.learner.on_model(model), self.final.on_model(model)
        other.learning_results, other.final_result, other.history, other._candidates = [], None, [], []
        return other

    def step(self, rng_key, *args, **kwargs):
        """One trust-region iteration on ``model(*args, **kwargs)``, always taken; returns its
        :data:`IterationStats`. Steps may alternate between run arguments, whose evidences differ, so no
        step is measured against another: ``run()`` guards its steps instead."""
        key_family, rng_key = jax.random.split(rng_key)
        if self.twist is None:
            self.twist = default_twist(self.learner, key_family, args, kwargs)
        return self._step(rng_key, args, kwargs, guarded=False)

    def _step(self, rng_key, args, kwargs, guarded):
        """One iteration. Guarded (within one ``run()``, so for one set of arguments), the run measures the
        current twist by its :func:`twist_score` and ESS; a twist that is not as good as the best one so far
        (``twist_core.learning.best_candidate``) is rejected: the best is restored,
        the KL budget halved, and the next iteration measures the best again before stepping from it.
        Otherwise the trust-region step is taken from the run's paths (and a budget halved before grows back)."""
        start = time.perf_counter()
        self.learner.twist = self.twist
        result = self.learner._run(rng_key, args, kwargs)
        ess, log_evidence = float(result.ess_final), float(result.log_evidence)
        measurement = run_measurement(log_evidence, result.log_evidence_se, ess, resampling_ess(result),
                                      float(result.pareto_khat), self.num_particles)
        # fits return new twists, so a twist is its own snapshot
        accepted = not guarded or guarded_run_accepts(self._candidates, self._at_best, lambda: self.twist, measurement)
        tau = kl = math.nan
        budget = self._budget
        if accepted:
            trust_region = trust_region_step(result.log_weights, budget)
            tau, kl = float(trust_region.tau), float(trust_region.kl)
            fitted = self.twist.fit(result.transitions, trust_region.log_weights, result.log_reward)
            if not callable(getattr(fitted, "log_psi", None)):
                raise TypeError(f"{type(self.twist).__name__}.fit returned {type(fitted).__name__}: numpyro_twist's "
                                "fit is pure, and returns the fitted twist (leaving the twist it was called on as is)")
            self.twist = fitted
            self._budget = min(self.kl_budget, 2 * budget)
            self._at_best = False
        else:
            self.twist = self._best().snapshot
            self._budget = budget / 2
            self._at_best = True
        if self.recycle:
            result.transitions = None  # the fit's records are the bulk of a run's memory
            self.learning_results.append(result)
        layout = self.learner._layout
        stats = IterationStats(
            tau=tau,
            kl=kl,
            ess=ess,
            ess_per_step=result.ess,
            log_evidence=log_evidence,
            mean_reward=float(result.log_reward.mean()),
            denoiser_evaluations=self.num_particles * layout.num_steps,
            seconds=time.perf_counter() - start,
            num_particles=self.num_particles,
            score=measurement.score,
            accepted=accepted,
            kl_budget=budget,
            pareto_khat=result.pareto_khat,
        )
        self.history.append(stats)
        return stats

    def _best(self):
        return best_candidate(self._candidates)

    def _keep_best(self):
        """Restore the best twist measured in this run (``best_candidate``; the last fit is not measured),
        warn when that is the twist learning started from, and return its :class:`Candidate`."""
        best = self._best()
        self.twist = best.snapshot
        if self.num_iterations >= 2 and best is self._candidates[0]:
            start = "the base chain (no twist)" if self._from_base else "the twist it started from"
            learned = max((candidate.score for candidate in self._candidates[1:]), default=math.nan)
            warnings.warn(
                f"TRITSMC: no learned twist measured better than {start} (score log Z_hat - 2 se {best.score:.3f}; "
                f"the learned twists' best {learned:.3f}), so the final run uses {start}. "
                f"The twist family ({type(best.snapshot).__name__}) did not improve on it here: try more particles, "
                "a smaller kl_budget, more iterations, or another family",
                stacklevel=3,
            )
        return best

    def _check_agreement(self, best, final):
        """Warn when the final run's ``log_evidence`` disagrees with the learning runs' measurements of
        the same twist (see :func:`twist_core.learning.disagreement`)."""
        message = disagreement(best, float(final.log_evidence), final.log_evidence_se, "print_summary()")
        if message is not None:
            warnings.warn(message, stacklevel=3)
