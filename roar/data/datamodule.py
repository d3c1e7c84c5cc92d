"""The datamodule every task trains on: three splits whose images sit in memory or on disk (a sharded store,
roar/data/store.py), cut into batches by indexing, never image by image.

A batch is formed on the device it is used on: its raw images (uint8, or float in [0, 1]) normalised with
the training split's per-channel mean and std, the pixels a ROAR cell removes replaced by the fill, and,
for training batches, augmented (`augment`). A ROAR cell's removal travels as the split's one-byte removal
codes (roar/removal/masks.py): each batch's mask is one comparison of its codes with the cell's percent,
so no image is ever copied per fraction. With `on_device`, arrays held in memory are moved once to the
trainer's device in `setup`; arrays on disk are read in DataLoader worker processes, a batch at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, default_convert

from roar.data.arrays import (
    Rows,
    as_rows,
    chunked_image_sums,
    image_sums,
    shard_bounds,
    shard_rows,
    statistics_of,
)
from roar.removal import grid_level, mask_of_codes, random_members, remove, replace_pixels

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
STORAGES = ("memory", "shards", "auto")


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1], from uint8 images in [0, 255] or float images already in [0, 1]."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images


@dataclass(frozen=True)
class Split:
    """Images as (N, C, H, W), uint8 in [0, 255] or float in [0, 1] (a tensor, or `Rows` of an array in
    memory or on disk); labels as (N,) int64; and for a ROAR cell, `codes`: the removal codes of its
    images ((N, H, W) uint8, or (N, C, H, W) when single channel values are ranked), row i of which belongs
    to image i."""

    images: Rows | torch.Tensor
    labels: torch.Tensor
    codes: Rows | torch.Tensor | None = None

    def __post_init__(self):
        object.__setattr__(self, "images", as_rows(self.images))
        if self.codes is not None:
            object.__setattr__(self, "codes", as_rows(self.codes))
        shape = self.images.shape
        if len(shape) != 4 or self.labels.ndim != 1 or shape[0] != len(self.labels):
            raise ValueError(
                f"a split needs images (N,C,H,W) and labels (N,); got {tuple(shape)} "
                f"and {tuple(self.labels.shape)}"
            )
        pixels = (shape[0], *shape[2:])
        if self.codes is not None and tuple(self.codes.shape) not in (pixels, tuple(shape)):
            raise ValueError(f"codes must be {pixels} or {tuple(shape)}, got {tuple(self.codes.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def resident(self) -> bool:
        return self.images.resident and (self.codes is None or self.codes.resident)

    def to(self, device: torch.device, arrays: dict | None = None) -> Split:
        """The split with its in-memory arrays on `device` (`arrays`: see `Rows.to`); labels follow the
        images, so that a batch is cut where they are."""
        arrays = {} if arrays is None else arrays
        images = self.images.to(device, arrays)
        codes = None if self.codes is None else self.codes.to(device, arrays)
        return Split(images, self.labels.to(device) if self.resident else self.labels, codes)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(images, labels), plus the removal codes for a ROAR cell."""
        cut = (self.images[indices], self.labels[indices.to(self.labels.device)])
        return cut if self.codes is None else (*cut, self.codes[indices])


class _IndexedBatches(torch.utils.data.Dataset):
    """Cut a whole batch with one indexing operation on the arrays' own device (`__getitems__`); an array on
    disk is read there, in a DataLoader worker."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        return self.split.batch(torch.as_tensor(indices, device=self.split.labels.device))


@dataclass(frozen=True)
class Removal:
    """What a ROAR cell does to every batch: the removal codes at or below `level` percent go (`roar`), or
    all the others (`kar`), and take `fill` (one raw value per channel) — or, with `masks_only`, the batch is
    the removal masks themselves (1 = removed), the images unseen (task=leakage)."""

    level: int
    mode: str
    fill: torch.Tensor | None = None
    masks_only: bool = False

    @property
    def fraction(self) -> float:
        return self.level / 100

    def mask(self, codes: torch.Tensor) -> torch.Tensor:
        return mask_of_codes(codes, self.fraction, self.mode)


@dataclass(frozen=True)
class RandomRemoval:
    """F-Fidelity's explanation-agnostic fine-tuning data (task=fidelity): whenever a batch is formed, each
    image loses a fresh random set of round(r * H * W) pixels, r drawn uniformly from [0, `max_fraction`]
    for every image, filled with `fill` (roar/removal/fills.py). Every draw comes from torch's generators,
    which the training stage seeds: nothing but the images and the seed decides what is removed."""

    max_fraction: float
    fill: str

    def apply(self, images: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """Raw images in [0, 1] with their random pixels filled."""
        n, _, height, width = images.shape
        device = images.device
        counts = (torch.rand(n, device=device) * (self.max_fraction * height * width)).round().long()
        priorities = torch.randint(0, 2**31 - 1, (n, height * width), device=device)
        everywhere = torch.ones(n, height, width, dtype=torch.bool, device=device)
        mask = random_members(everywhere, counts, priorities)
        noise_seed = int(torch.randint(0, 2**31 - 1, ()))  # ROAD's noise: another draw for every batch
        return remove(images, mask, self.fill, mean.to(device), noise_seed)


class TensorDataModule(pl.LightningDataModule):
    """A datamodule over three splits (`splits`: train, val, test), normalised with the training split's
    per-channel mean and std (or `statistics`, (mean, std)). `workers` DataLoader processes read the splits
    whose images are on disk (`storage=shards`); splits in memory are cut in the training process."""

    # Per split, the pixels that decide each image's label (N, H, W) bool, where the dataset knows them.
    ground_truth: dict[str, Rows | torch.Tensor] | None = None
    # task=fidelity's fine-tuning data (`with_random_removal`); a class default, so that a subclass that sets
    # up its own attributes (VisionDataModule) has it too.
    random_removal: RandomRemoval | None = None

    def __init__(
        self,
        splits: dict[str, Split],
        num_classes: int,
        batch_size: int = 64,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        on_device: bool = True,
        statistics: tuple[torch.Tensor, torch.Tensor] | None = None,
        workers: int = 2,
    ):
        super().__init__()
        missing = set(SPLITS) - set(splits)
        if missing:
            raise ValueError(f"missing splits: {sorted(missing)}")
        # A tensor given as a split's images is every row of itself, named after its split.
        self.splits = {
            name: replace(split, images=as_rows(split.images, name)) for name, split in splits.items()
        }
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.augment = augment
        self.on_device = on_device
        self.workers = workers
        self._statistics = statistics
        self.removal: Removal | None = None

    # --- statistics

    @property
    def mean(self) -> torch.Tensor:
        return self.statistics[0]

    @property
    def std(self) -> torch.Tensor:
        return self.statistics[1]

    @property
    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (mean, std) of the training images in [0, 1], from per-image sums (computed shard by
        shard, as a store computes them: arrays/image_sums)."""
        if self._statistics is None:
            self._statistics = statistics_of(self.training_sums(), self.image_shape[1] * self.image_shape[2])
        return self._statistics

    def training_sums(self) -> torch.Tensor:
        """The training images' `image_sums` (a store-backed datamodule reads them from its shards)."""
        images = self.splits["train"].images
        return chunked_image_sums(images, shard_rows(images[:1].numel() * images[:1].element_size()))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.splits["train"].images.shape[1:])

    # --- where the images live

    def prepare(self, cache, dataset: dict, storage: str) -> None:
        """Put the splits where `storage` says (memory, shards, or auto: roar/data/store.py's rule), before
        anything reads them. A datamodule built in memory (digits, synthetic, a user's own) writes its
        splits to the stage cache's store for `shards`, keyed by `dataset` (its configuration), and reads
        them back from there, so that both storages give the same batches."""
        from roar.data.store import choose_storage, store_tensors

        arrays = [split.images for split in self.splits.values()]
        if (
            choose_storage(storage, sum(a[:1].numel() * a[:1].element_size() * len(a) for a in arrays))
            == "memory"
        ):
            return
        truth = self.ground_truth or {}
        stored = {name: store_tensors(cache, dataset, name, split.images[:], split.labels, truth.get(name))
                  for name, split in self.splits.items()}  # fmt: skip
        # Each split keeps the name its rows had in memory: the random numbers of its images (tie-breaking,
        # ROAD's noise, F-Fidelity's shares: roar/removal/keys.py) are drawn from it, and must be the same.
        self.splits = {name: Split(Rows(s.images, None, self.splits[name].images.source), s.labels)
                       for name, s in stored.items()}  # fmt: skip
        if self.ground_truth is not None:
            self.ground_truth = {name: Rows(s.truth, None, name) for name, s in stored.items()}
        if self._statistics is None:
            self._statistics = statistics_of(stored["train"].sums, self.image_shape[1] * self.image_shape[2])

    # --- data for a ROAR cell

    def with_removal(self, codes: dict, fraction: float, mode: str, fill: torch.Tensor) -> TensorDataModule:
        """The same images, labels, statistics and batching, with the entries whose removal codes
        (`codes[split]`, roar/removal/masks.py) fall in the top `fraction` of each image (`mode=roar`, or
        all but them: `kar`) replaced by `fill` (one raw value per channel) whenever a batch is formed."""
        splits = {name: replace(split, codes=codes[name]) for name, split in self.splits.items()}
        return self._derived(splits, Removal(grid_level(fraction), mode, fill))

    def with_images(self, images: dict) -> TensorDataModule:
        """The same labels, statistics and batching over replaced raw images (a fill computed up front, such
        as ROAD's imputation): `images[split]`, row i the replacement of image i."""
        splits = {name: Split(images[name], split.labels) for name, split in self.splits.items()}
        return self._derived(splits, None)

    def with_mask_inputs(self, codes: dict, fraction: float, mode: str) -> TensorDataModule:
        """The removal masks of `codes` at `fraction` as the images (1 = removed, in every channel), with
        the original labels, normalised with the masks' own training statistics (task=leakage)."""
        splits = {name: replace(split, codes=codes[name]) for name, split in self.splits.items()}
        removal = Removal(grid_level(fraction), mode, masks_only=True)
        clone = self._derived(splits, removal)
        clone._statistics = statistics_of(clone._mask_sums(), self.image_shape[1] * self.image_shape[2])
        return clone

    def with_random_removal(self, max_fraction: float, fill: str) -> TensorDataModule:
        """The same images, labels, statistics and batching, every batch of every split with random pixels
        removed (`RandomRemoval`): task=fidelity's fine-tuning, which no saliency map takes part in."""
        clone = self._derived(self.splits, None)
        clone.random_removal = RandomRemoval(max_fraction, fill)
        return clone

    def _mask_sums(self) -> torch.Tensor:
        codes = self.splits["train"].codes
        chunks = shard_bounds(len(codes), shard_rows(codes[:1].numel()))
        return torch.cat([image_sums(self._as_inputs(codes[a:b])) for a, b in chunks])

    def _as_inputs(self, codes: torch.Tensor) -> torch.Tensor:
        """The float masks (N, C, H, W) of `codes` under this datamodule's removal."""
        mask = self.removal.mask(codes).float()
        return mask.unsqueeze(1).expand(-1, self.image_shape[0], -1, -1) if mask.ndim == 3 else mask

    def _derived(self, splits: dict[str, Split], removal: Removal | None) -> TensorDataModule:
        # A modified dataset keeps the unmodified training statistics: the network sees what it would see.
        clone = TensorDataModule(
            splits, self.num_classes, self.batch_size, self.augment, self.on_device, self.statistics,
            self.workers,
        )  # fmt: skip
        clone.removal = removal
        return clone

    # --- batches

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        images = unit_range(images)
        return (images - self.mean.to(images).view(shape)) / self.std.to(images).view(shape)

    def setup(self, stage: str) -> None:
        if self.on_device and self.trainer is not None:
            device, moved = self.trainer.strategy.root_device, {}
            self.splits = {name: split.to(device, moved) for name, split in self.splits.items()}

    def prepared(self, images: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        """Raw images as the network sees them, before augmentation: normalised, removed pixels filled (or,
        for a masks-only cell, the masks in place of the images)."""
        if self.removal is not None and self.removal.masks_only:
            return self.normalize(self._as_inputs(codes.to(images.device)))
        if self.random_removal is not None:
            images = self.random_removal.apply(unit_range(images), self.mean)
        images = self.normalize(images)
        if codes is not None:
            fill = self.normalize(self.removal.fill.to(images).view(1, -1, 1, 1)).view(-1)
            images = replace_pixels(images, self.removal.mask(codes.to(images.device)), fill)
        return images

    def training_images(self, count: int) -> torch.Tensor:
        """The first `count` training images (the split's order is already a seeded shuffle), prepared as
        training batches are, without augmentation: for a network's data-dependent initialisation."""
        train = self.splits["train"]
        images, _, *codes = train.batch(torch.arange(min(count, len(train))))
        return self.prepared(images, *codes)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels, *codes = batch
        images = self.prepared(images, *codes)
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            images = self.augment(images)
        return images, labels

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # The DataLoader hands each batch's indices to __getitems__ at once. The shuffle draws from torch's
        # global generator, which the training stage seeds; under DDP, Lightning replaces the sampler with
        # a DistributedSampler, which gives each process its share of the indices. Workers draw nothing
        # from that generator beyond what the loader itself draws with none, so a split on disk is batched
        # exactly as the same split in memory; they are started afresh each epoch (persistent workers
        # would draw their seed once per fit instead of once per epoch, and shift every later draw).
        data = self.splits[split]
        workers = 0 if data.resident else self.workers
        return DataLoader(
            _IndexedBatches(data), batch_size=self.batch_size, shuffle=shuffle, collate_fn=default_convert,
            num_workers=workers, pin_memory=workers > 0 and torch.cuda.is_available(),
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
