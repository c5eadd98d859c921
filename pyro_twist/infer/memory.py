"""What a run keeps in memory, estimated from one particle before it starts, against what the device has."""
import os

import torch

INDEX_NBYTES = 8  # an int64 ancestor index per particle and resampled step
RECORD_TENSORS = 6  # a transition record: the new and old states, two means, two variances


def available_bytes(device):
    """Free memory on ``device`` in bytes, or ``None`` where it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def kept_bytes(structure, num_particles, keep_paths, record_transitions):
    """A lower bound on the bytes a run keeps: the states of every step (two with ``keep_paths=False``),
    their ancestor indices, and the transition records when asked for; the denoiser's own working
    memory comes on top."""
    steps = structure.num_steps + 1
    kept_states = steps if keep_paths else 2
    per_particle = kept_states * (structure.state_nbytes + INDEX_NBYTES)
    if record_transitions:
        per_particle += RECORD_TENSORS * steps * structure.state_nbytes
    return num_particles * per_particle


def check_memory(structure, num_particles, keep_paths, record_transitions):
    """Raise ``MemoryError`` before a run whose kept states alone exceed the free memory of its device."""
    needed = kept_bytes(structure, num_particles, keep_paths, record_transitions)
    free = available_bytes(structure.device)
    if free is None or needed <= free:
        return
    lean = "" if not keep_paths else ", keep_paths=False (the final states only)"
    raise MemoryError(
        f"{num_particles} particles of {structure.state_nbytes} bytes over {structure.num_steps + 1} steps keep at "
        f"least {needed / 2**30:.3g} GiB, and {structure.device} has {free / 2**30:.3g} GiB free: use fewer "
        f"particles{lean}, or a device with more memory"
    )
