"""scikit-learn's bundled handwritten digits: 1797 images of 8x8 pixels, 10 classes, no download."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from roar.data.datamodule import Split, TensorDataModule


def stratified_splits(
    images: torch.Tensor, labels: torch.Tensor, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, Split]:
    """A seeded, class-stratified train/val/test split of in-memory tensors."""
    indices = torch.arange(len(labels)).numpy()
    rest, test = train_test_split(indices, test_size=test_fraction, stratify=labels, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), stratify=labels[rest], random_state=seed
    )
    return {
        name: Split(images[idx], labels[idx])
        for name, idx in (("train", train), ("val", val), ("test", test))
    }


class DigitsDataModule(TensorDataModule):
    def __init__(
        self,
        val_fraction: float = 0.15,
        test_fraction: float = 0.2,
        batch_size: int = 64,
        split_seed: int = 0,
    ):
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(digits.target, dtype=torch.int64)
        splits = stratified_splits(images, labels, val_fraction, test_fraction, split_seed)
        super().__init__(splits, num_classes=10, batch_size=batch_size)
