"""Saliency methods behind one interface: `create(name, model, **params).pixel_maps(images, targets)`."""

from __future__ import annotations

import torch
from torch import nn

from roar.saliency.base import REDUCTIONS, PixelSaliency
from roar.saliency.fullgrad import FullGrad, SimpleFullGrad
from roar.saliency.oracle import Oracle
from roar.saliency.random import RandomSaliency

METHODS = {
    "fullgrad": FullGrad,
    "simple_fullgrad": SimpleFullGrad,
    "random": RandomSaliency,
    "oracle": Oracle,
}


def create(name: str, model: nn.Module, reduce: str = "abs_sum", **params) -> PixelSaliency:
    """The saliency method `name` for `model` (in eval mode), with per-pixel maps on the model's device."""
    if name not in METHODS:
        raise ValueError(f"unknown saliency method {name!r}; available: {', '.join(sorted(METHODS))}")
    device = next(model.parameters(), torch.empty(0)).device
    return PixelSaliency(METHODS[name](model, **params), device=device, reduce=reduce)


__all__ = [
    "METHODS",
    "REDUCTIONS",
    "FullGrad",
    "Oracle",
    "PixelSaliency",
    "RandomSaliency",
    "SimpleFullGrad",
    "create",
]
