"""Resampling schemes, written for jit.

Every scheme has one signature, ``scheme(rng_key, log_w, num_samples) -> ancestors``:
``log_w`` holds unnormalised log-weights of shape ``(N,)``; the result is an integer
array of ``num_samples`` ancestor indices whose expected counts are ``num_samples * W_i``
(``W`` the normalised weights). Particles of weight zero are never chosen. Shapes are
fixed by ``num_samples`` alone, so every scheme runs inside ``jit``, ``vmap`` and ``lax.scan``.
"""
import jax
import jax.numpy as jnp

from .weights import normalized_weights


def _inverse_cdf(weights, uniforms):
    # Round-off in the cumulative sum could select an index past the last particle
    # of positive weight; clamp to it.
    cdf = jnp.cumsum(weights)
    cdf = cdf / cdf[-1]
    index = jnp.searchsorted(cdf, uniforms, side="right")
    last_positive = weights.shape[0] - 1 - jnp.argmax(weights[::-1] > 0)
    return jnp.minimum(index, last_positive)


def multinomial(rng_key, log_w, num_samples):
    return jax.random.categorical(rng_key, log_w, shape=(num_samples,))


def stratified(rng_key, log_w, num_samples):
    weights = normalized_weights(log_w)
    u = (jnp.arange(num_samples) + jax.random.uniform(rng_key, (num_samples,), weights.dtype)) / num_samples
    return _inverse_cdf(weights, u)


def systematic(rng_key, log_w, num_samples):
    weights = normalized_weights(log_w)
    u = (jnp.arange(num_samples) + jax.random.uniform(rng_key, (), weights.dtype)) / num_samples
    return _inverse_cdf(weights, u)


def residual(rng_key, log_w, num_samples):
    """``floor(n W_i)`` copies of each particle, the rest drawn in proportion to the remainders.

    The number of deterministic copies depends on the weights, so both parts are computed for
    all ``num_samples`` slots and each slot takes the one that applies to it.
    """
    weights = normalized_weights(log_w)
    expected = num_samples * weights
    copies = jnp.floor(expected)
    slots = jnp.arange(num_samples)
    # slot j holds a deterministic copy of the particle whose copies cover j
    deterministic = jnp.searchsorted(jnp.cumsum(copies), slots, side="right")
    rest = jnp.log(jnp.clip(expected - copies, 0.0))
    random = jax.random.categorical(rng_key, rest, shape=(num_samples,))
    return jnp.where(slots < copies.sum(), deterministic, random)


RESAMPLERS = {
    "systematic": systematic,
    "stratified": stratified,
    "multinomial": multinomial,
    "residual": residual,
}


def get_resampler(scheme):
    """The resampling function for ``scheme``: a name in ``RESAMPLERS`` or a callable."""
    if callable(scheme):
        return scheme
    try:
        return RESAMPLERS[scheme]
    except KeyError:
        raise ValueError(
            f"unknown resampling scheme {scheme!r}: use one of {sorted(RESAMPLERS)} "
            "or a callable (rng_key, log_w, num_samples) -> ancestor indices"
        ) from None
