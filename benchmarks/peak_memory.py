"""Peak memory and time of steering the shipped digits model with many particles.

Each method (ImportanceSampling, FKSteering, TDS) runs in a fresh process that loads the
shipped DDPM with the denoiser's ``batch_size`` and steers it toward a digit with the shipped
classifier's ``log p(label | x0) / temperature``. Reported: the process's resident memory
after loading (torch, the models) and its peak at the end of the run (``ru_maxrss``), the
run's seconds and denoiser evaluations. With a batch size the denoiser's memory stays that of
one batch; what grows with N is the sampler's own storage (every step's states, for the
trajectories) and the reward, which the model evaluates on all particles at once.

    python benchmarks/peak_memory.py --num-particles 4096 16384 --batch-size 1024
"""
import argparse
import json
import resource
import subprocess
import sys
import time

METHODS = ("ImportanceSampling", "FKSteering", "TDS")


def resident_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(method, num_particles, batch_size, num_steps, label, temperature, seed, threads):
    """One run in this process; returns its measurements."""
    import pyro
    import torch

    torch.set_num_threads(threads)

    import pyro_twist
    from pyro_twist.demo import digit_model
    from pyro_twist.pretrained import digit_classifier, digits_kernel

    kernel = digits_kernel(num_steps=num_steps, batch_size=batch_size)
    model = digit_model(kernel, digit_classifier(), temperature)

    pyro.set_rng_seed(seed)
    loaded = resident_mib()
    start = time.perf_counter()
    result = getattr(pyro_twist, method)(model, num_particles, progress_bar=False).run(label)
    seconds = time.perf_counter() - start
    return {"method": method, "num_particles": num_particles, "batch_size": batch_size, "loaded_mib": loaded,
            "peak_mib": resident_mib(), "seconds": seconds, "evaluations": kernel.num_evaluations,
            "ess_final": result.ess_final.item()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-particles", type=int, nargs="+", default=[16384])
    parser.add_argument("--batch-size", type=int, default=1024, help="rows per denoiser call (0: all at once)")
    parser.add_argument("--num-steps", type=int, default=50)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--label", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (on a shared CPU more than one thread can be many times slower)")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)  # one measurement, printed as JSON
    args = parser.parse_args(argv)
    batch_size = args.batch_size or None
    if args.worker:
        print(json.dumps(measure(args.worker, args.num_particles[0], batch_size, args.num_steps, args.label,
                                 args.temperature, args.seed, args.threads)))
        return
    print(f"digits DDPM, {args.num_steps} steps, reward log p({args.label} | x0) / {args.temperature}, "
          f"denoiser batch size {batch_size or 'all'}, {args.threads} thread(s); each run in a fresh process")
    print("| method | particles | loaded MiB | peak MiB | seconds | denoiser evals | final ESS |")
    print("|---|---|---|---|---|---|---|")
    for num_particles in args.num_particles:
        for method in args.methods:
            command = [sys.executable, __file__, "--worker", method, "--num-particles", str(num_particles),
                       "--batch-size", str(args.batch_size), "--num-steps", str(args.num_steps),
                       "--label", str(args.label), "--temperature", str(args.temperature), "--seed", str(args.seed),
                       "--threads", str(args.threads)]
            worker = subprocess.run(command, capture_output=True, text=True)
            if worker.returncode != 0:
                raise RuntimeError(f"{method} with N = {num_particles} failed:\n{worker.stderr}")
            m = json.loads(worker.stdout.strip().splitlines()[-1])
            print(f"| {method} | {num_particles} | {m['loaded_mib']:.0f} | {m['peak_mib']:.0f} | {m['seconds']:.1f} | "
                  f"{m['evaluations']} | {m['ess_final']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
