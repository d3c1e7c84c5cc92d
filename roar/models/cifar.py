"""torchvision's VGG and ResNet layers, shaped for 32x32 inputs as in the CIFAR literature."""

from __future__ import annotations

import torchvision
from torch import nn
from torchvision.models import vgg

# VGG configurations by depth (torchvision's letters): 11 = "A", 13 = "B", 16 = "D", 19 = "E".
VGG_CONFIGS = {11: "A", 13: "B", 16: "D", 19: "E"}


def vgg_bn_cifar(depth: int, in_channels: int, num_classes: int) -> nn.Sequential:
    """VGG with batch-norm for 32x32 images: torchvision's conv/BN/ReLU/max-pool feature stack (its five
    pools take 32x32 to 1x1), then one linear classifier on the 512 features, as in the CIFAR versions of
    VGG used by the FullGrad paper; no 4096-wide head, no dropout. The global average pool makes it accept
    larger inputs too."""
    if depth not in VGG_CONFIGS:
        raise ValueError(f"VGG depth must be one of {sorted(VGG_CONFIGS)}, got {depth}")
    features = vgg.make_layers(vgg.cfgs[VGG_CONFIGS[depth]], batch_norm=True)
    features[0] = nn.Conv2d(in_channels, features[0].out_channels, kernel_size=3, padding=1)
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))


def resnet18_cifar(in_channels: int, num_classes: int) -> torchvision.models.ResNet:
    """torchvision's ResNet-18 with the CIFAR stem: a 3x3 stride-1 first convolution and no max-pool, so a
    32x32 image keeps its resolution into the first residual stage (the ImageNet stem would cut it to 8x8)."""
    net = torchvision.models.resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net
