"""A loose version of the matched-budget comparison in benchmarks/mixture_steering.py."""
import statistics

from benchmarks.mixture_steering import run_seed

from .conftest import SEED


def test_tri_tsmc_against_fk_and_tds_at_a_matched_budget():
    # Reward scale 2 on the 8-mode ring; TRI-TSMC learns on 256 particles for 5 iterations and
    # samples 1024 (alone, and pooled with its learning runs); FK steering and TDS get the same
    # number of denoiser evaluations (2304 particles).
    runs = [run_seed(3 * SEED + i, num_steps=50, scale=2.0, num_particles=256, num_iterations=5,
                     final_num_particles=1024, ess_threshold=0.5) for i in range(3)]

    def mean(method, key):
        return statistics.mean(run[method][key] for run in runs)

    def spread(method):
        return statistics.stdev(run[method]["log_z_error"] for run in runs)

    baselines = ("FK steering", "TDS")
    for run in runs:  # matched to within one particle's evaluations (1 per step)
        assert all(0 <= run["TRI-TSMC"]["evaluations"] - run[m]["evaluations"] <= 50 for m in baselines)
    recycled = "TRI-TSMC, learning runs recycled"
    print({m: (mean(m, "tv"), mean(m, "ess"), spread(m)) for m in ("TRI-TSMC", recycled) + baselines})
    assert mean("TRI-TSMC", "tv") < 0.04
    assert mean("TRI-TSMC", "tv") <= 1.25 * min(mean(m, "tv") for m in baselines)
    # with its learning runs pooled into the answer, its mode weights are the closest
    assert mean(recycled, "tv") < min(mean(m, "tv") for m in baselines)
    assert mean("TRI-TSMC", "ess") >= 0.6
    assert all(spread("TRI-TSMC") < 0.5 * spread(m) for m in baselines)
