"""One implementation of the weights' arithmetic for both backends, over the array API standard?

    pip install array-api-compat && python benchmarks/array_api_weights.py

The ESS of log-weights written once against ``array_api_compat.array_namespace`` (with ``logsumexp``
built from the standard's primitives, which has none) beside each backend's own (``jax.scipy``'s and
torch's ``logsumexp``): the values, whether the shared one traces under ``jax.jit`` and ``lax.scan``,
and microseconds per call, jitted in JAX and eager in torch, side by side in one run. The README's
NumPyro section says what we chose from it.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

try:
    from array_api_compat import array_namespace
except ImportError as error:
    raise SystemExit("this benchmark needs array-api-compat: pip install array-api-compat") from error


def log_mean_exp(log_w):
    xp = array_namespace(log_w)
    top = xp.max(log_w)
    top = xp.where(xp.isfinite(top), top, xp.zeros_like(top))
    return xp.log(xp.mean(xp.exp(log_w - top))) + top


def shared_ess(log_w):
    return array_namespace(log_w).exp(2 * log_mean_exp(log_w) - log_mean_exp(2 * log_w)) * log_w.shape[0]


def jax_ess(log_w):
    return jnp.exp(2 * jax.scipy.special.logsumexp(log_w) - jax.scipy.special.logsumexp(2 * log_w))


def torch_ess(log_w):
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))


def microseconds(fn, x, calls):
    fn(x)  # compile, or warm up
    start = time.perf_counter()
    for _ in range(calls):
        out = fn(x)
    if hasattr(out, "block_until_ready"):
        out.block_until_ready()
    return (time.perf_counter() - start) / calls * 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-particles", type=int, default=4096)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    log_w = np.random.default_rng(0).normal(size=args.num_particles) * 3
    in_jax, in_torch = jnp.asarray(log_w), torch.as_tensor(log_w)
    print(f"ESS: shared {float(shared_ess(in_jax)):.12f} (jax) {float(shared_ess(in_torch)):.12f} (torch); "
          f"native {float(jax_ess(in_jax)):.12f} / {float(torch_ess(in_torch)):.12f}")
    scanned = jax.jit(lambda rows: jax.lax.scan(lambda total, row: (total + shared_ess(row), None), 0.0, rows)[0])
    print(f"shared ESS summed inside a jitted lax.scan over 5 copies: {float(scanned(jnp.stack([in_jax] * 5))):.6f}")
    print(f"| N = {args.num_particles} | shared (array API) | native |")
    print("|---|---|---|")
    print(f"| jax, jitted | {microseconds(jax.jit(shared_ess), in_jax, args.calls):.1f} us | "
          f"{microseconds(jax.jit(jax_ess), in_jax, args.calls):.1f} us |")
    print(f"| torch, eager | {microseconds(shared_ess, in_torch, args.calls):.1f} us | "
          f"{microseconds(torch_ess, in_torch, args.calls):.1f} us |")


if __name__ == "__main__":
    main()
