"""In-memory image datasets: every split is one tensor, batches are cut by indexing, never per image."""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Images in [0, 1] as (N, C, H, W) float32, labels as (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.ndim != 4 or self.labels.ndim != 1 or len(self.images) != len(self.labels):
            raise ValueError(
                f"a split needs images (N,C,H,W) and labels (N,); got {tuple(self.images.shape)} "
                f"and {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return len(self.labels)


class _IndexedBatches(torch.utils.data.Dataset):
    """Indexed with a whole list of indices at once (the DataLoader runs with batch_size=None)."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, indices):
        indices = torch.as_tensor(indices)
        return self.split.images[indices], self.split.labels[indices]


class TensorDataModule(pl.LightningDataModule):
    """A datamodule over three in-memory splits.

    Images are kept raw (in [0, 1]); normalisation with the training split's per-channel mean and std is
    applied per batch on the device (`normalize`), so that removal can fill pixels with the raw training
    mean, which the network then sees as exactly zero.
    """

    # Per split, the pixels that decide each image's label (N, H, W) bool, where the dataset knows them.
    ground_truth: dict[str, torch.Tensor] | None = None

    def __init__(self, splits: dict[str, Split], num_classes: int, batch_size: int = 64):
        super().__init__()
        missing = set(SPLITS) - set(splits)
        if missing:
            raise ValueError(f"missing splits: {sorted(missing)}")
        self.splits = splits
        self.num_classes = num_classes
        self.batch_size = batch_size
        train = splits["train"].images
        self.mean = train.mean(dim=(0, 2, 3))
        self.std = train.std(dim=(0, 2, 3)).clamp_min(1e-6)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.splits["train"].images.shape[1:])

    def with_images(self, images: dict[str, torch.Tensor]) -> TensorDataModule:
        """The same labels, statistics and batching over replaced images (the ROAR-modified dataset)."""
        splits = {name: Split(images[name], split.labels) for name, split in self.splits.items()}
        clone = TensorDataModule(splits, self.num_classes, self.batch_size)
        clone.mean, clone.std = self.mean, self.std
        return clone

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        return (images - self.mean.to(images).view(shape)) / self.std.to(images).view(shape)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        return self.normalize(images), labels

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = _IndexedBatches(self.splits[split])
        # The shuffle draws from torch's global generator, which the training stage seeds.
        sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        return DataLoader(
            dataset, sampler=BatchSampler(sampler, self.batch_size, drop_last=False), batch_size=None
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
