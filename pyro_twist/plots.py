"""Plots of steering results: effective sample size per step, 2-D samples, image grids."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _axes(ax):
    return plt.subplots(figsize=(5, 4))[1] if ax is None else ax


def plot_ess(results, ax=None):
    """ESS/N after weighting at each chain step, for a dict ``{label: SMCResult}``."""
    ax = _axes(ax)
    for label, result in results.items():
        steps = list(range(len(result.ess) - 1, -1, -1))
        ax.plot(steps, (result.ess / result.num_particles).numpy(), label=label)
    ax.set_xlim(max(len(r.ess) for r in results.values()) - 1, 0)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("steps to go k")
    ax.set_ylabel("ESS / N")
    ax.legend()
    return ax


def plot_samples_2d(samples, ax=None, title=None, **scatter_kwargs):
    """Scatter of 2-D points ``(M, 2)``."""
    ax = _axes(ax)
    ax.scatter(samples[:, 0].numpy(), samples[:, 1].numpy(), s=scatter_kwargs.pop("s", 4),
               alpha=scatter_kwargs.pop("alpha", 0.5), **scatter_kwargs)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


def plot_image_grid(images, ax=None, ncols=8, title=None):
    """A grid of single-channel images ``(M, 1, H, W)`` in [-1, 1]."""
    ax = _axes(ax)
    m, _, h, w = images.shape
    nrows = -(-m // ncols)
    canvas = images.new_full((nrows * (h + 1), ncols * (w + 1)), -1.0)
    for i in range(m):
        r, c = divmod(i, ncols)
        canvas[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = images[i, 0]
    ax.imshow(canvas.clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return ax
