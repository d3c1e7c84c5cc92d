"""torchvision's image datasets (CIFAR-10/100, SVHN, MNIST, Fashion-MNIST, folder-per-class trees, ImageNet,
Food-101), read through torchvision's own classes and decoded once, into the dataset store
(roar/data/store.py), from which every job reads them: into memory, or shard by shard from disk."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset
from torchvision import transforms

from roar.data.arrays import Rows, statistics_of
from roar.data.datamodule import Split, TensorDataModule
from roar.data.store import choose_storage, decoded_rows, fingerprint, first_image, store_source
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
        if first is None:
            return 3
        try:
            with Image.open(first) as image:
                return 1 if image.mode in GREY_MODES else 3
        except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError is an OSError
            reason = f"{type(error).__name__}: {first_line(error)}"
            raise ConfigError(f"dataset: cannot read {first}: {reason}") from None
    raise ValueError(f"${{image_folder:{key},...}}: unknown key; use classes or channels")


def load_image(path: str, channels: int = 3) -> Image.Image:
    """An image file as ImageFolder's loader reads it, converted to grey (channels=1) or RGB."""
    with open(path, "rb") as f:
        return Image.open(f).convert("L" if channels == 1 else "RGB")


def holdout(labels: torch.Tensor, size: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded, class-stratified split of `labels` into (the rest, `size` held out): `size` is a
    fraction of the images or (an int) a number of them."""
    indices = np.arange(len(labels))
    return train_test_split(indices, test_size=size, stratify=labels.numpy(), random_state=seed)


def describe(value) -> object:
    """A dataset's configuration as plain data, for the store's key: partials (Hydra's `_partial_`) as their
    target and arguments, paths as strings."""
    if isinstance(value, functools.partial):
        target = f"{value.func.__module__}.{value.func.__qualname__}"
        return {"target": target, "args": describe(list(value.args)), "kwargs": describe(value.keywords)}
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


class VisionDataModule(TensorDataModule):
    """A torchvision dataset as three splits: train and val carved from the dataset's training split
    (seeded, stratified by class), and its test split, which is only ever evaluated.

    `dataset` is the torchvision class (or a partial of it, e.g. with root and download bound); `train` and
    `test` are the keyword arguments that select each split (`{train: true}` for CIFAR and MNIST,
    `{split: train}` for SVHN, `{root: .../train}` for an image folder). A dataset that is missing or
    fails torchvision's integrity check stops the run with one line: `missing` says where it was expected
    and how to get it; so do two splits whose class folders differ (ImageFolder numbers each split's folders
    on its own: a class missing from one would shift every label after it). `train_size` keeps a seeded,
    class-stratified subset of that many training images (after the validation hold-out; e.g. for a short
    run on a CPU). `image_size` resizes (shorter side) and centre-crops every image, for folders of images
    of mixed sizes. The images are decoded by `read_workers` processes into the store when `prepare` first
    needs them; `workers` processes (`dataset.workers`) read batches of a store kept on disk
    (`dataset.storage=shards`).
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
        pl.LightningDataModule.__init__(self)
        steps = [transforms.Resize(image_size), transforms.CenterCrop(image_size)] if image_size else []
        transform = transforms.Compose([*steps, np.asarray])
        try:
            self.sources = {
                "train": dataset(**train, transform=transform),
                "test": dataset(**test, transform=transform),
            }
        except (RuntimeError, OSError) as error:
            # The first sentence of torchvision's message (missing, failing its checksum, a failed
            # download), then where the files were expected and how to get them.
            reason = first_line(error).split(". ")[0].rstrip(".:")
            raise ConfigError(f"dataset: {reason}; {missing}") from None
        classes = {name: getattr(source, "classes", None) for name, source in self.sources.items()}
        if (
            classes["train"] is not None
            and classes["test"] is not None
            and classes["train"] != classes["test"]
        ):
            only = {name: sorted(set(classes[name]) - set(classes[other]))
                    for name, other in (("train", "test"), ("test", "train"))}  # fmt: skip
            raise ConfigError(
                f"dataset: the test split's classes differ from the training split's (only in train: "
                f"{only['train'] or 'none'}; only in test: {only['test'] or 'none'}): classes are numbered "
                "per split in sorted order, so every label after a missing one would be wrong; give both "
                "the same class folders"
            )
        # What decides the stored pixels: the dataset and its arguments, each split's, the size, the files.
        self.key = {
            "dataset": describe(dataset),
            "splits": {"train": describe(train), "test": describe(test)},
            "image_size": image_size,
            "files": {name: fingerprint(source) for name, source in self.sources.items()},
        }
        self.num_classes, self.channels = num_classes, channels
        self.val_fraction, self.train_size, self.split_seed = val_fraction, train_size, split_seed
        self.batch_size, self.augment, self.on_device = batch_size, augment, on_device
        self.read_workers, self.workers = read_workers, 2
        self.removal = None
        self.splits = None

    def prepare(self, cache, dataset: dict | None = None, storage: str = "auto") -> None:
        """Decode the dataset into the store (once: its shards are reused by every later job, and written
        together by jobs that start together), then carve the splits, in memory or on disk (`storage`).
        `dataset` is not used: the store is keyed by what decides its pixels (`self.key`) alone."""
        stored = {}
        for name, source in self.sources.items():
            first = first_image(source)
            if first.shape[0] != self.channels:
                raise ConfigError(
                    f"dataset.channels: {self.channels}, but the {name} images have {first.shape[0]} channels"
                )
            stored[name] = store_source(cache, self.key, name, len(source), first.shape, first.dtype,
                                        decoded_rows(source, self.read_workers))  # fmt: skip
            if stored[name].labels.max() >= self.num_classes:
                raise ConfigError(
                    f"dataset.num_classes: {self.num_classes}, but the {name} labels go up to "
                    f"{int(stored[name].labels.max())}"
                )
        train_labels = stored["train"].labels
        try:
            kept, held_out = holdout(train_labels, self.val_fraction, self.split_seed)
            if self.train_size is not None:
                kept = kept[holdout(train_labels[kept], self.train_size, self.split_seed)[1]]
        except ValueError as error:  # e.g. a hold-out smaller than the number of classes
            raise ConfigError(
                f"dataset.datamodule: val_fraction {self.val_fraction}, train_size {self.train_size}: {error}"
            ) from None
        in_memory = choose_storage(storage, sum(s.nbytes for s in stored.values())) == "memory"
        arrays = {name: s.images.load() if in_memory else s.images for name, s in stored.items()}
        kept, held_out = torch.from_numpy(kept), torch.from_numpy(held_out)
        self.splits = {
            "train": Split(Rows(arrays["train"], kept, "train"), train_labels[kept]),
            "val": Split(Rows(arrays["train"], held_out, "train"), train_labels[held_out]),
            "test": Split(Rows(arrays["test"], None, "test"), stored["test"].labels),
        }
        pixels = int(np.prod(arrays["train"].shape[2:]))
        self._statistics = statistics_of(stored["train"].sums[kept], pixels)
