"""Per-step cost of the library's samplers against a plain diffusers loop, on the shipped digits model.

    python benchmarks/gpu_overhead.py                      # N = 256, 4096, 65536; cuda when available
    python benchmarks/gpu_overhead.py --tiny --device cpu  # seconds: N = 8 and 16, 5 steps

For each number of particles N it times, in milliseconds per chain step (a run's
wall-clock over the kernel's ``num_steps`` denoising steps):

* the plain loop: ``unet(x, t).sample`` then ``scheduler.step`` over the kernel's
  timesteps for a batch of N under ``torch.no_grad``, the UNet called in chunks of
  ``--batch-size`` like the kernel's denoiser: what one writes without this library;
* ``ImportanceSampling`` of the model (the chain, then the reward ``log p(3 | x_0)``
  of the shipped classifier);
* ``FKSteering`` with its default settings;
* ``TwistedSMC`` with the ``NeuralTwist`` that ``TRITSMC`` learned beforehand (untimed: 3 iterations on
  256 particles; with ``--tiny``, one on 16).

Each figure is the median over ``--repeats`` timed runs after one warm-up run of
every method; the runs of the methods alternate, so a change in the machine's load
touches them alike. Each method is also given as a ratio to the plain loop at the
same N in the same process, with its peak GPU memory (not measured on CPU).
"""
import argparse
import json
import platform
import statistics
import sys
import time

import diffusers
import pyro
import torch
from tqdm.auto import tqdm

from pyro_twist import TRITSMC, FKSteering, ImportanceSampling, TwistedSMC
from pyro_twist.demo import digit_model
from pyro_twist.pretrained import digit_classifier, digits_kernel

DIGIT = 3
PLAIN_LOOP = "plain diffusers loop"
FULL_SIZES = dict(num_particles=[256, 4096, 65536], num_steps=50, learning_particles=256, learning_iterations=3)
TINY_SIZES = dict(num_particles=[8, 16], num_steps=5, repeats=1, learning_particles=16, learning_iterations=1)
DEFAULT_REPEATS = {"cuda": 5, "cpu": 3}
GPU_BATCH_SIZE = 8192


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-particles", type=int, nargs="+",
                        help=f"particle numbers N (default {FULL_SIZES['num_particles']})")
    parser.add_argument("--num-steps", type=int, help=f"denoising steps (default {FULL_SIZES['num_steps']})")
    parser.add_argument("--repeats", type=int, help=f"timed runs per method and N (default {DEFAULT_REPEATS})")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int,
                        help=f"the denoiser's chunk size (default {GPU_BATCH_SIZE} on GPU, none on CPU)")
    parser.add_argument("--tiny", action="store_true",
                        help=f"tiny sizes for a check in seconds: {TINY_SIZES} unless given")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the settings and rows to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    sizes = dict(TINY_SIZES if args.tiny else FULL_SIZES)
    sizes.setdefault("repeats", DEFAULT_REPEATS.get(args.device.type, 3))
    for name in ("num_particles", "num_steps", "repeats"):
        if getattr(args, name) is None:
            setattr(args, name, sizes[name])
    args.learning_particles, args.learning_iterations = sizes["learning_particles"], sizes["learning_iterations"]
    if args.batch_size is None and args.device.type == "cuda":
        args.batch_size = GPU_BATCH_SIZE
    for name in ("num_steps", "repeats", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if min(args.num_particles) < 1:
        parser.error(f"--num-particles must be positive integers, got {args.num_particles}")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here; pass --device cpu")
    return args


def plain_loop(kernel, num_particles, batch_size):
    """Ancestral sampling with the kernel's UNet and scheduler, written directly against diffusers."""
    unet, scheduler = kernel.unet, kernel.scheduler
    x = scheduler.init_noise_sigma * torch.randn((num_particles,) + kernel.event_shape, device=unet.device)
    with torch.no_grad():
        for t in scheduler.timesteps:
            output = torch.cat([unet(chunk, t).sample for chunk in x.split(batch_size or num_particles)])
            x = scheduler.step(output, t, x).prev_sample
    return x


def learned_twist(model, num_particles, num_iterations):
    """The twist TRI-TSMC learns on the model (its default family for a diffusion kernel: a ``NeuralTwist``)."""
    tri = TRITSMC(model, num_particles=num_particles, num_iterations=num_iterations, progress_bar=False)
    tri.run(DIGIT)
    return tri.twist


def samplers(kernel, model, twist, num_particles, batch_size):
    """The timed methods at ``num_particles``: name -> a function doing one run."""
    steered = {
        "ImportanceSampling": ImportanceSampling(model, num_particles, progress_bar=False),
        "FKSteering": FKSteering(model, num_particles, progress_bar=False),
        "TwistedSMC, learned twist": TwistedSMC(model, num_particles, twist=twist, progress_bar=False),
    }
    runs = {PLAIN_LOOP: lambda: plain_loop(kernel, num_particles, batch_size)}
    runs.update({name: (lambda sampler=sampler: sampler.run(DIGIT)) for name, sampler in steered.items()})
    return runs


def timed(run, device):
    """Seconds of one run and its peak GPU memory in MiB (``None`` off GPU), synchronised around the run."""
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    run()
    if on_gpu:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return seconds, (torch.cuda.max_memory_allocated(device) / 2**20 if on_gpu else None)


def measure(runs, device, repeats, progress):
    """Per method: the median seconds over ``repeats`` alternating runs after one warm-up run each, and the peak
    memory over those runs."""
    for run in runs.values():
        run()
        progress.update()
    seconds, peaks = {name: [] for name in runs}, {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            elapsed, peak = timed(run, device)
            seconds[name].append(elapsed)
            peaks[name].append(peak)
            progress.update()
    return {name: (statistics.median(seconds[name]), None if None in peaks[name] else max(peaks[name]))
            for name in runs}


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def markdown_table(rows):
    lines = ["| method | N | ms/step | ratio to plain loop | peak GPU MiB |", "|---|---|---|---|---|"]
    for row in rows:
        peak = "not measured" if row["peak_gpu_mib"] is None else f"{row['peak_gpu_mib']:.0f}"
        lines.append(f"| {row['method']} | {row['num_particles']} | {row['ms_per_step']:.3f} | {row['ratio']:.3f} "
                     f"| {peak} |")
    return "\n".join(lines)


def main(argv=None):
    """Run the benchmark; prints the table and returns its rows (dicts: ``method``, ``num_particles``,
    ``ms_per_step``, ``ratio`` to the plain loop at the same N, ``peak_gpu_mib``)."""
    args = parse_args(argv)
    pyro.set_rng_seed(args.seed)
    kernel_options = {} if args.batch_size is None else {"batch_size": args.batch_size}
    kernel = digits_kernel(num_steps=args.num_steps, device=args.device, **kernel_options)
    model = digit_model(kernel, digit_classifier(args.device))
    settings = dict(device=device_name(args.device), torch=torch.__version__, diffusers=diffusers.__version__,
                    num_steps=kernel.num_steps, batch_size=args.batch_size, repeats=args.repeats,
                    learning=f"TRITSMC, {args.learning_particles} particles x {args.learning_iterations} iterations")
    print(", ".join(f"{key}: {value}" for key, value in settings.items()), flush=True)

    if not args.no_progress:
        print(f"learning the twist ({settings['learning']})", file=sys.stderr, flush=True)
    twist = learned_twist(model, args.learning_particles, args.learning_iterations)
    runs_per_size = {n: samplers(kernel, model, twist, n, args.batch_size) for n in args.num_particles}
    progress = tqdm(total=sum(len(runs) for runs in runs_per_size.values()) * (1 + args.repeats), file=sys.stderr,
                    disable=args.no_progress, desc="timing runs")
    rows = []
    for num_particles, runs in runs_per_size.items():
        progress.set_postfix(N=num_particles)
        results = measure(runs, args.device, args.repeats, progress)
        plain_seconds = results[PLAIN_LOOP][0]
        for name, (seconds, peak) in results.items():
            rows.append(dict(method=name, num_particles=num_particles, ms_per_step=1e3 * seconds / kernel.num_steps,
                             ratio=seconds / plain_seconds, peak_gpu_mib=peak))
    progress.close()
    print(markdown_table(rows), flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(dict(settings, rows=rows), file, indent=1)
    return rows


if __name__ == "__main__":
    main()
