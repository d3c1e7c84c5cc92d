"""The one interface the pipeline calls: images and targets in, one saliency value per pixel out."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
from torchvision.transforms.v2.functional import gaussian_blur as _gaussian_blur

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


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of `sigma` pixels over the last two (spatial) dimensions of `images` (..., H, W),
    with reflect padding. The kernel covers +-3 sigma, capped where reflect padding needs the pad to be
    smaller than the image."""
    size = min(2 * math.ceil(3 * sigma) + 1, 2 * min(images.shape[-2:]) - 1)
    return _gaussian_blur(images, kernel_size=[size, size], sigma=[sigma, sigma])


class Attribution(Protocol):
    """Captum's convention: `attribute(inputs, target=...)` returns a tensor broadcastable to the inputs."""

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor: ...


class ContractError(ValueError):
    """A method's attributions that cannot be ranked: wrong shape, another device, NaN or inf."""


def check_attributions(attributions, inputs: torch.Tensor) -> None:
    """Raise ContractError unless `attributions` is a finite tensor on the inputs' device shaped as the
    inputs, or with one channel: (N, C or 1, H, W) for inputs (N, C, H, W)."""
    if not isinstance(attributions, torch.Tensor):
        raise ContractError(f"returned {type(attributions).__name__}, not a tensor")
    n, channels, *spatial = inputs.shape
    shape = tuple(attributions.shape)
    if len(shape) != inputs.ndim or (shape[0], *shape[2:]) != (n, *spatial) or shape[1] not in (1, channels):
        expected = ", ".join(map(str, [n, f"{channels} or 1" if channels != 1 else 1, *spatial]))
        raise ContractError(f"returned shape {shape} for inputs {tuple(inputs.shape)}; expected ({expected})")
    if attributions.device != inputs.device:
        raise ContractError(f"returned a tensor on {attributions.device}; the inputs are on {inputs.device}")
    if not torch.isfinite(attributions).all():
        bad = (~torch.isfinite(attributions)).sum().item()
        raise ContractError(f"returned {bad} NaN or infinite values of {attributions.numel()}")


class PixelSaliency:
    """Wraps an attribution method into per-pixel maps on the model's device.

    `reduce` names how channels are combined (see REDUCTIONS); ROAR ranks pixels by |.| summed over channels.
    An element-wise reduction keeps one value per image channel: a method with a single-channel
    attribution (FullGrad) gives every channel of a pixel the same value. `blur_sigma` > 0 blurs every map
    (each channel of an element-wise one) with a Gaussian of that many pixels before anything ranks it: the
    control for the blur bias of ROAR and ROAD (docs/evaluation.md); 0 leaves the maps as the method gives
    them.
    """

    def __init__(
        self, attribution: Attribution, device: torch.device, reduce: str = "abs_sum", blur_sigma: float = 0.0
    ):
        self.check_reduce(reduce)
        self.check_blur_sigma(blur_sigma)
        self.attribution = attribution
        self.device = device
        self.reduce = reduce
        self.blur_sigma = blur_sigma

    @staticmethod
    def check_blur_sigma(blur_sigma: float) -> None:
        if blur_sigma < 0:
            raise ValueError(f"blur_sigma must be 0 (no blur) or positive, got {blur_sigma}")

    @staticmethod
    def check_reduce(reduce: str) -> None:
        if reduce not in REDUCTIONS:
            raise ValueError(f"unknown pixel reduction {reduce!r}; choose from {sorted(REDUCTIONS)}")

    def pixel_maps(
        self, images: torch.Tensor, targets: torch.Tensor, ground_truth: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Maps of `images` for the classes `targets`. `ground_truth`, the pixels known to decide the label
        (N, H, W) where the dataset has them, reaches only methods that declare `uses_ground_truth`.
        Attributions that break the contract of `check_attributions` raise ContractError."""
        images, targets = images.to(self.device), targets.to(self.device)
        extra = {}
        if getattr(self.attribution, "uses_ground_truth", False):
            extra["ground_truth"] = ground_truth
        # A fresh leaf that requires grad: gradient methods differentiate with respect to it.
        attributions = self.attribution.attribute(images.detach().requires_grad_(), target=targets, **extra)
        # Every batch: a bad value anywhere would silently corrupt the ranking of every image after it.
        check_attributions(attributions, images)
        maps = REDUCTIONS[self.reduce](attributions.detach()).float()
        if self.blur_sigma > 0:
            maps = gaussian_blur(maps, self.blur_sigma)
        return maps.expand_as(images).contiguous() if maps.ndim == images.ndim else maps
