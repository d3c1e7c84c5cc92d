"""The dataset store: every image of a dataset decoded once, into fixed-size shards of uint8 pixels, labels
and per-image channel sums, in the stage cache (stage `store`).

Each shard is a cache artifact of its own (keyed, checksummed, written atomically, under its own lock), so
the jobs that need a store fill it together (`StageCache.fill`: each writes the shards no other job holds,
then waits for the rest); a job killed mid-way loses at most the shard it was writing. The store is keyed by
what decides its pixels alone (the dataset's class and arguments, the split, the image size, the files
listed), not by the batch size or the split selection, so every experiment on a dataset shares one.

`dataset.storage` decides where the splits are read from afterwards: `memory` loads the store's shards into
one tensor per source (the path for data that fits), `shards` reads them batch by batch through memory maps
(roar/data/arrays.py), and `auto` picks shards when the images would take more than AUTO_SHARE of the
memory this process may use (the machine's, or its cgroup's limit where lower: a SLURM job's, a
container's). Both storages give the same batches, bit for bit: they read the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from roar.data.arrays import ShardedArray, image_sums, read_npy, shard_bounds, shard_rows, write_npy
from roar.errors import ConfigError, first_line
from roar.runtime.cache import StageCache, Work

log = logging.getLogger(__name__)

STAGE = "store"
# `auto` keeps the images in memory while they take at most this share of the memory available.
AUTO_SHARE = 0.25


@dataclass(frozen=True)
class StoredSource:
    """One array of a dataset's images in the store (a dataset's training images, its test images): the
    pixels and, where the dataset has them, the informative pixels on disk; labels and per-image channel
    sums (roar/data/arrays.py `image_sums`) in memory, 8 and 48 bytes per image."""

    images: ShardedArray
    labels: torch.Tensor
    sums: torch.Tensor
    truth: ShardedArray | None = None

    @property
    def nbytes(self) -> int:
        return len(self.images) * int(np.prod(self.images.row_shape)) * self.images.np_dtype.itemsize


def memory_limit() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit (v2 memory.max, v1
    memory.limit_in_bytes) where that is lower."""
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value.isdigit():
            limit = min(limit, int(value))
    return limit


def choose_storage(storage: str, nbytes: int) -> str:
    """`memory` or `shards` for `dataset.storage` and images of `nbytes` bytes (the rule of `auto`: shards
    above AUTO_SHARE of `memory_limit()`)."""
    if storage != "auto":
        return storage
    threshold = AUTO_SHARE * memory_limit()
    chosen = "shards" if nbytes > threshold else "memory"
    log.info("dataset.storage=auto: %.2f GB of images, %s (shards above %.1f GB, %d %% of the memory "
             "available)", nbytes / 1e9, chosen, threshold / 1e9, 100 * AUTO_SHARE)  # fmt: skip
    return chosen


def store_source(
    cache: StageCache,
    spec: dict,
    name: str,
    count: int,
    row_shape: tuple[int, ...],
    dtype: np.dtype,
    read: Callable[[int, int], dict[str, np.ndarray]],
) -> StoredSource:
    """The store's shards of the source `name` of the data `spec` describes: `count` images of `row_shape`
    and `dtype`, `read(start, stop)` giving those rows' `images`, `labels` and, optionally, `truth` (the
    informative pixels) as numpy arrays. Shards already in the cache are reused; the others are written,
    together with any other job writing the same store."""
    per_shard = shard_rows(int(np.prod(row_shape)) * np.dtype(dtype).itemsize)
    bounds = shard_bounds(count, per_shard)
    specs = [{"data": spec, "source": name, "rows": per_shard, "shard": s} for s in range(len(bounds))]

    def write(i: int, work: Work) -> dict:
        start, stop = bounds[i]
        arrays = read(start, stop)
        images = np.ascontiguousarray(arrays["images"])
        if images.shape != (stop - start, *row_shape) or images.dtype != np.dtype(dtype):
            raise ConfigError(
                f"dataset: images {start}..{stop - 1} of {name} are {images.dtype} {images.shape[1:]}, not "
                f"{np.dtype(dtype)} {tuple(row_shape)} as the first one: give every image the same size "
                "(dataset.image_size resizes and crops them)"
            )
        write_npy(work.dir / "images.npy", images)
        write_npy(work.dir / "labels.npy", np.asarray(arrays["labels"], dtype=np.int64))
        write_npy(work.dir / "sums.npy", image_sums(torch.from_numpy(images)).numpy())
        if arrays.get("truth") is not None:
            write_npy(work.dir / "truth.npy", np.ascontiguousarray(arrays["truth"]))
        return {"rows": stop - start}

    shards = cache.fill(STAGE, specs, write, about={"name": f"store: {name} images"})
    lengths = [shard.meta["rows"] for shard in shards]
    truth = None
    if all((s.dir / "truth.npy").is_file() for s in shards) and shards:
        first = np.load(shards[0].dir / "truth.npy", mmap_mode="r")
        truth = ShardedArray([s.dir / "truth.npy" for s in shards], lengths, first.shape[1:], first.dtype)
    return StoredSource(
        images=ShardedArray([s.dir / "images.npy" for s in shards], lengths, row_shape, dtype),
        labels=torch.cat([read_npy(s.dir / "labels.npy") for s in shards]),
        sums=torch.cat([read_npy(s.dir / "sums.npy") for s in shards]),
        truth=truth,
    )


def store_tensors(
    cache: StageCache,
    spec: dict,
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    truth: torch.Tensor | None = None,
) -> StoredSource:
    """An array already in memory (a split of digits, of the synthetic data, of a user's datamodule) in the
    store, as `store_source`."""

    def read(start: int, stop: int) -> dict:
        rows = {"images": images[start:stop].numpy(), "labels": labels[start:stop].numpy()}
        if truth is not None:
            rows["truth"] = truth[start:stop].cpu().numpy()
        return rows

    dtype = images.numpy().dtype
    return store_source(cache, spec, name, len(images), tuple(images.shape[1:]), dtype, read)


@dataclass(frozen=True)
class _Unreadable:
    """What a decoding worker hands back for an image it cannot read, instead of raising: an exception
    raised in a DataLoader worker comes back as a page of traceback, this as one line."""

    index: int
    reason: str


class _Decoding(Dataset):
    """Items `start`.. of a torchvision dataset whose transform ends in `np.asarray`, or _Unreadable."""

    def __init__(self, dataset: Dataset, start: int, stop: int):
        self.dataset, self.start, self.stop = dataset, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int):
        try:
            return self.dataset[self.start + i]
        except Exception as error:  # PIL, a truncated file, a decoder: whatever the file makes it raise
            return _Unreadable(self.start + i, f"{type(error).__name__}: {first_line(error)}")


def _collate(items: list) -> list:
    return items


def describe_file(dataset: Dataset, index: int) -> str:
    """The file of a dataset's item where the dataset says (`samples`, as ImageFolder), else its index."""
    samples = getattr(dataset, "samples", None)
    return str(samples[index][0]) if samples is not None else f"image {index}"


def decoded_rows(dataset: Dataset, workers: int) -> Callable[[int, int], dict[str, np.ndarray]]:
    """`read(start, stop)` for `store_source`: the items' pixels as uint8 (N, C, H, W) and their labels,
    decoded by `workers` processes; an unreadable file stops the run with one line naming it."""

    def read(start: int, stop: int) -> dict:
        loader = DataLoader(_Decoding(dataset, start, stop), batch_size=256, num_workers=workers,
                            collate_fn=_collate)  # fmt: skip
        images, labels = [], []
        for batch in loader:
            for item in batch:
                if isinstance(item, _Unreadable):
                    raise ConfigError(
                        f"dataset: cannot read {describe_file(dataset, item.index)}: {item.reason}"
                    )
                pixels, label = item
                pixels = np.asarray(pixels)
                images.append(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
                labels.append(int(label))
        return {"images": np.stack(images), "labels": np.asarray(labels, dtype=np.int64)}

    return read


def first_image(dataset: Dataset) -> np.ndarray:
    """The first item's pixels as (C, H, W): the shape and dtype every other image must have."""
    item = _Decoding(dataset, 0, 1)[0]
    if isinstance(item, _Unreadable):
        raise ConfigError(f"dataset: cannot read {describe_file(dataset, 0)}: {item.reason}")
    pixels = np.asarray(item[0])
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def fingerprint(dataset: Dataset) -> str:
    """What a store's key takes of the files themselves: for a dataset that lists its files (`samples`:
    ImageFolder and its kin), the hash of that list (names and labels), so that a file added, removed or
    renamed makes another store; for one that reads fixed files (CIFAR, MNIST, SVHN), its length."""
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return f"{len(dataset)} items"
    root = str(getattr(dataset, "root", ""))
    listing = [
        (os.path.relpath(str(path), root) if root else str(path), int(label)) for path, label in samples
    ]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:20]
