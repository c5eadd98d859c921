"""Twisted Gaussian proposals: the base transition's mean moved along the twist's gradient."""
import jax.numpy as jnp


def bounded_shift(shift, variance, max_shift):
    """``shift`` per row, scaled down where its norm exceeds ``max_shift`` times the norm of the
    standard deviation ``variance ** 0.5`` (``max_shift=None``: unchanged). A gradient of a sharp reward
    can be far larger than one step of the chain can follow; any proposal keeps the weights exact."""
    if max_shift is None:
        return shift
    axes = tuple(range(1, shift.ndim))
    limit = max_shift * jnp.sqrt(jnp.broadcast_to(variance, shift.shape).sum(axes, keepdims=True))
    norm = jnp.sqrt(jnp.square(shift).sum(axes, keepdims=True))
    return shift * jnp.minimum(limit / jnp.maximum(norm, jnp.finfo(shift.dtype).tiny), 1.0)
