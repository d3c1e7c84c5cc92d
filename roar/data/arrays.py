"""The arrays a split's images (and their removal codes) live in, in memory or on disk, and the views that
make a split of them.

- A torch tensor: in memory (and moved to the training device with `on_device`).
- `ShardedArray`: one (N, ...) array stored as consecutive `.npy` shards, each a stage-cache artifact;
  rows are read by index through a memory map opened for the read and closed after it, so a process never
  keeps more of the file mapped than the batch it reads (its memory stays that of a batch, however large
  the dataset; the kernel's page cache, which no process owns, does the rest).
- `Rows`: the rows `ids` of such an array, as a split sees them (train and validation images are rows of
  one source, the dataset's training images, without a copy of either). `ids` also names each image for
  the random numbers that belong to it (roar/removal/keys.py): its row in its source, whose name is
  `source`.

Shards are cut at fixed numbers of rows (`shard_rows`), multiples of CHUNK images, so that code cut at shard
boundaries (ROAD's solver, per chunk) sees the same chunks as code run over a whole split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from roar.removal.imputation import CHUNK
from roar.runtime.files import atomic_write

# Shards of about this size: large enough that a dataset has few files (ImageNet at 224x224: about 1,700),
# small enough that a job killed mid-shard loses little and that memory holds one shard with room to spare.
SHARD_BYTES = 128 * 2**20
_TORCH_DTYPES = {np.dtype("uint8"): torch.uint8, np.dtype("float32"): torch.float32,
                 np.dtype("int64"): torch.int64, np.dtype("bool"): torch.bool,
                 np.dtype("float64"): torch.float64}  # fmt: skip


def shard_rows(row_bytes: int) -> int:
    """Rows per shard for rows of `row_bytes` bytes: about SHARD_BYTES, a multiple of CHUNK."""
    return max(1, SHARD_BYTES // (CHUNK * max(row_bytes, 1))) * CHUNK


def shard_bounds(rows: int, per_shard: int) -> list[tuple[int, int]]:
    """(start, stop) of each shard of an array of `rows` rows, `per_shard` rows each (the last may have
    fewer)."""
    return [(start, min(start + per_shard, rows)) for start in range(0, rows, per_shard)]


class _Writes:
    """A file seen only through its `write`: numpy then writes an array in chunks through Python's file
    object, whose write reports a full disk as the OSError (ENOSPC) the entry point turns into one line; to a
    real file, numpy writes with C's `tofile`, which reports it without an errno."""

    def __init__(self, file):
        self.write = file.write


def write_npy(path: Path, array: torch.Tensor | np.ndarray) -> None:
    """`array` as a `.npy` file, written atomically (roar/runtime/files.py)."""
    array = array.numpy() if isinstance(array, torch.Tensor) else array
    try:
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            np.save(_Writes(f), np.ascontiguousarray(array), allow_pickle=False)
    except OSError as error:
        if error.filename is not None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error  # the file a full disk refused


def read_npy(path: Path) -> torch.Tensor:
    """A whole `.npy` file as a tensor (no memory map: the caller keeps it)."""
    return torch.from_numpy(np.load(path, allow_pickle=False))


class ShardedArray:
    """An (N, ...) array stored as `.npy` files holding consecutive rows, read by index."""

    def __init__(self, files: list[Path], lengths: list[int], row_shape: tuple[int, ...], dtype: np.dtype):
        self.files = [str(f) for f in files]
        self.starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.row_shape = tuple(row_shape)
        self.np_dtype = np.dtype(dtype)
        self.dtype = _TORCH_DTYPES[self.np_dtype]

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.starts[-1]), *self.row_shape)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index) -> torch.Tensor:
        rows = np.arange(len(self))[index] if isinstance(index, slice) else _as_numpy(index)
        flat = rows.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"rows outside 0..{len(self) - 1}")
        out = np.empty((flat.size, *self.row_shape), dtype=self.np_dtype)
        shard = np.searchsorted(self.starts, flat, side="right") - 1
        for s in np.unique(shard):
            at = np.flatnonzero(shard == s)
            local = flat[at] - self.starts[s]
            order = np.argsort(local, kind="stable")  # ascending offsets: the file is read forwards
            mapped = np.load(self.files[s], mmap_mode="r", allow_pickle=False)
            out[at[order]] = mapped[local[order]]
            del mapped  # unmapped here: the process keeps no pages of the shard
        return torch.from_numpy(out.reshape(*rows.shape, *self.row_shape))

    def to(self, device) -> ShardedArray:
        """The array stays on disk: a batch read from it is moved to the device by the training loop."""
        return self

    def load(self) -> torch.Tensor:
        """Every row, in memory: one tensor filled shard by shard (never two copies of the data)."""
        out = torch.empty(self.shape, dtype=self.dtype)
        for s, path in enumerate(self.files):
            out[self.starts[s] : self.starts[s + 1]] = read_npy(Path(path))
        return out


def _as_numpy(index) -> np.ndarray:
    if isinstance(index, torch.Tensor):
        return index.detach().cpu().numpy().astype(np.int64, copy=False)
    return np.asarray(index, dtype=np.int64)


class Rows:
    """Rows `ids` of `array` (a tensor or a ShardedArray), seen as an (len(ids), ...) array: row i is
    `array[ids[i]]`. `source` names the array for the random numbers of its images (roar/removal/keys.py)."""

    def __init__(self, array, ids: torch.Tensor | None = None, source: str = ""):
        self.array = array
        self.ids = torch.arange(len(array)) if ids is None else torch.as_tensor(ids, dtype=torch.int64)
        self.source = source

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.ids), *self.array.shape[1:])

    @property
    def dtype(self) -> torch.dtype:
        return self.array.dtype

    @property
    def resident(self) -> bool:
        """Whether the rows are in memory (a tensor), rather than read from disk for each batch."""
        return isinstance(self.array, torch.Tensor)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.to(self.ids.device)
        ids = self.ids[index]
        return self.array[ids.to(self.array.device) if self.resident else ids]

    def to(self, device, arrays: dict | None = None) -> Rows:
        """The same rows with the array (if resident) and the ids on `device`; `arrays` maps arrays already
        moved (by id) to their copies, so that splits sharing one source share one copy there."""
        if not self.resident:
            return self
        arrays = {} if arrays is None else arrays
        moved = arrays.setdefault(id(self.array), self.array.to(device))
        return Rows(moved, self.ids.to(device), self.source)


def as_rows(images, source: str = "") -> Rows:
    """A split's images as Rows: a tensor is every row of itself, in order."""
    return images if isinstance(images, Rows) else Rows(images, None, source)


def image_sums(images: torch.Tensor) -> torch.Tensor:
    """(N, 2, C) float64: per image and channel the sum of its values in [0, 1] and of their squares, exact
    for uint8 images (integer sums, then scaled). Channel statistics over any subset of the images are sums
    of these, so a store computes them once per shard and any split selection reuses them."""
    if images.dtype == torch.uint8:
        values = images.to(torch.int64)
        sums = torch.stack([values.sum(dim=(2, 3)), values.square().sum(dim=(2, 3))], dim=1).double()
        return sums / torch.tensor([255.0, 255.0**2], dtype=torch.float64).view(1, 2, 1)
    values = images.double()
    return torch.stack([values.sum(dim=(2, 3)), values.square().sum(dim=(2, 3))], dim=1)


def chunked_image_sums(images, rows_per_chunk: int) -> torch.Tensor:
    """`image_sums` of an array's rows, computed `rows_per_chunk` rows at a time (the store's shard size,
    so that an array in memory and the same array in shards give the same bits)."""
    return torch.cat([image_sums(images[a:b]) for a, b in shard_bounds(len(images), rows_per_chunk)])


def statistics_of(sums: torch.Tensor, pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation (float32) from the `image_sums` of a split's images, each of
    `pixels` pixels per channel."""
    total = sums.sum(dim=0)
    count = len(sums) * pixels
    mean = total[0] / count
    variance = (total[1] - count * mean.square()) / max(count - 1, 1)
    return mean.float(), variance.clamp_min(0).sqrt().float().clamp_min(1e-6)
