"""A control: the Sobel edge magnitude of the image itself, independent of the model."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# d/dx: central difference across columns, smoothed [1, 2, 1] down the rows; d/dy is its transpose.
_SOBEL_X = torch.outer(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([-1.0, 0.0, 1.0]))


class Sobel:
    """sqrt((d/dx)^2 + (d/dy)^2) of every channel, on the inputs' device; borders replicate the edge pixel."""

    def __init__(self, model=None):
        """`model` is accepted like every method's and ignored."""

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        channels = inputs.shape[1]
        kernels = torch.stack([_SOBEL_X, _SOBEL_X.T]).to(inputs)
        kernels = kernels.unsqueeze(1).repeat(channels, 1, 1, 1)  # (2C, 1, 3, 3): x and y per channel
        with torch.no_grad():
            padded = F.pad(inputs, (1, 1, 1, 1), mode="replicate")
            edges = F.conv2d(padded, kernels, groups=channels)  # (N, 2C, H, W): x, y of channel 0, then 1...
        return torch.linalg.vector_norm(edges.unflatten(1, (channels, 2)), dim=2)
