"""The networks behind roar/conf/model/: shapes, CIFAR stems, input-channel adaptation, and FullGrad
completeness in float64 with non-trivial batch-norm statistics."""

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from roar.config import ConfigError
from roar.models import ImageClassifier, torchvision_net
from roar.saliency import FullGrad
from tests.conftest import compose_config

MODELS = [
    ("small_cnn", []),
    ("vgg11_bn_cifar", []),
    ("vgg16_bn_cifar", []),
    ("resnet18_cifar", []),
    ("fast_cifar", []),
    ("torchvision", ["model.name=resnet50"]),
    ("torchvision", ["model.name=vgg11_bn"]),
]


def _classifier(tmp_path, model: str, *overrides: str, dataset: str = "cifar10") -> ImageClassifier:
    cfg = compose_config(tmp_path, f"model={model}", f"dataset={dataset}", *overrides)
    return instantiate(cfg.model)


def _randomise_batch_norm(net: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters far from their initial (identity) values, so every
    batch-norm contributes a bias term of its own to the decomposition."""
    generator = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            ranges = {
                "running_mean": (-1, 1),
                "running_var": (0.5, 2),
                "weight": (0.5, 1.5),
                "bias": (-0.5, 0.5),
            }
            for name, (low, high) in ranges.items():
                tensor = getattr(m, name).data
                tensor.copy_(torch.empty_like(tensor).uniform_(low, high, generator=generator))
    return net


@pytest.mark.parametrize(("model", "overrides"), MODELS, ids=[f"{m}{o}" for m, o in MODELS])
def test_fullgrad_is_complete_in_float64(tmp_path, model, overrides):
    net = _randomise_batch_norm(_classifier(tmp_path, model, *overrides).net).eval().double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    relative = FullGrad(net).check_completeness(x, rtol=1e-8)
    assert relative.max() <= 1e-8 and net(x).shape == (2, 10)


@pytest.mark.parametrize(("model", "overrides"), MODELS, ids=[f"{m}{o}" for m, o in MODELS])
def test_grey_images_and_other_class_counts(tmp_path, model, overrides):
    net = _classifier(tmp_path, model, *overrides, dataset="mnist").net.eval()
    # At 32x32: the VGGs' five max-pools need at least that (MNIST's 28x28 goes with the other models).
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_cifar_models_keep_resolution_in_the_stem(tmp_path):
    resnet = _classifier(tmp_path, "resnet18_cifar").net
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1)
    assert isinstance(resnet.maxpool, nn.Identity)
    stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1)
    assert stem(torch.randn(1, 3, 32, 32)).shape == (1, 64, 32, 32)
    vgg = _classifier(tmp_path, "vgg16_bn_cifar").net
    assert vgg[0](torch.randn(1, 3, 32, 32)).shape == (1, 512, 1, 1)
    convs = [m for m in vgg.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and len([m for m in vgg.modules() if isinstance(m, nn.Linear)]) == 1
    assert (
        len([m for m in _classifier(tmp_path, "vgg11_bn_cifar").net.modules() if isinstance(m, nn.Conv2d)])
        == 8
    )


def test_torchvision_models_train_from_scratch_with_adapted_first_conv():
    net = torchvision_net("resnet50", in_channels=1, num_classes=7)
    assert net.conv1.in_channels == 1 and net.conv1.out_channels == 64 and net.conv1.stride == (2, 2)
    assert net.fc.out_features == 7
    densenet = torchvision_net("densenet121", in_channels=2, num_classes=4)
    assert densenet.features.conv0.in_channels == 2


def test_unknown_torchvision_model_is_a_config_error():
    with pytest.raises(ConfigError, match="model.name: torchvision has no classification model 'resnet5'"):
        torchvision_net("resnet5", in_channels=3, num_classes=10)


def test_vision_transformers_take_the_image_size_and_only_they():
    assert torchvision_net("vit_b_16", in_channels=1, num_classes=3, image_size=32)(
        torch.randn(1, 1, 32, 32)
    ).shape == (1, 3)
    with pytest.raises(ConfigError, match="model.image_size: only the vision transformers"):
        torchvision_net("resnet18", in_channels=3, num_classes=10, image_size=32)
