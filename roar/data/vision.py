"""torchvision's image datasets (CIFAR-10/100, SVHN, MNIST, Fashion-MNIST, folder-per-class trees), read
once through torchvision's own classes and held in memory as uint8 tensors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from roar.data.datamodule import Split, TensorDataModule
from roar.errors import ConfigError, first_line

# PIL modes of one-channel images; any other image is read as RGB.
GREY_MODES = ("1", "L", "I", "I;16", "F")


def image_folder(key: str, root: str) -> int | None:
    """What `dataset=imagefolder` takes from `<root>/train` when it is not given (the resolver
    `${image_folder:classes|channels,<root>}`): the number of class folders, or the channels (1 if the
    first image is grey, else 3). None where the folder does not exist: loading it then says where it was
    expected."""
    train = Path(root) / "train"
    if not train.is_dir():
        return None
    classes = sorted(p for p in train.iterdir() if p.is_dir())
    if key == "classes":
        return len(classes)
    if key == "channels":
        first = next((f for c in classes for f in sorted(c.iterdir()) if f.is_file()), None)
        return 1 if first is not None and Image.open(first).mode in GREY_MODES else 3
    raise ValueError(f"${{image_folder:{key},...}}: unknown key; use classes or channels")


def load_image(path: str, channels: int = 3) -> Image.Image:
    """An image file as ImageFolder's loader reads it, converted to grey (channels=1) or RGB."""
    with open(path, "rb") as f:
        return Image.open(f).convert("L" if channels == 1 else "RGB")


def _stack_pixels(samples: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    arrays, labels = zip(*samples)
    pixels = torch.from_numpy(np.stack(arrays))
    if pixels.ndim == 3:  # grey images come as (H, W)
        pixels = pixels.unsqueeze(-1)
    return pixels.permute(0, 3, 1, 2), torch.as_tensor(labels, dtype=torch.int64)


def read_tensors(dataset: Dataset, workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (image, label) of a torchvision dataset whose transform ends in `np.asarray`, as uint8
    (N, C, H, W) images and int64 labels."""
    loader = DataLoader(dataset, batch_size=1024, num_workers=workers, collate_fn=_stack_pixels)
    images, labels = zip(*loader)
    return torch.cat(images).contiguous(), torch.cat(labels)


def holdout(labels: torch.Tensor, size: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded, class-stratified split of `labels` into (the rest, `size` held out): `size` is a
    fraction of the images or (an int) a number of them."""
    indices = np.arange(len(labels))
    return train_test_split(indices, test_size=size, stratify=labels.numpy(), random_state=seed)


class VisionDataModule(TensorDataModule):
    """A torchvision dataset as three in-memory splits: train and val carved from the dataset's training
    split (seeded, stratified by class), and its test split, which is only ever evaluated.

    `dataset` is the torchvision class (or a partial of it, e.g. with root and download bound); `train` and
    `test` are the keyword arguments that select each split (`{train: true}` for CIFAR and MNIST,
    `{split: train}` for SVHN, `{root: .../train}` for an image folder). A dataset that is missing or
    fails torchvision's integrity check stops the run with one line: `missing` says where it was expected
    and how to get it. `train_size` keeps a seeded, class-stratified subset of that many training images
    (after the validation hold-out; e.g. for a short run on a CPU). `image_size` resizes (shorter side) and
    centre-crops every image, for folders of images of mixed sizes.
    """

    def __init__(
        self,
        dataset: Callable[..., Dataset],
        train: dict[str, Any],
        test: dict[str, Any],
        num_classes: int,
        channels: int,
        missing: str,
        val_fraction: float = 0.1,
        train_size: int | None = None,
        split_seed: int = 0,
        batch_size: int = 128,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        on_device: bool = True,
        image_size: int | None = None,
        read_workers: int = 0,
    ):
        steps = [transforms.Resize(image_size), transforms.CenterCrop(image_size)] if image_size else []
        to_pixels = transforms.Compose([*steps, np.asarray])
        try:
            train_images, train_labels = read_tensors(dataset(**train, transform=to_pixels), read_workers)
            test_images, test_labels = read_tensors(dataset(**test, transform=to_pixels), read_workers)
        except (RuntimeError, OSError) as error:
            # The first sentence of torchvision's message (missing, failing its checksum, a failed
            # download), then where the files were expected and how to get them.
            reason = first_line(error).split(". ")[0].rstrip(".:")
            raise ConfigError(f"dataset: {reason}; {missing}") from None
        read = {"train": (train_images, train_labels), "test": (test_images, test_labels)}
        for split, (images, labels) in read.items():
            if images.shape[1] != channels:
                raise ConfigError(
                    f"dataset.channels: {channels}, but the {split} images have {images.shape[1]} channels"
                )
            if labels.max() >= num_classes:
                raise ConfigError(
                    f"dataset.num_classes: {num_classes}, but the {split} labels go up to {int(labels.max())}"
                )
        try:
            kept, held_out = holdout(train_labels, val_fraction, split_seed)
            if train_size is not None:
                kept = kept[holdout(train_labels[kept], train_size, split_seed)[1]]
        except ValueError as error:  # e.g. a hold-out smaller than the number of classes
            raise ConfigError(
                f"dataset.datamodule: val_fraction {val_fraction}, train_size {train_size}: {error}"
            ) from None
        splits = {
            "train": Split(train_images[kept], train_labels[kept]),
            "val": Split(train_images[held_out], train_labels[held_out]),
            "test": Split(test_images, test_labels),
        }
        super().__init__(splits, num_classes, batch_size, augment, on_device)
