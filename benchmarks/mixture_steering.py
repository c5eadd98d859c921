"""Matched-budget comparison on the 8-mode ring: TRI-TSMC against FK steering and TDS.

Budgets are counted in denoiser evaluations (one per particle per call of the
exact mixture denoiser; a look-ahead and the transition from the same state share
one), TRI-TSMC's learning included: it learns on ``num_particles`` for
``num_iterations`` and then samples ``final_num_particles``, with its twist's
gradient proposals or with Newton proposals (same budget); it is also reported with
its learning runs pooled into the answer (``recycle=True``, same budget). FK steering
and TDS get as many particles as that budget buys them. Every method resamples by
the same rule (ESS below ``ess_threshold * N``). Backward passes are not counted: TDS
takes one through the denoiser per step, TRI-TSMC only through its own small network.
Reported over seeds: total variation
between the samples' mode weights and the exact tilted mixture, final ESS/N, the
error of log Z_hat against the exact tilted mixture's log Z, and how many steps
resampled (the final ESS of a run counts only the steps since its last resampling;
a pool of runs has no resampling of its own). For scale, each table ends with the
sampling floor: the mean total variation of n exact draws from the tilted mixture,
at the final run's and the baselines' particle numbers.

    python benchmarks/mixture_steering.py --seeds 5 --workers 2
"""
import argparse
import functools
import multiprocessing
import statistics

import pyro
import torch

from pyro_twist import TDS, TRITSMC, FKSteering, GaussianMixture, GaussianMixtureKernel, TwistedSMC, diffusion_chain


def make_problem(num_steps, scale):
    mixture = GaussianMixture.ring(num_components=8, radius=3.0, std=0.3)
    kernel = GaussianMixtureKernel(mixture, num_steps=num_steps)
    a = scale * torch.tensor([1.0, 0.4], dtype=torch.float64)

    def model():
        x0 = diffusion_chain("x", kernel, (2,))
        pyro.factor("reward", x0 @ a)

    return mixture, kernel, a, model


def metrics(result, mixture, a):
    target = mixture.tilted(a)
    weights = mixture.mode_weights(result.trajectories()["x_0"], result.get_normalized_weights())
    return {
        "tv": 0.5 * (weights - target.weights).abs().sum().item(),
        "ess": (result.ess_final / result.num_particles).item(),
        "log_z_error": (result.log_evidence - mixture.log_normalizer(a)).item(),
        "resamplings": result.resampled.sum().item(),
    }


def sampling_floor(mixture, a, n, repeats=4000):
    """Mean total variation between the mode frequencies of ``n`` exact draws and the tilted weights."""
    weights = mixture.tilted(a).weights
    generator = torch.Generator().manual_seed(0)
    counts = torch.stack([torch.multinomial(weights, n, replacement=True, generator=generator).bincount(
        minlength=len(weights)) for _ in range(repeats)])
    return 0.5 * (counts / n - weights).abs().sum(-1).mean().item()


def run_seed(seed, num_steps, scale, num_particles, num_iterations, final_num_particles, ess_threshold):
    mixture, kernel, a, model = make_problem(num_steps, scale)
    rows = {}
    pyro.set_rng_seed(seed)
    kernel.num_evaluations = 0
    tri = TRITSMC(model, num_particles=num_particles, num_iterations=num_iterations, ess_threshold=ess_threshold,
                  final_num_particles=final_num_particles, recycle=True, progress_bar=False)
    pooled = tri.run()
    budget = kernel.num_evaluations
    label = f"{num_particles} x {num_iterations} + {final_num_particles}"
    rows["TRI-TSMC"] = dict(metrics(tri.final_result, mixture, a), particles=label, evaluations=budget)
    rows["TRI-TSMC, learning runs recycled"] = dict(metrics(pooled, mixture, a), particles=label, evaluations=budget)
    # The same learned twist, its final run with Newton proposals (no extra denoiser call).
    pyro.set_rng_seed(seed)
    result = TwistedSMC(model, final_num_particles, twist=tri.twist, ess_threshold=ess_threshold, proposal="newton",
                        progress_bar=False).run()
    rows["TRI-TSMC, Newton final run"] = dict(metrics(result, mixture, a), particles=label, evaluations=budget)
    for name, method in (("FK steering", FKSteering), ("TDS", TDS)):
        kernel.num_evaluations = 0
        method(model, 8, progress_bar=False).run()
        per_particle = kernel.num_evaluations / 8
        particles = int(budget // per_particle)
        pyro.set_rng_seed(seed)
        kernel.num_evaluations = 0
        result = method(model, particles, ess_threshold=ess_threshold, progress_bar=False).run()
        rows[name] = dict(metrics(result, mixture, a), particles=particles, evaluations=kernel.num_evaluations)
    return rows


def _single_threaded():
    torch.set_num_threads(1)  # the workers share the cores


def _run_job(job, problem):
    scale, seed = job
    return run_seed(seed, scale=scale, **problem)


def run_jobs(jobs, workers, **problem):
    """``run_seed`` for each ``(scale, seed)`` of ``jobs``, on ``workers`` processes (one core each)."""
    run = functools.partial(_run_job, problem=problem)
    if workers <= 1:
        return [run(job) for job in jobs]
    with multiprocessing.get_context("fork").Pool(workers, initializer=_single_threaded) as pool:
        return pool.map(run, jobs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--num-steps", type=int, default=50)
    parser.add_argument("--num-particles", type=int, default=256)
    parser.add_argument("--num-iterations", type=int, default=5)
    parser.add_argument("--final-num-particles", type=int, default=1024)
    parser.add_argument("--ess-threshold", type=float, default=0.5,
                        help="the resampling rule of every method's run: resample when ESS < threshold * N")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--workers", type=int, default=1,
                        help="processes running seeds side by side, one core each")
    args = parser.parse_args()
    print("| reward scale | method | particles | denoiser evals | TV to tilted | final ESS/N | log Z error "
          "| resamplings |")
    print("|---|---|---|---|---|---|---|---|")
    jobs = [(scale, seed) for scale in args.scales for seed in range(args.seeds)]
    results = run_jobs(jobs, args.workers, num_steps=args.num_steps, num_particles=args.num_particles,
                       num_iterations=args.num_iterations, final_num_particles=args.final_num_particles,
                       ess_threshold=args.ess_threshold)
    for scale in args.scales:
        runs = [rows for (job_scale, _), rows in zip(jobs, results) if job_scale == scale]
        for name in runs[0]:
            cell = {}
            for key in ("tv", "ess", "log_z_error"):
                values = [run[name][key] for run in runs]
                cell[key] = f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
            resamplings = statistics.mean(run[name]["resamplings"] for run in runs)
            print(f"| {scale} | {name} | {runs[0][name]['particles']} | {runs[0][name]['evaluations']} | "
                  f"{cell['tv']} | {cell['ess']} | {cell['log_z_error']} | {resamplings:.1f} |", flush=True)
        mixture, _, a, _ = make_problem(args.num_steps, scale)
        for n in (args.final_num_particles, runs[0]["TDS"]["particles"]):
            print(f"| {scale} | {n} exact draws (sampling floor) | {n} | | {sampling_floor(mixture, a, n):.3f} | 1 "
                  "| | |")


if __name__ == "__main__":
    main()
