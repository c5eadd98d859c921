"""TRI-TSMC's bookkeeping, the same in both backends: what an iteration records, which measured
twist is the best, and what to tell the user when learning goes nowhere or the final run disagrees
with learning. Plain Python numbers in, messages out."""
import math
from collections import namedtuple
from dataclasses import dataclass, field

from .diagnostics import log_evidence_se

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


@dataclass(eq=False)  # a twist is itself, whatever its measurements
class Candidate:
    """A twist measured by learning runs: its ``snapshot`` (what the backend restores it from), the
    lowest ``score`` (see :func:`twist_score`) and the lowest path ESS/N (``ess``) its measurements gave,
    and each measurement's ``(log_evidence, standard error)``: a twist is rated by its worst run."""

    snapshot: object
    score: float
    ess: float
    measurements: list = field(default_factory=list)

    def measured_again(self, score, ess, measurement):
        self.score, self.ess = min(self.score, score), min(self.ess, ess)
        self.measurements.append(measurement)

    def log_evidence(self):
        """The mean of the measured ``log_evidence`` and its standard error."""
        return _mean_with_se(self.measurements)


def _mean_with_se(measurements):
    mean = sum(value for value, _ in measurements) / len(measurements)
    return mean, math.sqrt(sum(se**2 for _, se in measurements)) / len(measurements)


def best_candidate(candidates):
    """The latest of ``candidates`` that is as good as the highest-scoring one, ``top``: scored within
    ``ACCEPT_SLACK`` of it, or sharper (a path ESS/N at least top's) with a ``log_evidence`` that agrees
    with top's within two standard errors of their difference. Among twists that measure alike, the
    latest is the one learning went furthest with.

    The second clause keeps one lucky run from deciding. A score's ``log Z_hat`` part is there to catch
    a twist that misses mass; where two twists' estimates agree within their errors, no missed mass
    shows, and the one with the larger ESS is the better twist. Without it, a start measured once by a
    run whose ``log Z_hat`` came out a standard error high outranks learned twists with two to three
    times its ESS (on the digits model, the base chain at ESS/N 0.14 against learned twists at 0.3)."""
    top = max(candidates, key=lambda candidate: candidate.score)
    top_value, top_se = top.log_evidence()

    def as_good(candidate):
        if candidate.score >= top.score - ACCEPT_SLACK:
            return True
        value, se = candidate.log_evidence()
        return candidate.ess >= top.ess and value >= top_value - 2 * math.hypot(se, top_se)

    return [candidate for candidate in candidates if as_good(candidate)][-1]


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


def disagreement(measurements, final_value, final_se, summary):
    """The warning when a final run's ``log_evidence`` (``final_value`` +- ``final_se``) and the learning
    runs' ``measurements`` (``(log_evidence, se)`` pairs) of the same twist differ by more than 4
    standard errors and 0.05 nats, or ``None``: one of them missed mass that the other found, and
    neither is to be trusted without looking. ``summary``: how the backend's result prints its health."""
    learned, learned_se = _mean_with_se(measurements)
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
