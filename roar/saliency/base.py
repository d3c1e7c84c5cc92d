"""The one interface the pipeline calls: images and targets in, one saliency value per pixel out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

PixelReduction = Callable[[torch.Tensor], torch.Tensor]

# How an attribution (N, C, H, W) becomes one value per pixel (N, H, W).
REDUCTIONS: dict[str, PixelReduction] = {
    "abs_sum": lambda a: a.abs().sum(dim=1),
    "sum": lambda a: a.sum(dim=1),
    "abs_max": lambda a: a.abs().amax(dim=1),
}


class Attribution(Protocol):
    """Captum's convention: `attribute(inputs, target=...)` returns a tensor broadcastable to the inputs."""

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor: ...


class PixelSaliency:
    """Wraps an attribution method into per-pixel maps on the model's device.

    `reduce` names how channels are combined (see REDUCTIONS); ROAR ranks pixels by |.| summed over channels.
    """

    def __init__(self, attribution: Attribution, device: torch.device, reduce: str = "abs_sum"):
        if reduce not in REDUCTIONS:
            raise ValueError(f"unknown pixel reduction {reduce!r}; choose from {sorted(REDUCTIONS)}")
        self.attribution = attribution
        self.device = device
        self.reduce = reduce

    def pixel_maps(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        images, targets = images.to(self.device), targets.to(self.device)
        # A fresh leaf that requires grad: gradient methods differentiate with respect to it.
        attributions = self.attribution.attribute(images.detach().requires_grad_(), target=targets)
        return REDUCTIONS[self.reduce](attributions.detach()).float()
