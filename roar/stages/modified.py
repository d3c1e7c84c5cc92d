"""The modified data of a ROAR cell: each image's top-k pixels removed (or kept, for KAR) and filled.

The constant fills (mean, zero) cost nothing up front: the cell's datamodule carries the method's removal
codes, and every batch's mask is formed from them on the training device. The fills computed from the
images (blur, ROAD's imputation) are computed once per cell, shard by shard on the training device, and kept
in the images' own dtype (uint8 images: rounded to the nearest of their 256 levels) — in memory, or for a
split on disk as shards in the training stage's scratch directory, which outlives a killed job (it resumes
from the shards written) and is removed with the rest once the model is stored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from roar.data import TensorDataModule
from roar.data.arrays import Rows, ShardedArray, shard_bounds, shard_rows, write_npy
from roar.data.datamodule import SPLITS, unit_range
from roar.removal import IMAGE_FILLS, fill_value, mask_of_codes, remove


def in_dtype(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Filled images in [0, 1] back in their source's dtype: uint8 rounded to the nearest level."""
    if dtype == torch.uint8:
        return images.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    return images.to(dtype)


def filled_images(
    datamodule: TensorDataModule,
    split: str,
    codes: Rows,
    fraction: float,
    seed: int,
    mode: str,
    fill: str,
    work_dir: Path | None,
    device: torch.device,
) -> torch.Tensor | ShardedArray:
    """The images of `split` with the cell's entries filled by `fill` (blur or road), row i for image i,
    computed shard by shard (roar/data/arrays.py: the same cuts in memory and on disk, so that ROAD's solver
    sees the same chunks); ROAD's noise is each image's own, from (`seed`, its source and id)."""
    images = datamodule.splits[split].images
    row_bytes = images[:1].numel() * images[:1].element_size()
    bounds = shard_bounds(len(images), shard_rows(row_bytes))
    mean = datamodule.mean.to(device)
    out = torch.empty(images.shape, dtype=images.dtype) if images.resident else None
    files = []
    for s, (start, stop) in enumerate(bounds):
        path = None if work_dir is None else work_dir / f"filled-{split}-{s}.npy"
        if out is None and path.is_file():  # written (atomically) by this cell's job before it was stopped
            files.append(path)
            continue
        positions = torch.arange(start, stop)
        mask = mask_of_codes(codes[positions].to(device), fraction, mode)
        raw = unit_range(images[positions].to(device))
        filled = remove(raw, mask, fill, mean, seed, images.ids[positions], images.source)
        filled = in_dtype(filled, images.dtype)
        if out is not None:
            out[start:stop] = filled.cpu()
        else:
            write_npy(path, filled.cpu())
            files.append(path)
    if out is not None:
        return out
    dtype = np.dtype("uint8") if images.dtype == torch.uint8 else np.dtype("float32")
    return ShardedArray(files, [stop - start for start, stop in bounds], images.shape[1:], dtype)


def removed_datamodule(
    datamodule: TensorDataModule,
    codes: dict[str, Rows],
    fraction: float,
    seed: int,
    mode: str = "roar",
    fill: str = "mean",
    work_dir: Path | None = None,
    device: torch.device | str = "cpu",
) -> TensorDataModule:
    """The dataset with the top `fraction` of each image's pixels removed (`mode=roar`) or all but them
    (`kar`), filled with `fill` (roar/removal/fills.py); `seed` draws ROAD's noise. `codes` are the
    method's removal codes per split; `work_dir` holds the filled shards of splits kept on disk."""
    if fill not in IMAGE_FILLS:
        return datamodule.with_removal(codes, fraction, mode, fill_value(fill, datamodule.mean))
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    return datamodule.with_images(
        {split: filled_images(datamodule, split, codes[split], fraction, seed, mode, fill, work_dir, device)
         for split in SPLITS}
    )  # fmt: skip
