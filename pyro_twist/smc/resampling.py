"""Resampling schemes.

Every scheme has one signature, ``scheme(log_w, num_samples=None) -> ancestors``:
``log_w`` holds unnormalised log-weights of shape ``(N,)``; the result is a
``LongTensor`` of ancestor indices whose expected counts are ``num_samples * W_i``
(``W`` the normalised weights). Particles of weight zero are never chosen.
Randomness comes from torch's global generator (``pyro.set_rng_seed``). Ancestors live on
the weights' device, and only residual resampling reads a number back from it (how many
copies it has placed).
"""
import torch

from .weights import normalized_weights


def _inverse_cdf(weights, uniforms):
    # A small guard keeps round-off in the cumulative sum from selecting an index
    # past the last particle of positive weight.
    cdf = torch.cumsum(weights, 0)
    cdf = cdf / cdf[-1]
    idx = torch.searchsorted(cdf, uniforms, right=True)
    last_positive = weights.shape[0] - 1 - torch.argmax((weights.flip(0) > 0).to(torch.uint8))
    return torch.minimum(idx, last_positive)


def multinomial(log_w, num_samples=None):
    weights = normalized_weights(log_w)
    n = weights.shape[0] if num_samples is None else num_samples
    return torch.multinomial(weights, n, replacement=True)


def stratified(log_w, num_samples=None):
    weights = normalized_weights(log_w)
    n = weights.shape[0] if num_samples is None else num_samples
    options = {"dtype": weights.dtype, "device": weights.device}
    u = (torch.arange(n, **options) + torch.rand(n, **options)) / n
    return _inverse_cdf(weights, u)


def systematic(log_w, num_samples=None):
    weights = normalized_weights(log_w)
    n = weights.shape[0] if num_samples is None else num_samples
    options = {"dtype": weights.dtype, "device": weights.device}
    u = (torch.arange(n, **options) + torch.rand((), **options)) / n
    return _inverse_cdf(weights, u)


def residual(log_w, num_samples=None):
    weights = normalized_weights(log_w)
    n = weights.shape[0] if num_samples is None else num_samples
    expected = n * weights
    copies = torch.floor(expected).long()
    num_copies = int(copies.sum())
    deterministic = torch.repeat_interleave(torch.arange(weights.shape[0], device=weights.device), copies,
                                            output_size=num_copies)
    num_rest = n - num_copies
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
