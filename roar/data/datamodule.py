"""In-memory image datasets: every split is one tensor, batches are cut by indexing, never per image."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, default_convert

from roar.removal import replace_pixels

SPLITS = ("train", "val", "test")


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1], from uint8 images in [0, 255] or float images already in [0, 1]."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images


@dataclass(frozen=True)
class Split:
    """Images as (N, C, H, W), uint8 in [0, 255] or float in [0, 1]; labels as (N,) int64; and for a
    ROAR-modified split, `removed`: (N, H, W) bool, the pixels that take the fill value in every batch
    ((N, C, H, W) when single channel values are removed)."""

    images: torch.Tensor
    labels: torch.Tensor
    removed: torch.Tensor | None = None

    def __post_init__(self):
        if self.images.ndim != 4 or self.labels.ndim != 1 or len(self.images) != len(self.labels):
            raise ValueError(
                f"a split needs images (N,C,H,W) and labels (N,); got {tuple(self.images.shape)} "
                f"and {tuple(self.labels.shape)}"
            )
        pixels = (self.images.shape[0], *self.images.shape[2:])
        if self.removed is not None and tuple(self.removed.shape) not in (pixels, tuple(self.images.shape)):
            raise ValueError(
                f"removed must be {pixels} or {tuple(self.images.shape)}, got {tuple(self.removed.shape)}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> Split:
        removed = None if self.removed is None else self.removed.to(device)
        return Split(self.images.to(device), self.labels.to(device), removed)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(images, labels), plus the removal mask for a modified split."""
        cut = (self.images[indices], self.labels[indices])
        return cut if self.removed is None else (*cut, self.removed[indices])


class _IndexedBatches(torch.utils.data.Dataset):
    """Cut a whole batch with one indexing operation on the tensors' own device (`__getitems__`)."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        return self.split.batch(torch.as_tensor(indices, device=self.split.labels.device))


def channel_statistics(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of images in [0, 1] (uint8 scaled by 1/255), accumulated in
    float64 over chunks so that a large uint8 dataset is never expanded to float at once."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for part in images.split(chunk):
        values = unit_range(part).double().cpu()
        total += values.sum(dim=(0, 2, 3))
        squares += values.square().sum(dim=(0, 2, 3))
    count = images.numel() // images.shape[1]
    mean = total / count
    variance = (squares - count * mean.square()) / max(count - 1, 1)
    return mean.float(), variance.clamp_min(0).sqrt().float().clamp_min(1e-6)


class TensorDataModule(pl.LightningDataModule):
    """A datamodule over three in-memory splits.

    Images are kept raw (uint8, or float in [0, 1]); every batch is formed on the device it is used on:
    normalised with the training split's per-channel mean and std (`normalize`), its removed pixels (if any)
    replaced by the fill, and, for training batches, augmented (`augment`, e.g. `RandomCropFlip`). With the
    fill at the raw training mean, removed pixels are exactly zero to the network. With `on_device`, the
    splits are moved once to the trainer's device in `setup`, so a GPU never waits on host-to-device copies.
    """

    # Per split, the pixels that decide each image's label (N, H, W) bool, where the dataset knows them.
    ground_truth: dict[str, torch.Tensor] | None = None

    def __init__(
        self,
        splits: dict[str, Split],
        num_classes: int,
        batch_size: int = 64,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        on_device: bool = True,
        statistics: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        """`statistics`: the per-channel (mean, std) to normalise with; by default the train split's."""
        super().__init__()
        missing = set(SPLITS) - set(splits)
        if missing:
            raise ValueError(f"missing splits: {sorted(missing)}")
        self.splits = splits
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.augment = augment
        self.on_device = on_device
        self.mean, self.std = statistics or channel_statistics(splits["train"].images)
        # The raw per-channel value removed pixels take (set by with_removal).
        self.fill: torch.Tensor | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.splits["train"].images.shape[1:])

    def with_removal(self, removed: dict[str, torch.Tensor], fill: torch.Tensor) -> TensorDataModule:
        """The same images, labels, statistics and batching, with the pixels `removed[split]` ((N, H, W), or
        (N, C, H, W) for single channel values) of each split replaced by `fill` (one raw value per channel)
        whenever a batch is formed."""
        splits = {name: replace(split, removed=removed[name]) for name, split in self.splits.items()}
        return self._derived(splits, fill)

    def with_images(self, images: dict[str, torch.Tensor]) -> TensorDataModule:
        """The same labels, statistics and batching over replaced raw images (a fill computed up front, such
        as ROAD's imputation)."""
        splits = {name: Split(images[name], split.labels) for name, split in self.splits.items()}
        return self._derived(splits, None)

    def _derived(self, splits: dict[str, Split], fill: torch.Tensor | None) -> TensorDataModule:
        # A modified dataset keeps the unmodified training statistics: the network sees what it would see.
        clone = TensorDataModule(
            splits, self.num_classes, self.batch_size, self.augment, self.on_device, (self.mean, self.std)
        )
        clone.fill = fill
        return clone

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        images = unit_range(images)
        return (images - self.mean.to(images).view(shape)) / self.std.to(images).view(shape)

    def setup(self, stage: str) -> None:
        if self.on_device and self.trainer is not None:
            device = self.trainer.strategy.root_device
            self.splits = {name: split.to(device) for name, split in self.splits.items()}

    def prepared(self, images: torch.Tensor, removed: torch.Tensor | None = None) -> torch.Tensor:
        """Raw images as the network sees them, before augmentation: normalised, removed pixels filled."""
        images = self.normalize(images)
        if removed is not None:
            fill = self.normalize(self.fill.to(images).view(1, -1, 1, 1)).view(-1)
            images = replace_pixels(images, removed, fill)
        return images

    def training_images(self, count: int) -> torch.Tensor:
        """The first `count` training images (the split's order is already a seeded shuffle), prepared as
        training batches are, without augmentation: for a network's data-dependent initialisation."""
        images, _, *removed = self.splits["train"].batch(torch.arange(min(count, len(self.splits["train"]))))
        return self.prepared(images, *removed)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels, *removed = batch
        images = self.prepared(images, *removed)
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            images = self.augment(images)
        return images, labels

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # The DataLoader hands each batch's indices to __getitems__ at once. The shuffle draws from torch's
        # global generator, which the training stage seeds; under DDP, Lightning replaces the sampler with
        # a DistributedSampler, which gives each process its share of the indices.
        dataset = _IndexedBatches(self.splits[split])
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, collate_fn=default_convert)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
