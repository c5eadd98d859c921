"""numpyro_twist's JAX forward pass of the shipped digit classifier, against the torch module."""
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

import numpyro_twist.pretrained as jax_pretrained
import pyro_twist.pretrained as torch_pretrained

TOLERANCE = 1e-4  # float32 in both


@pytest.fixture(scope="module")
def classifiers():
    return torch_pretrained.digit_classifier(), jax_pretrained.digit_classifier()


def _torch_logits(classifier, x):
    with torch.no_grad():
        return classifier(torch.from_numpy(x)).numpy()


def test_jax_classifier_loads_without_torch():
    code = "import sys, numpyro_twist.pretrained as p; p.digit_classifier(); sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_logits_match_torch_on_the_test_digits(classifiers):
    torch_classifier, jax_classifier = classifiers
    images, labels = torch_pretrained.load_digits("test")
    x = images.numpy()
    logits = np.asarray(jax.jit(jax_classifier.logits)(x))
    assert logits.dtype == np.float32
    assert np.abs(logits - _torch_logits(torch_classifier, x)).max() < TOLERANCE
    assert (logits.argmax(-1) == labels.numpy()).mean() >= 0.95  # 0.987, as the torch classifier


def test_logits_and_log_prob_match_torch_on_noise_with_batch_dims(classifiers):
    torch_classifier, jax_classifier = classifiers
    x = np.random.default_rng(0).standard_normal((3, 5, 1, 8, 8)).astype(np.float32)
    logits = np.asarray(jax_classifier.logits(x))
    assert logits.shape == (3, 5, 10)
    assert np.abs(logits - _torch_logits(torch_classifier, x)).max() < TOLERANCE
    labels = np.arange(5) * 2  # one label per column, broadcast over the rows
    for label in (7, labels):
        with torch.no_grad():
            expected = torch_classifier.log_prob(torch.from_numpy(x), torch.as_tensor(label)).numpy()
        # the classifier is a pytree of its parameters: it passes through jit as an argument
        log_prob = jax.jit(lambda classifier, x, label: classifier.log_prob(x, label))(jax_classifier, x, label)
        assert np.abs(np.asarray(log_prob) - expected).max() < TOLERANCE


def test_wrong_image_shape_names_the_expected_one(classifiers):
    _, jax_classifier = classifiers
    with pytest.raises(ValueError, match=r"images of shape \(\.\.\., 1, 8, 8\), got \(4, 64\)"):
        jax_classifier.logits(np.zeros((4, 64), np.float32))


def test_a_folder_without_a_classifier_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"'{tmp_path}' has no config.json"):
        jax_pretrained.DigitClassifier.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds a 'UNet2DModel', not a DigitClassifier"):
        jax_pretrained.DigitClassifier.from_pretrained(jax_pretrained.DIGITS_DIR / "unet")
