"""A control: uniformly random saliency, reproducible from a seed, independent of the model."""

from __future__ import annotations

import torch


class RandomSaliency:
    def __init__(self, model=None, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        n, _, *spatial = inputs.shape
        return torch.rand(n, 1, *spatial, generator=self.generator).to(inputs.device)
