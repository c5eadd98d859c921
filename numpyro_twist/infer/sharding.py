"""Particles sharded across devices: the particle axis of the pass's arrays split over a 1-d mesh.

Every particle array of a pass is constrained to a ``NamedSharding`` whose particle axis is split over
the devices, so each device draws, denoises and weights its own block of particles, while the
computation stays the one of a single device: resampling draws ancestors from all particles (the
compiler gathers across devices where a particle is copied to another device's block), and the
weights' sums run over every device. The results equal those of one device for the same key, up to
the order of floating-point sums.

Several hosts: call ``jax.distributed.initialize()`` in every process, pass ``devices=jax.devices()``
(every host's devices), and run the same program with the same key in every process. The pass's
arrays are then global arrays of which each process holds its own devices' blocks; read a whole one
on a host with ``jax.experimental.multihost_utils.process_allgather``.
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PARTICLE_AXIS = "particles"


class ParticleSharding:
    """The particle axis split over ``devices``: a sequence of devices, or a 1-d ``jax.sharding.Mesh``
    (whose axis then holds the particles). ``num_particles`` must split evenly over them."""

    def __init__(self, devices, num_particles):
        if isinstance(devices, Mesh):
            if len(devices.axis_names) != 1:
                raise ValueError(f"devices is a mesh with axes {devices.axis_names}: particles are split over a "
                                 "1-d mesh; pass Mesh(np.array(jax.devices()), ('particles',)) or a list of devices")
        else:
            devices = list(devices)
            if not devices or not all(isinstance(d, jax.Device) for d in devices):
                raise ValueError(f"devices must be a non-empty sequence of jax devices (e.g. jax.devices()) or a 1-d "
                                 f"Mesh, got {devices!r}")
        num_devices = devices.size if isinstance(devices, Mesh) else len(devices)
        if num_particles % num_devices:
            raise ValueError(
                f"num_particles={num_particles} does not split evenly over {num_devices} devices: use a multiple of "
                f"{num_devices} (e.g. {num_devices * -(-num_particles // num_devices)}), or fewer devices"
            )
        self.mesh = devices if isinstance(devices, Mesh) else Mesh(np.array(devices), (PARTICLE_AXIS,))
        self.axis = self.mesh.axis_names[0]

    def constrain(self, tree, particle_axis=0):
        """Every array of ``tree`` with its ``particle_axis`` split over the devices (inside ``jit``)."""
        spec = PartitionSpec(*[None] * particle_axis, self.axis)
        return jax.tree.map(lambda v: jax.lax.with_sharding_constraint(v, NamedSharding(self.mesh, spec)), tree)
