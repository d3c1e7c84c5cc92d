"""Integrated gradients (Sundararajan et al., 2017) through Captum, with a choice of baseline and a memory
bound.

Captum's `internal_batch_size` splits the n_steps path points into passes of that many images; without it
Captum evaluates all N x n_steps points in one batch, whose activations cost n_steps times the memory of the
batch itself. Here every pass holds `steps_per_pass` path points of the N images, so peak memory stays near
`steps_per_pass` forward+backward passes of the batch, whatever n_steps is.
"""

from __future__ import annotations

import captum.attr
import torch
from torch import nn

from roar.removal import gaussian_blur


class IntegratedGradients:
    """(x - x') times the average gradient along the straight path from a baseline x' to x.

    `baseline`: "zeros" (in the normalised inputs the pipeline passes, the training-set mean colour),
    "channel_mean" (each image's own per-channel mean, spatially constant) or "blurred" (the image under a
    Gaussian blur of `baseline_sigma` pixels; not the config's `blur_sigma`, which blurs the maps of any
    method). The attributions of each image sum to f(x) - f(x') up to the quadrature error of `n_steps`
    points (Gauss-Legendre, Captum's default).
    """

    BASELINES = ("zeros", "channel_mean", "blurred")

    def __init__(
        self,
        model: nn.Module,
        n_steps: int = 50,
        baseline: str = "zeros",
        baseline_sigma: float = 3.0,
        steps_per_pass: int = 1,
    ):
        if baseline not in self.BASELINES:
            raise ValueError(f"baseline must be one of {self.BASELINES}, got {baseline!r}")
        if n_steps < 1 or steps_per_pass < 1:
            raise ValueError(f"n_steps and steps_per_pass must be >= 1, got {n_steps} and {steps_per_pass}")
        if baseline_sigma <= 0:
            raise ValueError(f"baseline_sigma must be positive, got {baseline_sigma}")
        self.integrated_gradients = captum.attr.IntegratedGradients(model)
        self.n_steps = n_steps
        self.baseline = baseline
        self.baseline_sigma = baseline_sigma
        self.steps_per_pass = steps_per_pass

    def baselines(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.baseline == "zeros":
            return torch.zeros_like(inputs)
        if self.baseline == "channel_mean":
            return inputs.mean(dim=tuple(range(2, inputs.ndim)), keepdim=True).expand_as(inputs)
        return gaussian_blur(inputs, self.baseline_sigma)

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        return self.integrated_gradients.attribute(
            inputs,
            baselines=self.baselines(inputs.detach()),
            target=target,
            n_steps=self.n_steps,
            internal_batch_size=len(inputs) * self.steps_per_pass,
        )
