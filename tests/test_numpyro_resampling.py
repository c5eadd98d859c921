"""numpyro_twist's resampling schemes and weight arithmetic, checked under jit and vmap."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_twist.smc import RESAMPLERS, ess, get_resampler, log_mean_exp

from . import numpyro_common  # noqa: F401  (float64)

WEIGHTS = jnp.array([0.0, 0.31, 0.02, 0.0, 0.17, 0.25, 0.05, 0.2])
DRAWS = 4000


def ancestor_counts(scheme, seed):
    """Counts of each particle's copies over ``DRAWS`` independent resamplings, ``(DRAWS, N)``."""
    n = WEIGHTS.shape[0]
    resample = get_resampler(scheme)
    log_w = jnp.log(WEIGHTS) + 3.7  # unnormalised, with -inf for the zero weights

    def counts(key):
        ancestors = resample(key, log_w, n)
        return jnp.zeros(n, jnp.int32).at[ancestors].add(1)

    keys = jax.random.split(jax.random.PRNGKey(seed), DRAWS)
    return np.asarray(jax.jit(jax.vmap(counts))(keys))


@pytest.mark.parametrize("scheme", sorted(RESAMPLERS))
def test_resampling_is_unbiased_and_skips_zero_weights(scheme):
    counts = ancestor_counts(scheme, 0)
    n, w = len(WEIGHTS), np.asarray(WEIGHTS)
    assert (counts.sum(1) == n).all()
    # the multinomial standard error bounds the other schemes' (they have lower variance)
    standard_error = np.sqrt(n * w * (1 - w) / DRAWS)
    assert np.all(np.abs(counts.mean(0) - n * w) <= 4 * standard_error + 1e-12), (counts.mean(0), n * w)
    assert counts[:, w == 0].sum() == 0


@pytest.mark.parametrize("scheme", ["systematic", "residual"])
def test_low_variance_schemes_keep_the_integer_part(scheme):
    # systematic and residual resampling give particle i at least floor(N W_i) copies
    counts = ancestor_counts(scheme, 1)
    assert np.all(counts >= np.floor(len(WEIGHTS) * np.asarray(WEIGHTS)))


def test_residual_with_exact_integer_parts_is_deterministic():
    log_w = jnp.log(jnp.array([0.5, 0.25, 0.25, 0.0]))
    ancestors = get_resampler("residual")(jax.random.PRNGKey(0), log_w, 4)
    assert np.array_equal(np.sort(np.asarray(ancestors)), [0, 0, 1, 2])


def test_unknown_scheme_names_the_choices():
    with pytest.raises(ValueError, match="unknown resampling scheme 'foo'.*systematic"):
        get_resampler("foo")


def test_ess_and_log_mean_exp():
    assert float(ess(jnp.array([0.0, 0.0, -jnp.inf, 0.0]))) == pytest.approx(3.0)
    assert float(log_mean_exp(jnp.log(jnp.array([1.0, 2.0, 3.0])))) == pytest.approx(math.log(2.0))
    assert float(ess(jnp.array([5.0, -1e9]))) == pytest.approx(1.0)
