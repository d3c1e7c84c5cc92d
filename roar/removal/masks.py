"""Which pixels a ROAR cell removes: rank each image's pixels (or channel values) by saliency and take the
top-k (ROAR) or all but them (KAR). What they become is roar/removal/fills.py.

- ranking (`roar.rank_by`, `roar.signed`): `pixel` ranks the H*W pixels by the channel-combined saliency;
  `element` ranks each of the C*H*W channel values on its own, as the original ROAR code did. Unsigned
  ranking uses |saliency|, signed the raw value (most positive first). Ties are broken in a random order
  that belongs to each image: drawn from (seed, the image's source and id) by roar/removal/keys.py, so an
  image is ranked the same whatever it is batched or sharded with.
- mode (`roar.mode`): `roar` removes the top-k fraction; `kar` keeps it and removes the rest, exactly the
  complement of ROAR's mask at the same fraction.
- removal codes: what a ROAR grid stores per entry instead of its saliency, one byte, the first percent of
  the ranking at which the entry goes (`removal_codes`). Every mask on the 1 % grid, ROAR's and KAR's, is
  one comparison with them (`mask_of_codes`); other fractions are refused (`grid_level`), as one byte cannot
  tell them apart.
"""

from __future__ import annotations

import torch

from roar.removal.keys import entry_hashes, image_states

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


# Removal codes count percent of the ranking: 1..100, in one byte.
CODE_LEVELS = 100


def removal_mask(
    saliency: torch.Tensor,
    fraction: float,
    seed: int = 0,
    mode: str = "roar",
    ids: torch.Tensor | None = None,
    source: str = "",
) -> torch.Tensor:
    """Boolean mask shaped like `saliency` ((N, H, W) pixel maps or (N, C, H, W) element maps).

    `roar`: True at the round(fraction * D) most salient entries of each image (D = H*W or C*H*W).
    `kar`: the complement, True everywhere but there. Ties are broken in each image's own random order
    (`salience_rank`), so a constant map removes a random set rather than always the first entries in
    memory order.
    """
    return mask_of_rank(salience_rank(saliency, seed, ids, source), fraction, mode)


def salience_order(
    saliency: torch.Tensor, seed: int = 0, ids: torch.Tensor | None = None, source: str = ""
) -> torch.Tensor:
    """(N, D) int64: each image's entries (flattened), most salient first. Equal values come in the order of
    their hashes under (seed, source, the image's id: `ids`, default 0..N-1), a random order that belongs to
    the image alone (roar/removal/keys.py). One sort per image: saliency and hash are packed into one int64
    key, the float's bits (made to sort as the floats do) above the 32-bit hash."""
    flat = saliency.reshape(saliency.shape[0], -1).float() + 0.0  # + 0.0: -0.0 becomes 0.0, which ties
    if ids is None:
        ids = torch.arange(len(flat), device=flat.device)
    bits = flat.contiguous().view(torch.int32).long()
    # IEEE floats of one sign sort as their bits do; negatives in reverse, which the xor undoes.
    ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
    keys = (ordered << 32) + entry_hashes(image_states(seed, source, ids.to(flat.device)), flat.shape[1])
    return torch.sort(keys, dim=1, descending=True, stable=True).indices


def salience_rank(
    saliency: torch.Tensor, seed: int = 0, ids: torch.Tensor | None = None, source: str = ""
) -> torch.Tensor:
    """Each entry's place in its image's order of decreasing saliency (0 = most salient), shaped like
    `saliency` (ties as `salience_order` breaks them). Ranked once, it serves every fraction."""
    order = salience_order(saliency, seed, ids, source)
    places = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, places).view_as(saliency)


def mask_of_rank(rank: torch.Tensor, fraction: float, mode: str = "roar") -> torch.Tensor:
    """`removal_mask` from `salience_rank`'s places."""
    check_mode(mode)
    mask = rank < pixels_to_remove(rank[0].numel(), fraction)
    return mask if mode == "roar" else ~mask


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown removal mode {mode!r}; choose from {MODES}")


def code_of_place(entries: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(entries,) uint8: the removal code of each place in the ranking, the smallest j in 1..100 with
    place < round(j/100 * entries) — the count `pixels_to_remove` gives fraction j/100, so that
    `code <= j` is exactly ROAR's mask at j %."""
    thresholds = torch.tensor([pixels_to_remove(entries, j / CODE_LEVELS) for j in range(1, CODE_LEVELS + 1)])
    places = torch.arange(entries)
    return (torch.searchsorted(thresholds, places, right=True) + 1).to(torch.uint8).to(device)


def removal_codes(
    saliency: torch.Tensor, seed: int = 0, ids: torch.Tensor | None = None, source: str = ""
) -> torch.Tensor:
    """uint8 codes shaped like `saliency`: per entry, the first percent of its image's ranking at which it is
    removed (1: among the top 1 %, ..., 100: the least salient)."""
    order = salience_order(saliency, seed, ids, source)
    codes = code_of_place(order.shape[1], order.device).expand_as(order)
    return torch.empty_like(codes).scatter_(1, order, codes).view(saliency.shape)


def grid_level(fraction: float) -> int:
    """The percent j of a fraction on the 1 % grid (j / 100 == fraction); ValueError for any other."""
    level = round(fraction * CODE_LEVELS)
    if not 0 <= level <= CODE_LEVELS or level / CODE_LEVELS != fraction:
        raise ValueError(
            f"{fraction:g} is not on the 1 % grid (0.01, 0.02, ..., 0.99) that removal codes store exactly"
        )
    return level


def mask_of_codes(codes: torch.Tensor, fraction: float, mode: str = "roar") -> torch.Tensor:
    """The removal mask of `fraction` (on the 1 % grid) from `removal_codes`: ROAR removes the entries whose
    code is at most the fraction's percent, KAR all the others."""
    check_mode(mode)
    level = grid_level(fraction)
    return codes <= level if mode == "roar" else codes > level


def random_members(members: torch.Tensor, counts: torch.Tensor, priorities: torch.Tensor) -> torch.Tensor:
    """A mask shaped like `members` (bool, (N, ...)): `counts[i]` of image i's members, chosen uniformly at
    random by `priorities` ((N, D) integers, D the entries per image: the members with the smallest
    priorities are taken, ties in memory order). Where an image has fewer members than its count, all of
    them (F-Fidelity's stochastic removal, roar/tasks/fidelity.py: a random share of a set of entries)."""
    flat = members.reshape(len(members), -1)
    # Non-members sort after every member: their key is past the largest priority.
    keys = torch.where(flat, priorities, priorities.max() + 1)
    order = torch.sort(keys, dim=1, stable=True).indices
    places = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device)
                                              .expand_as(order))  # fmt: skip
    return ((places < counts.view(-1, 1).to(places.device)) & flat).view_as(members)
