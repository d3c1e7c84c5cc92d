"""A network of the user's own: two convolutions, global average pooling and a linear classifier."""

from __future__ import annotations

from torch import nn


class TinyCNN(nn.Sequential):
    def __init__(self, in_channels: int, num_classes: int, width: int = 8):
        super().__init__(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, num_classes),
        )
