"""A saliency method as a plain function: roar calls it as fn(model, inputs, targets, **params)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def box_gradient(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, radius: int = 1):
    """|input x gradient| of each image's target logit, averaged over a (2 radius + 1)^2 box around each
    pixel: gradient x input, made less noisy by pooling neighbours. Returns (N, C, H, W), like the inputs."""
    inputs = inputs.detach().requires_grad_()
    logits = model(inputs)
    (gradients,) = torch.autograd.grad(logits.gather(1, targets.view(-1, 1)).sum(), inputs)
    size = 2 * radius + 1
    return F.avg_pool2d((gradients * inputs).abs(), size, stride=1, padding=radius, count_include_pad=False)
