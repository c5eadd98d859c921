"""Steering demo: a diffusion model of an 8-mode ring, steered toward one direction.

Run ``python -m pyro_twist.demo`` (well under a minute on two CPU cores). It
samples the base model, Feynman-Kac steering, the Twisted Diffusion Sampler and
TRI-TSMC (twist learned in a few trust-region iterations) at the same number of
particles in the final run, prints the total-variation distance of each one's
mode weights to the exact tilted mixture, and writes a picture of the samples,
the ESS per step and TRI-TSMC's iterations.
"""
import argparse

import matplotlib.pyplot as plt
import pyro
import torch

from . import TDS, TRITSMC, FKSteering, GaussianMixture, GaussianMixtureKernel, TwistedSMC, diffusion_chain
from .plots import plot_ess, plot_history, plot_samples_2d


def ring_model(kernel, direction, temperature):
    def model():
        x0 = diffusion_chain("x", kernel, (2,))
        pyro.factor("reward", x0 @ direction / temperature)
        return x0

    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-particles", type=int, default=512)
    parser.add_argument("--num-steps", type=int, default=100)
    parser.add_argument("--num-iterations", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="steering_demo.png")
    args = parser.parse_args(argv)

    pyro.set_rng_seed(args.seed)
    mixture = GaussianMixture.ring(num_components=8, radius=3.0, std=0.3)
    kernel = GaussianMixtureKernel(mixture, num_steps=args.num_steps)
    direction, temperature = torch.tensor([1.0, 0.4], dtype=torch.float64), 1.0
    model = ring_model(kernel, direction, temperature)
    target = mixture.tilted(direction, temperature)
    exact = target.sample(args.num_particles)

    samplers = {
        "base": TwistedSMC(model, args.num_particles, ess_threshold=0.0),
        "FK steering": FKSteering(model, args.num_particles),
        "TDS": TDS(model, args.num_particles),
        "TRI-TSMC": TRITSMC(model, num_particles=args.num_particles, num_iterations=args.num_iterations),
    }
    results, samples, lines = {}, {}, []
    for label, sampler in samplers.items():
        kernel.num_evaluations = 0
        results[label] = sampler.run()
        # Base sampling keeps its ancestral samples; the steered methods resample by weight.
        samples[label] = (results[label].trajectories() if label == "base" else results[label].get_samples())["x_0"]
        tv = 0.5 * (mixture.mode_weights(samples[label]) - target.weights).abs().sum()
        lines.append([f"TV(mode weights, exact tilted) = {tv:.3f}",
                      f"final ESS/N = {results[label].ess_final / args.num_particles:.2f}",
                      f"log Z_hat = {results[label].log_evidence:.3f}",
                      f"denoiser evaluations = {kernel.num_evaluations}"])
        print(f"{label:12s} " + "   ".join(lines[-1]))
    print(f"{'exact':12s} log Z = {mixture.log_normalizer(direction, temperature):.3f}")

    fig, axes = plt.subplots(2, 5, figsize=(22, 8.4))
    plot_samples_2d(exact, axes[0, 0], title="exact tilted mixture", color="k")
    for ax, (label, x0) in zip(axes[0, 1:], samples.items()):
        plot_samples_2d(x0, ax, title=label)
    for ax in axes[0]:
        ax.set_xlim(-4.5, 4.5)
        ax.set_ylim(-4.5, 4.5)
    plot_ess({k: v for k, v in results.items() if k != "base"}, axes[1, 0])
    axes[1, 0].set_title("ESS per step (final runs)")
    plot_history(samplers["TRI-TSMC"].history, axes[1, 1:4])
    axes[1, 4].axis("off")
    summary = "\n\n".join("\n  ".join([label] + line) for label, line in zip(samplers, lines))
    axes[1, 4].text(0.0, 1.0, summary, va="top", family="monospace", fontsize=8, transform=axes[1, 4].transAxes)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
