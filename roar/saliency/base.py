"""The one interface the pipeline calls: images and targets in, one saliency value per pixel out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

PixelReduction = Callable[[torch.Tensor], torch.Tensor]

# How an attribution (N, C, H, W) becomes one value per pixel (N, H, W), or, for the element-wise ones
# ("abs", "signed"), one value per channel value (N, C, H, W).
REDUCTIONS: dict[str, PixelReduction] = {
    "abs_sum": lambda a: a.abs().sum(dim=1),
    "sum": lambda a: a.sum(dim=1),
    "abs_max": lambda a: a.abs().amax(dim=1),
    "abs": lambda a: a.abs(),
    "signed": lambda a: a,
}


class Attribution(Protocol):
    """Captum's convention: `attribute(inputs, target=...)` returns a tensor broadcastable to the inputs."""

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor: ...


class PixelSaliency:
    """Wraps an attribution method into per-pixel maps on the model's device.

    `reduce` names how channels are combined (see REDUCTIONS); ROAR ranks pixels by |.| summed over channels.
    An element-wise reduction keeps one value per image channel: a method with a single-channel
    attribution (FullGrad) gives every channel of a pixel the same value.
    """

    def __init__(self, attribution: Attribution, device: torch.device, reduce: str = "abs_sum"):
        if reduce not in REDUCTIONS:
            raise ValueError(f"unknown pixel reduction {reduce!r}; choose from {sorted(REDUCTIONS)}")
        self.attribution = attribution
        self.device = device
        self.reduce = reduce

    def pixel_maps(
        self, images: torch.Tensor, targets: torch.Tensor, ground_truth: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Maps of `images` for the classes `targets`. `ground_truth`, the pixels known to decide the label
        (N, H, W) where the dataset has them, reaches only methods that declare `uses_ground_truth`."""
        images, targets = images.to(self.device), targets.to(self.device)
        extra = {}
        if getattr(self.attribution, "uses_ground_truth", False):
            extra["ground_truth"] = ground_truth
        # A fresh leaf that requires grad: gradient methods differentiate with respect to it.
        attributions = self.attribution.attribute(images.detach().requires_grad_(), target=targets, **extra)
        maps = REDUCTIONS[self.reduce](attributions.detach()).float()
        return maps.expand_as(images).contiguous() if maps.ndim == images.ndim else maps
