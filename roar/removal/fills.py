"""What removed pixels become (`roar.fill`), in the raw image space ([0, 1], before the per-batch
normalisation): `mean` is the per-channel training-set mean (ROAR's default, which the network sees as
exactly 0), `zero` is raw 0 (black), `blur` is the image's own Gaussian blur (sigma: BLUR_FILL_SHARE of its
shorter side), `road` is ROAD's noisy linear imputation (roar/removal/imputation.py)."""

from __future__ import annotations

import math

import torch
from torchvision.transforms.v2.functional import gaussian_blur as _gaussian_blur

from roar.removal.imputation import noisy_linear_impute

FILLS = ("mean", "zero", "blur", "road")
# The fills computed from each image itself (the others are one constant per channel).
IMAGE_FILLS = ("blur", "road")
# The blur fill's sigma as a share of the image's shorter side: 1 pixel on 8x8 digits, 4 on 32x32 CIFAR.
BLUR_FILL_SHARE = 1 / 8


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of `sigma` pixels over the last two (spatial) dimensions of `images` (..., H, W),
    with reflect padding. The kernel covers +-3 sigma, capped where reflect padding needs the pad to be
    smaller than the image. (The blur fill, and the saliency methods' `blur_sigma` and blurred baselines.)"""
    size = min(2 * math.ceil(3 * sigma) + 1, 2 * min(images.shape[-2:]) - 1)
    return _gaussian_blur(images, kernel_size=[size, size], sigma=[sigma, sigma])


def replace_pixels(images: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Images with the masked entries set to `fill`: one value per channel, or an image for every image.

    A pixel mask (N, H, W) replaces every channel of a pixel; an element mask (N, C, H, W) only its own.
    """
    fill = fill.to(images)
    fill = fill.view(1, -1, 1, 1).expand_as(images) if fill.ndim == 1 else fill
    return torch.where(mask.unsqueeze(1) if mask.ndim == 3 else mask, fill, images)


def blurred(images: torch.Tensor) -> torch.Tensor:
    """The blur fill: each image under a Gaussian blur of BLUR_FILL_SHARE of its shorter side."""
    return gaussian_blur(images, BLUR_FILL_SHARE * min(images.shape[-2:]))


def remove(
    images: torch.Tensor,
    mask: torch.Tensor,
    fill: str,
    mean: torch.Tensor,
    seed: int = 0,
    ids: torch.Tensor | None = None,
    source: str = "",
) -> torch.Tensor:
    """Raw images with the masked pixels (or elements) filled by `fill` (see FILLS); `mean` is the
    per-channel training-set mean; (seed, source, ids) draw each image's ROAD noise
    (`noisy_linear_impute`)."""
    mask = mask.to(images.device)  # maps (hence masks) live on the CPU; images may sit on the GPU
    if fill == "road":
        return noisy_linear_impute(images, mask, seed, ids, source)
    if fill == "blur":
        return replace_pixels(images, mask, blurred(images))
    return replace_pixels(images, mask, fill_value(fill, mean))


def fill_value(fill: str, mean: torch.Tensor) -> torch.Tensor:
    """The raw per-channel value of a constant fill ("mean" or "zero")."""
    if fill not in ("mean", "zero"):
        raise ValueError(f"unknown fill {fill!r}; choose from {FILLS}")
    return mean if fill == "mean" else torch.zeros_like(mean)
