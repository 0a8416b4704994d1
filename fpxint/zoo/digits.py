"""The built-in default model: a small CNN for scikit-learn's bundled 8x8 digits (no network needed).

The BatchNorm layers are deliberate: the engine folds them into the convolutions, and this model is
the quickest place to see that work. The train/test split lives here, in one function, so the
training script and :func:`fpxint.data.load_data` use exactly the same held-out images.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["DigitsCNN", "digits_split", "DIGITS_MEAN", "DIGITS_STD", "DIGITS_SPLIT"]

# Mean and std of the training split's pixels after dividing by 16 (computed once, fixed here so
# that normalization never depends on which images a run happens to load).
DIGITS_MEAN = (0.3052,)
DIGITS_STD = (0.3760,)
DIGITS_SPLIT = "sklearn load_digits, train_test_split(test_size=0.25, stratify=y, random_state=0)"


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class DigitsCNN(nn.Module):
    """Three conv-BN-ReLU blocks, max and average pooling, a linear classifier; 1x8x8 -> 10 logits.

    Args:
        width: Channels of the first block; later blocks use 2x and 4x.
        num_classes: Classifier outputs.
    """

    def __init__(self, width: int = 16, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            _block(1, width),
            _block(width, 2 * width),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            _block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


SPLIT_FILE = Path(__file__).resolve().parents[1] / "weights" / "digits_split.json"


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits.csv.gz read directly: `import sklearn` costs about a second."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the built-in digits data needs scikit-learn installed (pip install scikit-learn)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


def sklearn_test_indices() -> list[int]:
    """Indices of the test split exactly as DIGITS_SPLIT defines it (imports scikit-learn)."""
    from sklearn.model_selection import train_test_split

    _, y = _read_digits()
    _, test = train_test_split(np.arange(len(y)), test_size=0.25, stratify=y, random_state=0)
    return [int(i) for i in test]


def digits_split(split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the digits images and labels of one split of the fixed stratified split.

    The split's indices are bundled (weights/digits_split.json, written by scripts/train_digits.py
    and checked against scikit-learn's `train_test_split` in the tests), so the app does not have
    to import scikit-learn.

    Args:
        split: ``"train"`` (1,347 images), ``"test"`` (450) or ``"all"`` (1,797).

    Returns:
        ``(images, labels)``: float32 ``(N, 1, 8, 8)`` with raw pixel values 0..16, int64 ``(N,)``.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"digits split must be 'train', 'test' or 'all', got {split!r}")
    x, y = _read_digits()
    if split == "test":
        idx = np.asarray(json.loads(SPLIT_FILE.read_text())["test_indices"])
        x, y = x[idx], y[idx]
    elif split == "train":  # training only: the order train_test_split gives, so training is reproducible
        from sklearn.model_selection import train_test_split

        idx, _ = train_test_split(np.arange(len(y)), test_size=0.25, stratify=y, random_state=0)
        x, y = x[idx], y[idx]
    return torch.tensor(x, dtype=torch.float32).unsqueeze(1), torch.tensor(y, dtype=torch.int64)
