import pytest
import torch
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur

from roar import saliency
from roar.models import SmallCNN


def _model(seed=0):
    torch.manual_seed(seed)
    model = SmallCNN(in_channels=2, num_classes=5, widths=(8, 8)).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("name", saliency.available())
def test_pixel_maps_shape_dtype_device_finite(name):
    model = _model()
    images, targets = torch.randn(6, 2, 8, 8), torch.arange(6) % 5
    ground_truth = torch.rand(6, 8, 8) > 0.7  # read by the oracle only
    maps = saliency.create(name, model).pixel_maps(images, targets, ground_truth)
    assert maps.shape == (6, 8, 8) and maps.dtype == torch.float32 and maps.device == images.device
    assert torch.isfinite(maps).all()


@pytest.mark.parametrize("reduce", ["abs_sum", "abs"])
def test_blur_sigma_blurs_the_maps_and_zero_leaves_them_bit_identical(reduce):
    model = _model()
    images, targets = torch.randn(6, 2, 8, 8), torch.arange(6) % 5
    config = saliency.named_config("fullgrad")
    assert config.pop("blur_sigma") == 0  # shipped unblurred
    plain = saliency.create(config, model, reduce=reduce).pixel_maps(images, targets)
    unblurred = saliency.create({**config, "blur_sigma": 0.0}, model, reduce=reduce).pixel_maps(
        images, targets
    )
    blurred = saliency.create({**config, "blur_sigma": 1.0}, model, reduce=reduce).pixel_maps(images, targets)
    assert torch.equal(unblurred, plain)
    # sigma 1: a 7x7 kernel over the spatial dimensions, each channel of an element-wise map on its own.
    assert torch.equal(blurred, gaussian_blur(plain, kernel_size=[7, 7], sigma=[1.0, 1.0]))
    assert blurred.diff(dim=-1).abs().mean() < 0.5 * plain.diff(dim=-1).abs().mean()


def test_unknown_method_names_the_available_ones():
    with pytest.raises(ValueError, match="available: .*fullgrad"):
        saliency.create("nope", _model())


def test_random_is_reproducible_by_seed_and_ignores_the_model():
    images, targets = torch.randn(4, 2, 8, 8), torch.zeros(4, dtype=torch.long)
    a = saliency.create("random", _model(0), seed=7).pixel_maps(images, targets)
    b = saliency.create("random", _model(1), seed=7).pixel_maps(images, targets)
    c = saliency.create("random", _model(0), seed=8).pixel_maps(images, targets)
    assert torch.equal(a, b) and not torch.equal(a, c)
