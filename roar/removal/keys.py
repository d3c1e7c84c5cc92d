"""Random numbers that belong to one image: drawn from (seed, source, image id, position) by a counter-based
hash, so that an image's tie-breaking order and ROAD noise depend on nothing but the image itself — not on
which other images share its batch or shard, nor on how many were drawn before it. Any shard can then be
computed alone, in any order, by any job, and come out the same.

The hash is Chris Wellons' `lowbias32` integer mixer, in int64 torch arithmetic that never overflows (every
product is split into 16-bit halves), so it runs unchanged on any device. torch's own generators are
sequential (the n-th image's numbers depend on the n-1 draws before them), which is exactly what a
shard-by-shard computation cannot have.
"""

from __future__ import annotations

import zlib

import torch

MASK32 = 0xFFFFFFFF
# 2^32 / golden ratio: consecutive positions land far apart before they are mixed.
GOLDEN32 = 0x9E3779B9


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """(x * constant) mod 2^32 for 0 <= x < 2^32, with no intermediate reaching 2^63."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32: a bijection of 32-bit values whose outputs look independent for neighbouring inputs."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def image_states(seed: int, source: str, ids: torch.Tensor) -> torch.Tensor:
    """One 32-bit state per image (int64 (N,) on `ids`' device): the hash of the seed, the name of the array
    the images come from (a dataset's `train` and `test` images both count from 0) and each image's id."""
    salt = mix32(torch.tensor([(seed ^ zlib.crc32(source.encode())) & MASK32], device=ids.device))
    return mix32((ids.long() & MASK32) ^ salt)


def entry_hashes(states: torch.Tensor, count: int) -> torch.Tensor:
    """(N, count) int64 in [0, 2^32): the hash of every position 0..count-1 of every image."""
    positions = _mul32(torch.arange(count, device=states.device), GOLDEN32)
    return mix32((states.view(-1, 1) + positions) & MASK32)


def standard_normal(states: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(N, *shape) float32 draws from N(0, 1), each a function of its image's state and its position alone
    (two 24-bit uniforms per value, Box-Muller)."""
    count = 1
    for size in shape:
        count *= size
    hashes = entry_hashes(states, 2 * count)
    # 24 bits fit a float32 exactly; +0.5 keeps the first uniform off 0 (log 0).
    uniform = ((hashes >> 8).float() + 0.5) / 2**24
    first, second = uniform[:, :count], uniform[:, count:]
    normal = torch.sqrt(-2 * torch.log(first)) * torch.cos(2 * torch.pi * second)
    return normal.view(len(states), *shape)
