"""Resampling schemes.

Every scheme has one signature, ``scheme(log_w, num_samples=None) -> ancestors``:
``log_w`` holds unnormalised log-weights of shape ``(N,)``; the result is a
``LongTensor`` of ancestor indices whose expected counts are ``num_samples * W_i``
(``W`` the normalised weights). Particles of weight zero are never chosen.
Randomness comes from torch's global generator (``pyro.set_rng_seed``).
"""
import torch

from .weights import normalized_weights


def _inverse_cdf(weights, uniforms):
    # A small guard keeps round-off in the cumulative sum from selecting an index
    # past the last particle of positive weight.
    cdf = torch.cumsum(weights, 0)
    cdf = cdf / cdf[-1]
    idx = torch.searchsorted(cdf, uniforms, right=True)
    last_positive = torch.nonzero(weights > 0).max()
    return idx.clamp(max=int(last_positive))


def multinomial(log_w, num_samples=None):
    weights = normalized_weights(log_w)
    n = weights.shape[0] if num_samples is None else num_samples
    return torch.multinomial(weights, n, replacement=True)


def stratified(log_w, num_samples=None):
    weights = normalized_weights(log_w)
    n = weights.shape[0] if num_samples is None else num_samples
    u = (torch.arange(n, dtype=weights.dtype) + torch.rand(n, dtype=weights.dtype)) / n
    return _inverse_cdf(weights, u)


def systematic(log_w, num_samples=None):
    weights = normalized_weights(log_w)
    n = weights.shape[0] if num_samples is None else num_samples
    u = (torch.arange(n, dtype=weights.dtype) + torch.rand((), dtype=weights.dtype)) / n
    return _inverse_cdf(weights, u)


def residual(log_w, num_samples=None):
    weights = normalized_weights(log_w)
    n = weights.shape[0] if num_samples is None else num_samples
    expected = n * weights
    copies = torch.floor(expected).long()
    deterministic = torch.repeat_interleave(torch.arange(weights.shape[0]), copies)
    num_rest = n - int(copies.sum())
    if num_rest == 0:
        return deterministic
    rest = expected - copies
    random = torch.multinomial(rest / rest.sum(), num_rest, replacement=True)
    return torch.cat([deterministic, random])


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
            "or a callable (log_w, num_samples) -> ancestor indices"
        ) from None
