"""Small real data sets for tests, as tensors (no files)."""

from __future__ import annotations

import torch


def digits_images(train: slice, val: slice):
    """scikit-learn's 8x8 digits as 3-channel uint8 images (0-255): (train, val) TensorDatasets of the given rows."""
    from sklearn.datasets import load_digits
    from torch.utils.data import TensorDataset

    d = load_digits()
    x = torch.tensor(d.images * 255 / 16, dtype=torch.uint8).unsqueeze(1).repeat(1, 3, 1, 1)
    y = torch.tensor(d.target)
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])
