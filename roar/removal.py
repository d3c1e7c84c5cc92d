"""ROAR's data modification: rank each image's pixels by saliency and replace the top-k fraction."""

from __future__ import annotations

import torch


def pixels_to_remove(num_pixels: int, fraction: float) -> int:
    return round(fraction * num_pixels)


def removal_mask(
    saliency: torch.Tensor, fraction: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Boolean (N, H, W): True at the round(fraction * H * W) most salient pixels of each image.

    Ties are broken by a random order drawn from `generator`, so a constant map removes a random set rather
    than always the first pixels in memory order.
    """
    n = saliency.shape[0]
    flat = saliency.reshape(n, -1)
    k = pixels_to_remove(flat.shape[1], fraction)
    # Sort a random permutation of the pixels stably by saliency: equal values keep the random order.
    order = torch.rand(flat.shape, generator=generator).argsort(dim=1).to(flat.device)
    ranked = torch.sort(flat.gather(1, order), dim=1, descending=True, stable=True).indices
    top = order.gather(1, ranked[:, :k])
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, top, True)
    return mask.view_as(saliency)


def replace_pixels(images: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Images with every channel of the masked pixels set to `fill` (one value per channel)."""
    fill = fill.to(images).view(1, -1, 1, 1).expand_as(images)
    return torch.where(mask.unsqueeze(1), fill, images)
