"""The shipped digits models: offline loading, a clear error for a missing folder, measured quality."""
import os
import subprocess
import sys
import time

import pyro
import pytest
import torch

from pyro_twist import DiffusersKernel, diffusion_chain
from pyro_twist.pretrained import DIGITS_DIR, digit_classifier, digits_kernel, load_digits

# Any attempt to open a connection fails loudly, so loading succeeds only if nothing reaches for the network.
_OFFLINE_LOAD = """
import socket
def refuse(*args, **kwargs):
    raise RuntimeError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
from pyro_twist.pretrained import digit_classifier, digits_kernel
kernel, classifier = digits_kernel(num_steps=50), digit_classifier()
print(kernel.num_steps, type(classifier).__name__)
"""


def test_shipped_models_load_with_the_network_disabled():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", _OFFLINE_LOAD], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["50", "DigitClassifier"]


def test_missing_folder_fails_at_once_naming_it(tmp_path):
    missing = tmp_path / "my-digits-model"
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=f"no folder '{missing}'.*never downloads"):
        DiffusersKernel.from_pretrained(missing, num_steps=10)
    assert time.perf_counter() - start < 1.0
    (missing / "unet").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has no scheduler/ subfolder"):
        DiffusersKernel.from_pretrained(missing, num_steps=10)


def test_user_folder_loads_like_the_shipped_one():
    kernel = DiffusersKernel.from_pretrained(DIGITS_DIR, num_steps=20, scheduler="ddim", eta=0.5)
    assert (kernel.kind, kernel.num_steps, kernel.event_shape) == ("ddim", 20, (1, 8, 8))


def test_classifier_test_accuracy():
    images, labels = load_digits("test")
    with torch.no_grad():
        accuracy = (digit_classifier()(images).argmax(-1) == labels).double().mean().item()
    assert accuracy >= 0.95  # 0.987 measured


def test_split_is_fixed_and_disjoint():
    train, _ = load_digits("train")
    test, test_labels = load_digits("test")
    assert (len(train), len(test)) == (1347, 450)
    assert torch.bincount(test_labels).tolist() == [45, 46, 44, 46, 45, 46, 45, 45, 43, 45]  # stratified
    assert torch.cdist(test.flatten(1), train.flatten(1)).min(1).values.min() > 0  # no test image is a training one


def test_base_samples_are_confident_digits_of_every_class():
    kernel, classifier = digits_kernel(num_steps=50), digit_classifier()
    with torch.no_grad(), pyro.plate("samples", 300, dim=-1):
        x0 = diffusion_chain("x", kernel, (1, 8, 8))
        probs = classifier(x0).softmax(-1)
    # Measured on 1000 samples: every class 8-12%, mean confidence 0.979 (test images 0.978).
    histogram = torch.bincount(probs.argmax(-1), minlength=10) / 300
    assert histogram.min() > 0.04 and histogram.max() < 0.2
    assert probs.max(-1).values.mean() > 0.93
    assert x0.min() >= -1.0 and x0.max() <= 1.0  # clip_sample keeps states in range at the last step
