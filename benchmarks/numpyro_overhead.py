"""What numpyro_twist's engine costs over the same mathematics written by hand as one ``lax.scan``.

    python benchmarks/numpyro_overhead.py --num-particles 1024 4096 --repeats 20

FK steering (``"diff"`` potential: look-ahead reward at the exact denoiser's estimate of ``x_0``,
systematic resampling at every step) on the 8-mode ring's DDPM (50 steps), once through
``numpyro_twist.FKSteering`` (the model, its plate and handlers traced into one ``jit``) and once as
a hand-written ``lax.scan`` over the kernel's transitions with the same resampler, both jitted,
timed side by side in one process: compile time (first call) and the median of ``--repeats``
calls after it. Both compute the same ``log Z_hat``, which is printed for the first key.
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpyro

from numpyro_twist import FKSteering, GaussianMixture, GaussianMixtureKernel, diffusion_chain
from numpyro_twist.smc.resampling import systematic
from numpyro_twist.smc.weights import log_mean_exp

DIRECTION = jnp.array([1.0, 0.4])


def hand_written(kernel, num_particles):
    """FK steering on ``kernel`` as one ``lax.scan``: returns ``pass(rng_key) -> log Z_hat``."""
    reward = lambda x: x @ DIRECTION  # noqa: E731
    num_steps = kernel.num_steps

    def step(carry, inputs):
        x, lookahead, log_z = carry
        k, key = inputs
        key_draw, key_resample = jax.random.split(key)
        x = kernel.transition(k, x).sample(key_draw)
        new_lookahead = reward(kernel.predict_x0(k - 1, x))
        log_w = new_lookahead - lookahead
        log_z = log_z + log_mean_exp(log_w)
        ancestors = systematic(key_resample, log_w, num_particles)
        return (x[ancestors], new_lookahead[ancestors], log_z), None

    def one_pass(rng_key):
        key_init, key_scan, key_last = jax.random.split(rng_key, 3)
        x = kernel.prior().expand((num_particles,)).sample(key_init)
        lookahead = reward(kernel.predict_x0(num_steps, x))
        log_z = log_mean_exp(lookahead)
        ancestors = systematic(key_init, lookahead, num_particles)
        carry = (x[ancestors], lookahead[ancestors], log_z)
        keys = jax.random.split(key_scan, num_steps - 1)
        carry, _ = jax.lax.scan(step, carry, (jnp.arange(num_steps, 1, -1), keys))
        x, lookahead, log_z = carry
        x0 = kernel.transition(1, x).sample(key_last)  # the last step is deterministic
        return log_z + log_mean_exp(reward(x0) - lookahead)

    return jax.jit(one_pass)


def timed(fn, keys):
    start = time.perf_counter()
    jax.block_until_ready(fn(keys[0]))
    compile_seconds = time.perf_counter() - start
    runs = []
    for key in keys[1:]:
        start = time.perf_counter()
        jax.block_until_ready(fn(key))
        runs.append(time.perf_counter() - start)
    return compile_seconds, statistics.median(runs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-particles", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--num-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    numpyro.enable_x64()
    kernel = GaussianMixtureKernel(GaussianMixture.ring(), num_steps=args.num_steps)

    def model():
        x0 = diffusion_chain("x", kernel, (2,))
        numpyro.factor("reward", x0 @ DIRECTION)

    keys = jax.random.split(jax.random.PRNGKey(0), args.repeats + 1)
    print(f"{jax.devices()[0].platform}, {args.num_steps} steps, median of {args.repeats} passes after the first")
    print("| N | engine compile (s) | hand-written compile (s) | engine pass (ms) | hand-written pass (ms) | ratio |")
    print("|---|---|---|---|---|---|")
    for n in args.num_particles:
        engine = jax.jit(lambda key, n=n: FKSteering(model, n).pure_run(key).log_evidence)
        by_hand = hand_written(kernel, n)
        engine_compile, engine_run = timed(engine, keys)
        hand_compile, hand_run = timed(by_hand, keys)
        print(f"| {n} | {engine_compile:.1f} | {hand_compile:.1f} | {1000 * engine_run:.1f} | {1000 * hand_run:.1f} | "
              f"{engine_run / hand_run:.2f} |")
        print(f"  log Z_hat at the first key: engine {float(engine(keys[0])):.4f}, "
              f"hand-written {float(by_hand(keys[0])):.4f}")


if __name__ == "__main__":
    main()
