"""Plots of steering results: ESS per step, TRI-TSMC iterations, 2-D samples, image grids.

Importing this module leaves matplotlib's backend alone (notebooks keep theirs).
"""
import matplotlib
import matplotlib.pyplot as plt
import torch

from .smc.weights import log_evidence_se


def _axes(ax):
    return plt.subplots(figsize=(5, 4))[1] if ax is None else ax


def plot_ess(results, ax=None):
    """ESS/N after weighting at each chain step, for a dict ``{label: SMCResult}``."""
    ax = _axes(ax)
    for label, result in results.items():
        steps = list(range(len(result.ess) - 1, -1, -1))
        ax.plot(steps, (result.ess / result.num_particles).cpu().numpy(), label=label)
    ax.set_xlim(max(len(r.ess) for r in results.values()) - 1, 0)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("steps to go k")
    ax.set_ylabel("ESS / N")
    ax.legend()
    return ax


def plot_samples_2d(samples, ax=None, title=None, **scatter_kwargs):
    """Scatter of 2-D points ``(M, 2)``."""
    ax = _axes(ax)
    samples = samples.detach().cpu()
    ax.scatter(samples[:, 0].numpy(), samples[:, 1].numpy(), s=scatter_kwargs.pop("s", 4),
               alpha=scatter_kwargs.pop("alpha", 0.5), **scatter_kwargs)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


def plot_image_grid(images, ax=None, ncols=8, title=None, labels=None, label_colors=None):
    """A grid of single-channel images ``(M, 1, H, W)`` in [-1, 1], each optionally with a small
    label in its corner (``labels``: M strings; ``label_colors``: M matplotlib colours)."""
    ax = _axes(ax)
    images = images.detach().cpu()
    m, _, h, w = images.shape
    nrows = -(-m // ncols)
    canvas = images.new_full((nrows * (h + 1), ncols * (w + 1)), -1.0)
    for i in range(m):
        r, c = divmod(i, ncols)
        canvas[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = images[i, 0]
    ax.imshow(canvas.clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
    for i, label in enumerate(labels or []):
        r, c = divmod(i, ncols)
        color = label_colors[i] if label_colors is not None else "tab:orange"
        ax.text(c * (w + 1) - 0.4, r * (h + 1) - 0.4, label, color=color, fontsize=7, va="top", ha="left",
                fontweight="bold")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return ax


def plot_history(history, axes=None):
    """TRI-TSMC iterations: ESS/N per step of each iteration (the legend gives each run's final path
    ESS/N, after the reward), ``tau`` and realised KL, and ``log Z_hat`` with a one-sd band
    ``sqrt((N / ESS - 1) / N)`` (delta method)."""
    if axes is None:
        axes = plt.subplots(1, 3, figsize=(15, 4))[1]
    ess_ax, step_ax, evidence_ax = axes
    colors = plt.cm.viridis([i / max(len(history) - 1, 1) for i in range(len(history))])
    for i, (stats, color) in enumerate(zip(history, colors)):
        n = stats.num_particles
        steps = list(range(len(stats.ess_per_step) - 1, -1, -1))
        ess_ax.plot(steps, (stats.ess_per_step / n).cpu().numpy(), color=color,
                    label=f"iteration {i}: path ESS/N {stats.ess / n:.2f}")
    ess_ax.set_xlim(len(history[0].ess_per_step) - 1, 0)
    ess_ax.set(xlabel="steps to go k", ylabel="ESS / N", title="ESS per step", ylim=(0, 1.05))
    ess_ax.legend(fontsize="small")
    iterations = list(range(len(history)))
    step_ax.plot(iterations, [s.tau for s in history], "o-", label="tau")
    step_ax.plot(iterations, [s.kl for s in history], "s--", label="realised KL")
    step_ax.set(xlabel="iteration", title="trust-region step")
    step_ax.legend()
    log_z = torch.tensor([s.log_evidence for s in history])
    spread = torch.tensor([log_evidence_se(s.ess, s.num_particles) for s in history])
    evidence_ax.errorbar(iterations, log_z.numpy(), yerr=spread.numpy(), fmt="o-", capsize=3)
    evidence_ax.set(xlabel="iteration", ylabel="log Z_hat", title="evidence")
    for ax in (step_ax, evidence_ax):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    return axes
