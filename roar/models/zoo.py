"""Any torchvision or timm classifier by name, trained from scratch, with its input channels and classes
adapted."""

from __future__ import annotations

import difflib

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


def timm_classifier(
    name: str, in_channels: int, num_classes: int, image_size: int | None = None, **classifier
) -> ImageClassifier:
    """The ImageClassifier (optimizer, schedule, ... in `classifier`) over `timm_net(name, ...)`."""
    return ImageClassifier(timm_net(name, in_channels, num_classes, image_size), num_classes, **classifier)


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
        raise ConfigError(_unknown("torchvision", name, available))
    sized = name.startswith("vit_")
    if image_size is not None and not sized:
        raise ConfigError(f"model.image_size: only the vision transformers (vit_*) take one, not {name!r}")
    extra = {"image_size": image_size} if sized and image_size is not None else {}
    net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **extra)
    if in_channels != 3:
        _replace_first_conv(net, in_channels)
    return net


def timm_net(name: str, in_channels: int, num_classes: int, image_size: int | None = None) -> nn.Module:
    """`timm.create_model(name, pretrained=False, num_classes=..., in_chans=...)`: timm adapts the stem to
    the input channels itself. `image_size` goes to the models built for one input size (timm's `img_size`:
    ViT, DeiT, Swin, ...).

    timm is imported here, not with roar: it takes a second to load. FullGrad decomposes most of its
    models exactly; docs/fullgrad-implicit-biases.md lists those checked and those that are not."""
    import timm

    if not timm.is_model(name):
        raise ConfigError(_unknown("timm", name, timm.list_models()))
    extra = {} if image_size is None else {"img_size": image_size}
    try:
        return timm.create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **extra
        )
    except TypeError as error:
        if "img_size" not in str(error):
            raise
        raise ConfigError(f"model.image_size: timm's {name!r} is not built for one input size") from None


def _unknown(library: str, name: str, available: list[str]) -> str:
    """The error line for a model name `library` does not have, with the names closest to it."""
    close = difflib.get_close_matches(name, available, n=5, cutoff=0.5) or available[:5]
    return f"model.name: {library} has no classification model {name!r}; e.g. {', '.join(close)}"


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
