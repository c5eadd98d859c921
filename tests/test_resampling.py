import math

import pytest
import torch

from pyro_twist.smc import RESAMPLERS, ess, get_resampler, log_mean_exp

WEIGHTS = torch.tensor([0.0, 0.31, 0.02, 0.0, 0.17, 0.25, 0.05, 0.2], dtype=torch.float64)


@pytest.mark.parametrize("scheme", sorted(RESAMPLERS))
def test_resampling_is_unbiased_and_skips_zero_weights(scheme):
    resample = get_resampler(scheme)
    n, draws = len(WEIGHTS), 4000
    log_w = WEIGHTS.log() + 3.7  # unnormalised, with -inf for the zero weights
    counts = torch.zeros(n, dtype=torch.float64)
    for _ in range(draws):
        ancestors = resample(log_w, n)
        assert ancestors.shape == (n,)
        counts += torch.bincount(ancestors, minlength=n)
    mean_counts = counts / draws
    expected = n * WEIGHTS
    # Multinomial standard error bounds the other schemes' (they have lower variance).
    standard_error = (n * WEIGHTS * (1 - WEIGHTS) / draws).sqrt()
    assert torch.all((mean_counts - expected).abs() <= 4 * standard_error + 1e-12), (mean_counts, expected)
    assert counts[WEIGHTS == 0].sum() == 0


@pytest.mark.parametrize("scheme", ["systematic", "residual"])
def test_low_variance_schemes_keep_the_integer_part(scheme):
    # Systematic and residual resampling give particle i at least floor(N W_i) copies.
    resample = get_resampler(scheme)
    n = len(WEIGHTS)
    for _ in range(200):
        counts = torch.bincount(resample(WEIGHTS.log(), n), minlength=n)
        assert torch.all(counts >= torch.floor(n * WEIGHTS))


def test_unknown_scheme_names_the_choices():
    with pytest.raises(ValueError, match="unknown resampling scheme 'foo'.*systematic"):
        get_resampler("foo")


def test_ess_and_log_mean_exp():
    log_w = torch.tensor([0.0, 0.0, -math.inf, 0.0])
    assert ess(log_w) == pytest.approx(3.0)
    assert log_mean_exp(torch.log(torch.tensor([1.0, 2.0, 3.0]))) == pytest.approx(math.log(2.0))
    assert ess(torch.tensor([5.0, -1e9])) == pytest.approx(1.0)
