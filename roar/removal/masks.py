"""Which pixels a ROAR cell removes: rank each image's pixels (or channel values) by saliency and take the
top-k (ROAR) or all but them (KAR). What they become is roar/removal/fills.py.

- ranking (`roar.rank_by`, `roar.signed`): `pixel` ranks the H*W pixels by the channel-combined saliency;
  `element` ranks each of the C*H*W channel values on its own, as the original ROAR code did. Unsigned
  ranking uses |saliency|, signed the raw value (most positive first). Ties are broken by a random order
  drawn from a seeded generator.
- mode (`roar.mode`): `roar` removes the top-k fraction; `kar` keeps it and removes the rest, exactly the
  complement of ROAR's mask at the same fraction.
"""

from __future__ import annotations

import torch

RANK_BY = ("pixel", "element")
MODES = ("roar", "kar")
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
