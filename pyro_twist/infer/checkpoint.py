"""What an interrupted computation needs to go on as if it had not stopped: the random number
generators' states, and files written whole or not at all. Everything is kept as tensors, numbers,
strings, lists, tuples and dicts, so that ``torch.load(..., weights_only=True)`` reads it back
without running code."""
import os
import random

import numpy as np
import torch


def rng_state():
    """The states of every generator Pyro seeds (torch, CUDA when in use, numpy, Python's random)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "random": random.getstate(),
    }


def set_rng_state(state):
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))


def save_whole(obj, path):
    """``torch.save`` to a file beside ``path``, then rename it over ``path``: an interruption
    leaves the previous file intact, never half of the new one."""
    partial = f"{path}.partial"
    torch.save(obj, partial)
    os.replace(partial, path)
