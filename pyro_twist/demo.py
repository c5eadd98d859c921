"""Steering demo: the shipped digits diffusion model, steered toward one digit.

Run ``python -m pyro_twist.demo --digit 3`` (about a minute on two CPU cores;
``--device cuda`` runs it on a GPU). The model is the shipped DDPM over 8x8
digits; the reward is the shipped classifier's ``log p(digit | x_0)``, so the
target is ``p(x_0) p(digit | x_0) / Z``: the base model's own digits of that
class, with ``Z`` the base model's probability of drawing one. Base sampling,
Feynman-Kac steering, the Twisted Diffusion Sampler and TRI-TSMC run with the
same number of particles; TRI-TSMC first learns its twist over a few
trust-region iterations: the training split's class Gaussians pushed through
the chain's noise (:class:`~pyro_twist.GaussianClassTwist`) give the twist's
values, and learning finds how strongly each step's proposal follows them,
starting from the base chain's proposals. Its panel counts those denoiser
evaluations too.
It writes an image grid per method and the learning plots.
"""
import argparse

import matplotlib
import matplotlib.pyplot as plt
import pyro
import torch

from . import TDS, TRITSMC, FKSteering, TwistedSMC, diffusion_chain
from .plots import plot_ess, plot_history, plot_image_grid
from .pretrained import digit_class_twist, digit_classifier, digits_kernel
from .twists.gaussian_classes import LEARNING_FLOOR


def digit_model(kernel, classifier, temperature=1.0):
    """``model(digit)``: the denoising chain, then the reward ``log p(digit | x_0) / temperature``."""

    def model(digit):
        x0 = diffusion_chain("x", kernel, (1, 8, 8))
        pyro.factor("reward", classifier.log_prob(x0, digit) / temperature)
        return x0

    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digit", type=int, default=3, choices=range(10))
    parser.add_argument("--num-particles", type=int, default=256)
    parser.add_argument("--num-steps", type=int, default=50)
    parser.add_argument("--num-iterations", type=int, default=6, help="TRI-TSMC's learning iterations")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--out", default="steering_demo.png")
    args = parser.parse_args(argv)
    matplotlib.use("Agg")  # the demo writes a file; no window

    pyro.set_rng_seed(args.seed)
    device = torch.device(args.device)
    kernel = digits_kernel(num_steps=args.num_steps, device=device)
    classifier = digit_classifier(device=device)
    model = digit_model(kernel, classifier, args.temperature)
    n, progress = args.num_particles, not args.no_progress
    class_twist = digit_class_twist(kernel, guidance=0.0, floor=LEARNING_FLOOR).to(device)

    samplers = {
        "base sampling": TwistedSMC(model, n, ess_threshold=0.0, progress_bar=progress),
        "FK steering": FKSteering(model, n, progress_bar=progress),
        "TDS": TDS(model, n, progress_bar=progress),
        "TRI-TSMC": TRITSMC(model, twist=class_twist, num_particles=n, num_iterations=args.num_iterations,
                            progress_bar=progress),
    }
    results, images, classes, summaries = {}, {}, {}, {}
    for label, sampler in samplers.items():
        kernel.num_evaluations = 0
        result = sampler.run(args.digit)
        # Base sampling keeps its ancestral samples; the steered methods resample by weight.
        x0 = (result.trajectories() if label == "base sampling" else result.get_samples())["x_0"]
        with torch.no_grad():
            predicted = classifier(x0).argmax(-1)
        hit_rate = (predicted == args.digit).double().mean().item()
        results[label], images[label], classes[label] = result, x0.cpu(), predicted.tolist()
        summaries[label] = dict(evaluations=kernel.num_evaluations, hit_rate=hit_rate,
                                ess=result.ess_final.item() / n, log_z=result.log_evidence.item())
        s = summaries[label]
        print(f"{label:14s} denoiser evaluations = {s['evaluations']:7d}   classified as {args.digit}: "
              f"{s['hit_rate']:.3f}   final ESS/N = {s['ess']:.3f}   log Z_hat = {s['log_z']:.3f}")

    fig, axes = plt.subplots(2, 4, figsize=(19, 9.5))
    for ax, (label, x0) in zip(axes[0], images.items()):
        s = summaries[label]
        shown = classes[label][:64]  # each image labelled with the classifier's digit, in red where it misses
        plot_image_grid(x0[:64], ax, ncols=8, labels=[str(c) for c in shown],
                        label_colors=["tab:green" if c == args.digit else "tab:red" for c in shown])
        ax.set_title(f"{label}\n{s['evaluations']:,} denoiser evaluations\n"
                     f"classified as {args.digit}: {s['hit_rate']:.0%}   log Z_hat = {s['log_z']:.2f}", fontsize=10)
    steered = {label: result for label, result in results.items() if label != "base sampling"}
    plot_ess(steered, axes[1, 0])
    axes[1, 0].set_title("ESS per step (final runs; drops to N after resampling)")
    plot_history(samplers["TRI-TSMC"].history, axes[1, 1:])
    axes[1, 1].set_title("TRI-TSMC learning: path ESS per step, per iteration")
    fig.suptitle(f"Steering the shipped digits DDPM ({kernel.num_steps} steps) toward {args.digit}: "
                 f"{n} particles per run, reward log p({args.digit} | x_0) / {args.temperature:g}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")
    return summaries


if __name__ == "__main__":
    main()
