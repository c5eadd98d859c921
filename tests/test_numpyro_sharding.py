"""numpyro_twist with its particles split over 4 (forced host) devices: the same pass as on one device."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The device count is fixed when jax starts, so the runs happen in a fresh interpreter.
SHARDED_RUNS = """
import json
import jax, jax.numpy as jnp, numpy as np, numpyro
from tests.numpyro_common import LG_KERNEL, REWARD, lg_model
from numpyro_twist import FKSteering, GaussianMixture, GaussianMixtureKernel, TwistedSMC, diffusion_chain

N, DEVICES = 64, jax.devices()
model = lg_model(LG_KERNEL, REWARD)
# a DDPM, whose denoiser output the particles carry from step to step
RING = GaussianMixtureKernel(GaussianMixture.ring(), num_steps=20)

def ring_model():
    numpyro.factor("reward", diffusion_chain("x", RING, (2,)) @ jnp.array([1.0, 0.4]))

methods = {
    # bootstrap proposals weighted by the optimal twist: weights that vary, so adaptive resampling acts
    "bootstrap": lambda devices: TwistedSMC(model, N, twist=LG_KERNEL.optimal_twist(REWARD), proposal="bootstrap",
                                            ess_threshold=0.5, devices=devices),
    "fk": lambda devices: FKSteering(model, N, devices=devices),
    "fk_ddpm": lambda devices: FKSteering(ring_model, N, devices=devices),
}
report = {"num_devices": len(DEVICES)}
for name, build in methods.items():
    key = jax.random.PRNGKey(3)
    one, many = build(None).run(key), build(DEVICES).run(key)
    states = many.trajectories()  # numpy copies of the sharded arrays
    ancestors = np.asarray(many.ancestors)
    block, dim = N // len(DEVICES), many.trajectories()["x_0"].shape[-1]
    # only the scalar leaves this pass, so only the engine's own constraints can split its loop
    hlo = jax.jit(lambda key: build(DEVICES).pure_run(key).log_evidence).lower(key).compile().as_text()
    report[name] = {
        "log_evidence": abs(float(one.log_evidence) - float(many.log_evidence)),
        "log_weights": float(np.abs(np.asarray(one.log_weights) - np.asarray(many.log_weights)).max()),
        "states": max(float(np.abs(v - one.trajectories()[site]).max()) for site, v in states.items()),
        "same_ancestors": bool((np.asarray(one.ancestors) == ancestors).all()),
        "num_resampling": many.num_resampling,
        "states_devices": len(many._states.sharding.device_set),
        "weights_devices": len(many.log_weights.sharding.device_set),
        "moves_across_devices": int((ancestors // block != np.arange(N) // block).sum()),
        # the chain's loop carries each device's block of states, (N / 4, dim), not all N
        "loop_on_blocks": any(" while(" in line and f"f64[{block},{dim}]" in line for line in hlo.splitlines()),
    }
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SHARDED_RUNS], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("method", ["bootstrap", "fk", "fk_ddpm"])
def test_four_devices_give_the_one_device_pass(report, method):
    assert report["num_devices"] == 4
    runs = report[method]
    assert runs["log_evidence"] < 1e-10, runs
    assert runs["log_weights"] < 1e-10, runs
    assert runs["states"] < 1e-10, runs
    assert runs["same_ancestors"], runs
    assert runs["num_resampling"] > 0, runs


@pytest.mark.parametrize("method", ["bootstrap", "fk", "fk_ddpm"])
def test_particles_live_on_four_devices_and_resampling_crosses_them(report, method):
    runs = report[method]
    assert runs["states_devices"] == 4 and runs["weights_devices"] == 4, runs
    assert runs["loop_on_blocks"], runs
    assert runs["moves_across_devices"] > 0, runs


def test_particles_must_split_evenly_over_the_devices():
    import jax

    from numpyro_twist import FKSteering

    from .numpyro_common import LG_KERNEL, REWARD, lg_model

    devices = jax.devices() * 3  # the same device three times is still three slots of the mesh
    with pytest.raises(ValueError, match="num_particles=10 does not split evenly over 3 devices"):
        FKSteering(lg_model(LG_KERNEL, REWARD), 10, devices=devices)
    with pytest.raises(ValueError, match="sequence of jax devices"):
        FKSteering(lg_model(LG_KERNEL, REWARD), 10, devices=["cpu"])
