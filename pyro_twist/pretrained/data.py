"""scikit-learn's bundled 8x8 digits, scaled to [-1, 1], with the fixed train/test split the shipped models use."""
import numpy as np
import torch

TEST_FRACTION = 0.25
SPLIT_SEED = 0


def load_digits(split="train", dtype=torch.float32):
    """Images ``(M, 1, 8, 8)`` in ``[-1, 1]`` and labels ``(M,)`` of one split (``"train"`` or ``"test"``).

    The split is stratified by class and fixed, so the shipped models never saw the test images.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    index = np.arange(len(digits.target))
    train, test = train_test_split(index, test_size=TEST_FRACTION, stratify=digits.target, random_state=SPLIT_SEED)
    chosen = train if split == "train" else test
    images = torch.as_tensor(digits.images[chosen] / 8.0 - 1.0, dtype=dtype).unsqueeze(1)
    return images, torch.as_tensor(digits.target[chosen], dtype=torch.long)
