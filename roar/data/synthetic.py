"""A dataset with a known answer: which pixels decide the label is known exactly.

Each image is noise around mid-grey with one square patch at a uniformly random position; the patch's
side is drawn uniformly from `patch_sizes`, independently of the class, and the patch holds the class's
pattern (stripes of one orientation, a checkerboard, ...). Only the pattern carries the label, so the
patch's pixels are exactly the informative ones: `ground_truth[split]` holds them as (N, H, W) masks.
Generated in memory from `seed`; nothing is read or written.
"""

from __future__ import annotations

import torch

from roar.data.datamodule import SPLITS, Split, TensorDataModule

# Class c's pattern at patch coordinates (row i, column j): 1 is bright, 0 dark. Each holds at any size.
PATTERNS = (
    lambda i, j: i % 2,  # horizontal stripes
    lambda i, j: j % 2,  # vertical stripes
    lambda i, j: (i + j) % 2,  # checkerboard
    lambda i, j: (i + j) // 2 % 2,  # diagonal stripes, two pixels wide
    lambda i, j: (i - j) // 2 % 2,  # anti-diagonal stripes
)


def synthetic_images(
    num_images: int,
    num_classes: int,
    channels: int,
    image_size: int,
    patch_sizes: list[int],
    noise: float,
    contrast: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (N, C, H, W) in [0, 1], labels (N,), patch masks (N, H, W) bool)."""
    labels = (torch.arange(num_images) % num_classes)[torch.randperm(num_images, generator=generator)]
    sizes = torch.tensor(patch_sizes)[torch.randint(len(patch_sizes), (num_images,), generator=generator)]
    top = (torch.rand(num_images, generator=generator) * (image_size - sizes + 1)).long()
    left = (torch.rand(num_images, generator=generator) * (image_size - sizes + 1)).long()
    grid = torch.arange(image_size)
    shape = (num_images, image_size, image_size)
    rows = (grid.view(1, -1, 1) - top.view(-1, 1, 1)).expand(shape)
    cols = (grid.view(1, 1, -1) - left.view(-1, 1, 1)).expand(shape)
    inside = (rows >= 0) & (rows < sizes.view(-1, 1, 1)) & (cols >= 0) & (cols < sizes.view(-1, 1, 1))
    patterns = torch.stack([pattern(rows, cols) for pattern in PATTERNS[:num_classes]])
    bright = patterns.gather(0, labels.view(1, -1, 1, 1).expand(1, *shape)).squeeze(0)
    patch = 0.5 + contrast * (bright.float() - 0.5)
    background = 0.5 + noise * torch.randn(num_images, channels, image_size, image_size, generator=generator)
    images = torch.where(inside.unsqueeze(1), patch.unsqueeze(1), background).clamp(0, 1)
    return images, labels, inside


class SyntheticDataModule(TensorDataModule):
    def __init__(
        self,
        num_classes: int = 4,
        channels: int = 1,
        image_size: int = 16,
        patch_sizes: tuple[int, ...] = (4, 5, 6),
        train_size: int = 2000,
        val_size: int = 500,
        test_size: int = 500,
        noise: float = 0.15,
        contrast: float = 0.8,
        batch_size: int = 128,
        seed: int = 0,
    ):
        if not 2 <= num_classes <= len(PATTERNS):
            raise ValueError(f"num_classes must be in [2, {len(PATTERNS)}], got {num_classes}")
        if not all(2 <= s <= image_size for s in patch_sizes):
            raise ValueError(f"patch_sizes {list(patch_sizes)} must lie in [2, image_size={image_size}]")
        sizes = {"train": train_size, "val": val_size, "test": test_size}
        generator = torch.Generator().manual_seed(seed)
        images, labels, masks = synthetic_images(
            sum(sizes.values()), num_classes, channels, image_size, list(patch_sizes), noise, contrast,
            generator,
        )  # fmt: skip
        bounds = torch.tensor([0, *sizes.values()]).cumsum(0).tolist()
        parts = {split: slice(bounds[i], bounds[i + 1]) for i, split in enumerate(SPLITS)}
        super().__init__(
            {split: Split(images[part], labels[part]) for split, part in parts.items()},
            num_classes=num_classes,
            batch_size=batch_size,
        )
        self.ground_truth = {split: masks[part] for split, part in parts.items()}
        self.informative_fraction = max(patch_sizes) ** 2 / image_size**2
