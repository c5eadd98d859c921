"""FK steering of the shipped digits model toward a digit in pyro_twist and in numpyro_twist: the same
share of the digit among the steered samples and the same evidence, within Monte Carlo error.

The reward is the classifier's ``log p(label | x_0)``, so ``Z`` is the share of the model's samples the
classifier gives to ``label`` (about 0.1). Each backend runs its own UNet and classifier (they agree to
1e-4, ``test_numpyro_unet.py`` and ``test_numpyro_classifier.py``); the chain has 20 steps to keep the
test near a minute on one core.
"""
import math

import jax
import numpy as np
import numpyro
import pyro
import pytest
import torch

import numpyro_twist
import numpyro_twist.pretrained as jax_pretrained
import pyro_twist
import pyro_twist.pretrained as torch_pretrained

NUM_STEPS, NUM_PARTICLES, REPEATS = 20, 64, 12


@pytest.fixture(scope="module")
def samplers():
    torch_kernel, torch_classifier = torch_pretrained.digits_kernel(NUM_STEPS), torch_pretrained.digit_classifier()
    jax_kernel, jax_classifier = jax_pretrained.digits_kernel(NUM_STEPS), jax_pretrained.digit_classifier()

    def pyro_model(label):
        x0 = pyro_twist.diffusion_chain("x", torch_kernel, (1, 8, 8))
        pyro.factor("reward", torch_classifier.log_prob(x0, label))

    def numpyro_model(label):
        x0 = numpyro_twist.diffusion_chain("x", jax_kernel, (1, 8, 8))
        numpyro.factor("reward", jax_classifier.log_prob(x0, label))

    def torch_hits(x0, label):
        with torch.no_grad():
            return (torch_classifier(torch.as_tensor(x0)).argmax(-1) == label).numpy()

    def jax_hits(x0, label):
        return np.asarray(jax_classifier.logits(x0).argmax(-1) == label)

    # the label is a run argument: numpyro_twist compiles one pass for every label
    return ((pyro_twist.FKSteering(pyro_model, NUM_PARTICLES, progress_bar=False), torch_hits),
            (numpyro_twist.FKSteering(numpyro_model, NUM_PARTICLES, keep_paths=False), jax_hits))


def _rate_and_log_evidence(result, hits):
    """The weighted share of final particles the classifier labels as the target, and ``log Z_hat``."""
    weights = np.asarray(result.get_normalized_weights(), np.float64)
    return float(weights @ hits(result.trajectories()["x_0"])), float(result.log_evidence)


@pytest.mark.parametrize("label", [3, 8])
def test_target_rate_and_log_evidence_agree_between_backends(samplers, label):
    (pyro_sampler, torch_hits), (numpyro_sampler, jax_hits) = samplers
    pyro.set_rng_seed(label)
    torch_runs = np.array([_rate_and_log_evidence(pyro_sampler.run(label), lambda x0: torch_hits(x0, label))
                           for _ in range(REPEATS)])
    keys = jax.random.split(jax.random.PRNGKey(label), REPEATS)
    jax_runs = np.array([_rate_and_log_evidence(numpyro_sampler.run(key, label), lambda x0: jax_hits(x0, label))
                         for key in keys])
    for column, quantity in enumerate(("target rate", "log Z_hat")):
        torch_values, jax_values = torch_runs[:, column], jax_runs[:, column]
        # the same estimator: equal means within 4 standard errors of their difference
        difference_se = math.sqrt(torch_values.var(ddof=1) / REPEATS + jax_values.var(ddof=1) / REPEATS)
        assert abs(torch_values.mean() - jax_values.mean()) <= 4 * difference_se, (
            quantity, torch_values.mean(), jax_values.mean(), difference_se)
    # both steer: about a tenth of the model's own samples are any one digit
    assert torch_runs[:, 0].mean() > 0.8 and jax_runs[:, 0].mean() > 0.8
