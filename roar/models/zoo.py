"""Any torchvision classifier by name, trained from scratch, with its input channels and classes adapted."""

from __future__ import annotations

import torchvision
from torch import nn

from roar.errors import ConfigError
from roar.models.classifier import ImageClassifier


def torchvision_classifier(
    name: str, in_channels: int, num_classes: int, image_size: int | None = None, **classifier
) -> ImageClassifier:
    """The ImageClassifier (optimizer, schedule, ... in `classifier`) over `torchvision_net(name, ...)`."""
    return ImageClassifier(
        torchvision_net(name, in_channels, num_classes, image_size), num_classes, **classifier
    )


def torchvision_net(
    name: str, in_channels: int, num_classes: int, image_size: int | None = None
) -> nn.Module:
    """`torchvision.models.get_model(name, num_classes=...)` without pretrained weights (ROAR trains every
    model from scratch), its first convolution rebuilt for `in_channels` when that differs from 3.
    `image_size` goes to the models built for one input size (the vision transformers, vit_*).

    FullGrad decomposes all of them exactly (implicit biases for SiLU, GELU, LayerNorm, squeeze-excitation
    and attention: docs/fullgrad-implicit-biases.md).
    """
    available = torchvision.models.list_models(torchvision.models)
    if name not in available:
        examples = ", ".join(n for n in available if n.startswith(("resnet", "vgg")))
        raise ConfigError(f"model.name: torchvision has no classification model {name!r}; e.g. {examples}")
    sized = name.startswith("vit_")
    if image_size is not None and not sized:
        raise ConfigError(f"model.image_size: only the vision transformers (vit_*) take one, not {name!r}")
    extra = {"image_size": image_size} if sized and image_size is not None else {}
    net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **extra)
    if in_channels != 3:
        _replace_first_conv(net, in_channels)
    return net


def _replace_first_conv(net: nn.Module, in_channels: int) -> None:
    path, conv = next((p, m) for p, m in net.named_modules() if isinstance(m, nn.Conv2d))
    parent_path, _, attribute = path.rpartition(".")
    parent = net.get_submodule(parent_path) if parent_path else net
    bias = conv.bias is not None
    setattr(
        parent,
        attribute,
        nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=bias),
    )
