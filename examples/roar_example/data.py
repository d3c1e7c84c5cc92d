"""A dataset of the user's own: grey images holding one bright bar, horizontal (class 0) or vertical
(class 1), at a random position over uniform noise; drawn from a seed, held in memory."""

from __future__ import annotations

import torch

from roar.data import Split, TensorDataModule


def bars(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (n, 1, size, size) in [0, 1] and their labels (n,)."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    images = 0.5 * torch.rand(n, 1, size, size, generator=generator)
    positions = torch.randint(0, size, (n,), generator=generator)
    for i, (label, position) in enumerate(zip(labels.tolist(), positions.tolist())):
        if label == 0:
            images[i, 0, position, :] = 1.0
        else:
            images[i, 0, :, position] = 1.0
    return images, labels


class BarsDataModule(TensorDataModule):
    def __init__(self, sizes: dict[str, int], image_size: int = 8, batch_size: int = 64, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        splits = {split: Split(*bars(n, image_size, generator)) for split, n in sizes.items()}
        super().__init__(splits, num_classes=2, batch_size=batch_size)
