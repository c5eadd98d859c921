"""TRI-TSMC's bookkeeping, the same in both backends: what an iteration records, which measured
twist is the best, and what to tell the user when learning goes nowhere or the final run disagrees
with learning. Plain Python numbers in, messages out."""
import math
from collections import namedtuple
from dataclasses import dataclass, field

from .diagnostics import KHAT_UNRELIABLE, log_evidence_se

IterationStats = namedtuple(
    "IterationStats",
    ["tau", "kl", "ess", "ess_per_step", "log_evidence", "mean_reward", "denoiser_evaluations", "seconds",
     "num_particles", "score", "accepted", "kl_budget", "pareto_khat"],
)
IterationStats.__doc__ = """\
One TRI-TSMC iteration: ``tau`` and the realised ``kl`` of the trust-region step (NaN where
the step was not taken); ``ess`` of the run's path weights and ``ess_per_step``; the run's
``log_evidence``; ``mean_reward`` of its paths; ``denoiser_evaluations`` the run spent (the
kernel's own count where it keeps one, else one per particle and transition); wall-clock
``seconds`` (in JAX the first iteration's include compiling the pass); ``num_particles`` of the run;
``score``: the run's measure of its twist, ``log_evidence - 2 se`` (see ``twist_score``);
``accepted``: whether the twist the run measured was kept (``False``: it scored worse than the
best twist so far, which was restored); ``kl_budget``: the budget of the step (halved after each
rejection); ``pareto_khat`` of the run's path weights (above 0.7 its ``log_evidence`` is not to be
trusted).
"""

# A twist is kept when its score is at most this many nats below the best one measured: one run's
# score is noisy, and a strict comparison would stall learning near convergence.
ACCEPT_SLACK = 0.1
# Learning that has not raised its best score for this many iterations, with the path ESS still
# below a half, is reported: stalled (tau below STALLED_TAU) or a family that cannot fit.
STALL_WINDOW = 3
STALLED_TAU = 0.05
CONVERGED_ESS = 0.5
# A twist's log Z_hat is credited only up to the estimate of a twist whose estimate has at most 1/SHARPER
# of its variance (see best_candidate): twists measured alike do not clip each other by chance.
SHARPER = 2.0


Measurement = namedtuple("Measurement", ["log_evidence", "se", "score", "ess", "khat"])
Measurement.__doc__ = """\
One learning run's measure of the twist it ran with: its ``log_evidence`` and standard error ``se``,
its ``score`` (see ``twist_score``), its path ESS/N ``ess`` and the Pareto ``khat`` of its path weights.
"""


def run_measurement(log_evidence, se, path_ess, kept_ess, khat, num_particles):
    """The :class:`Measurement` of one learning run of ``num_particles``: its score from the least ESS
    that resampling would keep (``kept_ess``, see :func:`twist_score`; never more than ``path_ess``),
    its path ESS/N from the path weights' ESS ``path_ess``."""
    score = twist_score(log_evidence, min(path_ess, kept_ess), num_particles)
    return Measurement(log_evidence, se, score, path_ess / num_particles, khat)


@dataclass(eq=False)  # a twist is itself, whatever its measurements
class Candidate:
    """A twist measured by learning runs: its ``snapshot`` (what the backend restores it from) and each
    run's :class:`Measurement`. A twist is rated by its worst run: the lowest ``score``, the lowest path
    ESS/N (``ess``) and the highest Pareto ``khat`` among them."""

    snapshot: object
    measurements: list = field(default_factory=list)

    @property
    def score(self):
        return min(m.score for m in self.measurements)

    @property
    def ess(self):
        return min(m.ess for m in self.measurements)

    @property
    def khat(self):
        return max(m.khat for m in self.measurements)

    def log_evidence(self):
        """The mean of the measured ``log_evidence`` and its standard error."""
        n = len(self.measurements)
        return (sum(m.log_evidence for m in self.measurements) / n,
                math.sqrt(sum(m.se**2 for m in self.measurements)) / n)


def best_candidate(candidates):
    """The latest of ``candidates`` whose credited score is within ``ACCEPT_SLACK`` of the highest: among
    twists that measure alike, the one learning went furthest with.

    A twist's credited score is its score less what its ``log_evidence`` exceeds that of any sharper
    twist (an estimate of at most ``1 / SHARPER`` of its variance, the variance ``(N / ESS - 1) / N`` of
    :func:`twist_score`; Pareto k-hat at most ``KHAT_UNRELIABLE``)
    whose estimate agrees with it (not below it by more than two standard errors of their difference).
    A score's ``log Z_hat`` part is there to catch a twist that misses mass; where a sharper twist's
    estimate agrees, no missed mass shows, and the better-measured estimate is the one to credit. So one
    lucky run does not decide: a run whose ``log Z_hat`` came out high (a base-chain run a standard error
    high, or a run of a guided proposal that drew one of the rare paths it undersamples, its ESS dropping
    as its ``log Z_hat`` jumps) would otherwise outscore twists of two to three times its ESS, as it did
    on the digits model. A sharper twist whose estimate falls short (it misses mass) credits nothing.
    """
    estimates = [candidate.log_evidence() for candidate in candidates]
    variances = [1 / candidate.ess - 1 for candidate in candidates]  # N times the variance of log Z_hat

    def credited(i):
        value, se = estimates[i]
        sharper_agreeing = [other_value for j, (other_value, other_se) in enumerate(estimates)
                            if j != i and SHARPER * variances[j] <= variances[i]
                            and candidates[j].khat <= KHAT_UNRELIABLE
                            and other_value >= value - 2 * math.hypot(se, other_se)]
        return candidates[i].score - max(0.0, value - min(sharper_agreeing, default=value))

    scores = [credited(i) for i in range(len(candidates))]
    top = max(scores)
    return [candidate for candidate, score in zip(candidates, scores) if score >= top - ACCEPT_SLACK][-1]


def guarded_run_accepts(candidates, at_best, snapshot, measurement):
    """Record one guarded learning run's :class:`Measurement` in ``candidates`` and say whether the twist
    it ran is kept. ``at_best``: the run measured the best twist again (after a rejection); otherwise
    it measured a new twist, ``snapshot()``. A new twist is kept when it is the best
    (:func:`best_candidate`); the best measured again, when it still is."""
    if at_best:
        best = best_candidate(candidates)
        best.measurements.append(measurement)
        return best is best_candidate(candidates)
    candidates.append(Candidate(snapshot(), [measurement]))
    return best_candidate(candidates) is candidates[-1]


def learning_diagnosis(history, window=STALL_WINDOW):
    """Why learning went nowhere, or ``None``: its best score did not rise by more than
    ``ACCEPT_SLACK`` over the last ``window`` iterations while the best path ESS stayed below
    ``CONVERGED_ESS`` of the particles (a converged twist has nothing left to gain). Stalled:
    every step of the window was rejected or tempered below ``STALLED_TAU``, the path weights too
    degenerate for the trust region to move; otherwise steps were taken and did not help: the
    family cannot fit what the weights ask of it."""
    if len(history) <= window:
        return None
    earlier, recent = history[:-window], history[-window:]
    if max(s.score for s in recent) > max(s.score for s in earlier) + ACCEPT_SLACK:
        return None
    best_ess = max(s.ess / s.num_particles for s in history)
    if best_ess >= CONVERGED_ESS:
        return None
    taus = [s.tau for s in recent if s.accepted]
    taken = ", ".join(f"{tau:.3f}" for tau in taus) or "none"
    if max(taus, default=0.0) < STALLED_TAU:
        return (f"learning stalled: the last {window} iterations raised no score (best path ESS/N {best_ess:.2f}); "
                f"their steps were rejected or tempered to nothing (tau {taken}), the path weights too degenerate "
                "for a trust-region step. Try more particles per iteration, or a twist that starts nearer the target")
    return (f"the twist family stopped improving: the last {window} iterations took steps (tau {taken}) that raised "
            f"no score, with the best path ESS/N at {best_ess:.2f}. The family cannot fit what the weights ask of "
            "it: try a more flexible family (NeuralTwist for a LinearTwist, more hidden units or fit steps)")


def disagreement(candidate, final_value, final_se, summary):
    """The warning when a final run's ``log_evidence`` (``final_value`` +- ``final_se``) and the learning
    runs' measure of the same twist (``candidate``, see :meth:`Candidate.log_evidence`) differ by more
    than 4 standard errors and 0.05 nats, or ``None``: one of them missed mass that the other found, and
    neither is to be trusted without looking. ``summary``: how the backend's result prints its health."""
    learned, learned_se = candidate.log_evidence()
    if abs(final_value - learned) <= 4 * math.hypot(final_se, learned_se) + 0.05:
        return None
    return (f"TRITSMC: the final run's log_evidence {final_value:.3f} +- {final_se:.3f} disagrees with the "
            f"learning runs' {learned:.3f} +- {learned_se:.3f} for the same twist, beyond their standard "
            "errors: one of them missed mass the other found (resampling on a twist whose values are off, "
            f"or heavy-tailed weights: see final_result.{summary} and history). Check with more particles")


def twist_score(log_evidence, ess, num_particles):
    """A lower confidence bound on ``log Z`` from one run of a twist: ``log Z_hat - 2 se``, with
    ``se^2 = (N / ESS - 1) / N`` the relative variance of ``Z_hat`` implied by the path weights.

    Both parts are needed. A twist that misses part of the target (a mode it never proposes)
    has a fine ESS among the paths it draws, but a ``Z_hat`` short of the mass it misses; a twist
    with heavy-tailed weights has a low ESS and a wide interval. For the optimal twist the score
    is ``log Z`` itself, and no twist scores above ``log Z`` but by chance.
    """
    return log_evidence - 2.0 * log_evidence_se(max(ess, 1.0), num_particles)
