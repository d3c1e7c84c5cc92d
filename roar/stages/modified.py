"""The modified data of a ROAR cell: each image's top-k pixels removed (or kept, for KAR) and filled."""

from __future__ import annotations

import torch

from roar.data import TensorDataModule
from roar.data.datamodule import SPLITS, unit_range
from roar.removal import IMAGE_FILLS, fill_value, removal_mask, remove


def removal_masks(maps: dict, fraction: float, generator: torch.Generator, mode: str = "roar") -> dict:
    """Per split, the entries to remove (roar/removal/), ties broken by `generator`."""
    return {split: removal_mask(maps[split], fraction, generator, mode) for split in SPLITS}


def removed_datamodule(
    datamodule: TensorDataModule,
    maps: dict,
    fraction: float,
    seed: int,
    mode: str = "roar",
    fill: str = "mean",
) -> TensorDataModule:
    """The dataset with the top `fraction` of each image's pixels removed (`mode=roar`) or all but them
    (`kar`), filled with `fill` (roar/removal/); `seed` breaks ranking ties and draws ROAD's noise.
    Mean and zero fills are applied per batch on the training device; the fills computed from the images
    (blur, ROAD's imputation) once, here."""
    generator = torch.Generator().manual_seed(seed)
    # Every mask is drawn before any noise: the masks are the same whatever the fill.
    masks = removal_masks(maps, fraction, generator, mode)
    if fill in IMAGE_FILLS:
        images = {
            split: remove(
                unit_range(datamodule.splits[split].images), masks[split], fill, datamodule.mean, generator
            )
            for split in SPLITS
        }
        return datamodule.with_images(images)
    return datamodule.with_removal(masks, fill=fill_value(fill, datamodule.mean))
