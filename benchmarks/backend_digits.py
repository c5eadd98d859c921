"""The two backends on the shipped digits model: FK steering in pyro_twist and in numpyro_twist.

    python benchmarks/backend_digits.py --num-particles 256 1024 --repeats 2

The same DDPM (50 steps; torch's diffusers UNet, and numpyro_twist's JAX port of it from the same
weights) steered by FK steering toward bright images (``factor(4 * mean pixel)``: a reward both
backends compute without a classifier), timed side by side on this machine's CPU: pyro_twist's
seconds per run, numpyro_twist's first call (compile and run) and its later runs (median of
``--repeats``), and each backend's mean ``log Z_hat``, which must agree within their spread.
"""
import argparse
import statistics
import time

import jax
import numpyro
import pyro
import torch

import numpyro_twist
import numpyro_twist.pretrained
import pyro_twist
import pyro_twist.pretrained

BRIGHTNESS = 4.0


def pyro_model(kernel):
    def model():
        x0 = pyro_twist.diffusion_chain("x", kernel, (1, 8, 8))
        pyro.factor("reward", BRIGHTNESS * x0.mean((-1, -2, -3)))

    return model


def numpyro_model(kernel):
    def model():
        x0 = numpyro_twist.diffusion_chain("x", kernel, (1, 8, 8))
        numpyro.factor("reward", BRIGHTNESS * x0.mean((-1, -2, -3)))

    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-particles", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch_model = pyro_model(pyro_twist.pretrained.digits_kernel(num_steps=50))
    jax_model = numpyro_model(numpyro_twist.pretrained.digits_kernel(num_steps=50))
    print(f"CPU, torch threads {torch.get_num_threads()}, 50 DDPM steps, FK steering, {args.repeats} runs each")
    print("| N | pyro_twist s / run | numpyro_twist first call (s) | numpyro_twist s / run | ratio | "
          "log Z_hat pyro | log Z_hat numpyro |")
    print("|---|---|---|---|---|---|---|")
    for n in args.num_particles:
        pyro.set_rng_seed(0)
        torch_seconds, torch_log_z = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            torch_log_z.append(pyro_twist.FKSteering(torch_model, n, progress_bar=False).run().log_evidence.item())
            torch_seconds.append(time.perf_counter() - start)
        sampler = numpyro_twist.FKSteering(jax_model, n)
        keys = jax.random.split(jax.random.PRNGKey(0), args.repeats + 1)
        start = time.perf_counter()
        jax.block_until_ready(sampler.run(keys[0]).log_evidence)
        first = time.perf_counter() - start
        jax_seconds, jax_log_z = [], []
        for key in keys[1:]:
            start = time.perf_counter()
            jax_log_z.append(float(sampler.run(key).log_evidence))
            jax_seconds.append(time.perf_counter() - start)
        torch_run, jax_run = statistics.median(torch_seconds), statistics.median(jax_seconds)
        print(f"| {n} | {torch_run:.2f} | {first:.2f} | {jax_run:.2f} | {jax_run / torch_run:.2f} | "
              f"{statistics.mean(torch_log_z):.3f} | {statistics.mean(jax_log_z):.3f} |")


if __name__ == "__main__":
    main()
