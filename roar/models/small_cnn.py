"""A small CNN of conv/BN/ReLU/pool/linear layers: piecewise linear, so FullGrad decomposes it exactly."""

from __future__ import annotations

from torch import nn


class SmallCNN(nn.Sequential):
    """`widths[i]` channels in block i: conv3x3 -> BN -> ReLU, with a 2x2 max-pool after every block but
    the last, then global average pooling and a linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...] = (32, 64, 64)):
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            in_channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes)]
        super().__init__(*layers)
