"""ROAD imputation throughput: the batched torch solver against a direct scipy sparse solve per image.

3x32x32 images, 50 % of each image's pixels removed. Two kinds of mask: the pixels of a random order
(many small holes), and the top half of a blurred random map (a few large holes, as a saliency map gives:
the harder case for an iterative solver). Batched and direct runs alternate and the medians are reported,
so that load from other processes hits both alike. The goal (>= 1000 images/s) is for 2 threads and wall
time; the CPU-time rows (1 thread, process time) are what a loaded machine distorts least.
"""

from __future__ import annotations

import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F

from roar.removal import removal_mask
from roar.removal.imputation import linear_impute_direct, noisy_linear_impute

BATCH = 1024  # images per batched call
DIRECT = 32  # images per scipy round (one solve each)
ROUNDS = 5
GOAL = 1000  # images/s on 2 threads


def blurred_saliency(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    saliency = torch.rand(n, 1, size, size, generator=generator)
    for _ in range(4):
        saliency = F.avg_pool2d(saliency, 5, stride=1, padding=2, count_include_pad=False)
    return saliency[:, 0]


def _rates(batched, direct, clock) -> tuple[float, float]:
    """Median images/s of the batched and the direct solve, run alternately."""
    fast, slow = [], []
    for _ in range(ROUNDS):
        for run, count, rates in ((batched, BATCH, fast), (direct, DIRECT, slow)):
            start = clock()
            run()
            rates.append(count / (clock() - start))
    return statistics.median(fast), statistics.median(slow)


def run() -> list[str]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(BATCH, 3, 32, 32, generator=generator)
    rows = [f"3x32x32, 50% removed, {BATCH} images per batched call; medians of {ROUNDS} interleaved rounds"]
    for kind, saliency in (("random order", torch.rand(BATCH, 32, 32, generator=generator)),
                           ("blurred map", blurred_saliency(BATCH, 32, generator))):  # fmt: skip
        mask = removal_mask(saliency, 0.5)
        batched = partial(noisy_linear_impute, images, mask)
        direct = partial(linear_impute_direct, images[:DIRECT], mask[:DIRECT])
        error = (noisy_linear_impute(images[:DIRECT], mask[:DIRECT], noise=0.0) - direct()).abs().max().item()
        for threads, clock, what in ((2, time.perf_counter, "wall"), (1, time.process_time, "CPU")):
            torch.set_num_threads(threads)
            fast, slow = _rates(batched, direct, clock)
            verdict = f"goal {GOAL} img/s {'met' if fast >= GOAL else 'NOT met'}" if threads == 2 else ""
            rows.append(
                f"{kind:>12}, {threads} thread(s), {what:>4} time: batched torch {fast:6.0f} img/s | "
                f"scipy per image {slow:4.0f} img/s | x{fast / slow:4.1f} | {verdict}"
            )
        rows.append(f"{kind:>12}: max |batched - scipy| = {error:.1e} (noise off)")
    return rows
