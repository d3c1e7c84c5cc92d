"""Learning-rate schedules as `scheduler(optimizer, total_steps=N)` factories (the classifier steps them once
per optimizer step). Each multiplies every parameter group's own learning rate, so per-group rates (see
ImageClassifier's norm_bias_lr_scale) keep their ratio."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


def triangular(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    start: float = 0.2,
    peak: float = 0.23,
    end: float = 0.07,
) -> LambdaLR:
    """Linear warm-up from `start` x lr to lr at `peak` (a fraction of the steps), then linear decay to
    `end` x lr at the last step: airbench's schedule."""
    if not (0 < peak < 1 and start >= 0 and end >= 0):
        raise ValueError(f"triangular: need 0 < peak < 1 and start, end >= 0; got {start}, {peak}, {end}")

    def factor(step: int) -> float:
        progress = min(step / max(total_steps, 1), 1.0)
        if progress < peak:
            return start + (1 - start) * progress / peak
        return 1 + (end - 1) * (progress - peak) / (1 - peak)

    return LambdaLR(optimizer, factor)
