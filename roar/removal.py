"""ROAR's data modification: rank each image's pixels (or channel values) by saliency, choose which to
remove, and fill them.

- ranking (`roar.rank_by`, `roar.signed`): `pixel` ranks the H*W pixels by the channel-combined saliency;
  `element` ranks each of the C*H*W channel values on its own, as the original ROAR code did. Unsigned
  ranking uses |saliency|, signed the raw value (most positive first). Ties are broken by a random order
  drawn from a seeded generator.
- mode (`roar.mode`): `roar` removes the top-k fraction; `kar` keeps it and removes the rest, exactly the
  complement of ROAR's mask at the same fraction.
- fill (`roar.fill`), in the raw image space ([0, 1], before the per-batch normalisation): `mean` is the
  per-channel training-set mean (ROAR's default, which the network sees as exactly 0), `zero` is raw 0
  (black), `blur` is the image's own Gaussian blur (sigma: BLUR_FILL_SHARE of its shorter side), `road`
  is ROAD's noisy linear imputation (roar/imputation.py).
"""

from __future__ import annotations

import torch

from roar.imputation import noisy_linear_impute
from roar.saliency.base import gaussian_blur

RANK_BY = ("pixel", "element")
MODES = ("roar", "kar")
FILLS = ("mean", "zero", "blur", "road")
# The fills computed from each image itself (the others are one constant per channel).
IMAGE_FILLS = ("blur", "road")
# The blur fill's sigma as a share of the image's shorter side: 1 pixel on 8x8 digits, 4 on 32x32 CIFAR.
BLUR_FILL_SHARE = 1 / 8
# (rank_by, signed) -> the saliency reduction (roar.saliency.REDUCTIONS) whose maps are ranked; unsigned pixel
# ranking uses the method's own `reduce` (abs_sum unless its config says otherwise).
RANKING_REDUCTIONS = {
    ("pixel", True): "sum",
    ("element", False): "abs",
    ("element", True): "signed",
}


def ranking_reduction(rank_by: str, signed: bool, method_reduce: str = "abs_sum") -> str:
    return RANKING_REDUCTIONS.get((rank_by, bool(signed)), method_reduce)


def pixels_to_remove(num_pixels: int, fraction: float) -> int:
    return round(fraction * num_pixels)


def removal_mask(
    saliency: torch.Tensor, fraction: float, generator: torch.Generator | None = None, mode: str = "roar"
) -> torch.Tensor:
    """Boolean mask shaped like `saliency` ((N, H, W) pixel maps or (N, C, H, W) element maps).

    `roar`: True at the round(fraction * D) most salient entries of each image (D = H*W or C*H*W).
    `kar`: the complement, True everywhere but there. Ties are broken by a random order drawn from
    `generator`, so a constant map removes a random set rather than always the first entries in memory
    order.
    """
    return mask_of_rank(salience_rank(saliency, generator), fraction, mode)


def salience_rank(saliency: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each entry's place in its image's order of decreasing saliency (0 = most salient), shaped like
    `saliency`; ties in a random order drawn from `generator`. Ranked once, it serves every fraction."""
    flat = saliency.reshape(saliency.shape[0], -1)
    # Sort a random permutation of the entries stably by saliency: equal values keep the random order.
    order = torch.rand(flat.shape, generator=generator).argsort(dim=1).to(flat.device)
    ranked = torch.sort(flat.gather(1, order), dim=1, descending=True, stable=True).indices
    places = torch.arange(flat.shape[1], device=flat.device).expand_as(flat)
    return torch.empty_like(ranked).scatter_(1, order.gather(1, ranked), places).view_as(saliency)


def mask_of_rank(rank: torch.Tensor, fraction: float, mode: str = "roar") -> torch.Tensor:
    """`removal_mask` from `salience_rank`'s places."""
    if mode not in MODES:
        raise ValueError(f"unknown removal mode {mode!r}; choose from {MODES}")
    mask = rank < pixels_to_remove(rank[0].numel(), fraction)
    return mask if mode == "roar" else ~mask


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
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Raw images with the masked pixels (or elements) filled by `fill` (see FILLS); `mean` is the
    per-channel training-set mean, `generator` draws ROAD's noise."""
    mask = mask.to(images.device)  # maps (hence masks) live on the CPU; images may sit on the GPU
    if fill == "road":
        return noisy_linear_impute(images, mask, generator)
    if fill == "blur":
        return replace_pixels(images, mask, blurred(images))
    return replace_pixels(images, mask, fill_value(fill, mean))


def fill_value(fill: str, mean: torch.Tensor) -> torch.Tensor:
    """The raw per-channel value of a constant fill ("mean" or "zero")."""
    if fill not in ("mean", "zero"):
        raise ValueError(f"unknown fill {fill!r}; choose from {FILLS}")
    return mean if fill == "mean" else torch.zeros_like(mean)
