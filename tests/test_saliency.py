import pytest
import torch
from torch import nn

from roar import saliency
from roar.models import SmallCNN
from roar.saliency import FullGrad


def _model(seed=0):
    torch.manual_seed(seed)
    model = SmallCNN(in_channels=2, num_classes=5, widths=(8, 8)).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("name", sorted(saliency.METHODS))
def test_pixel_maps_shape_dtype_device_finite(name):
    model = _model()
    images, targets = torch.randn(6, 2, 8, 8), torch.arange(6) % 5
    ground_truth = torch.rand(6, 8, 8) > 0.7  # read by the oracle only
    maps = saliency.create(name, model).pixel_maps(images, targets, ground_truth)
    assert maps.shape == (6, 8, 8) and maps.dtype == torch.float32 and maps.device == images.device
    assert torch.isfinite(maps).all()


def test_unknown_method_names_the_available_ones():
    with pytest.raises(ValueError, match="available: .*fullgrad"):
        saliency.create("nope", _model())


def test_random_is_reproducible_by_seed_and_ignores_the_model():
    images, targets = torch.randn(4, 2, 8, 8), torch.zeros(4, dtype=torch.long)
    a = saliency.create("random", _model(0), seed=7).pixel_maps(images, targets)
    b = saliency.create("random", _model(1), seed=7).pixel_maps(images, targets)
    c = saliency.create("random", _model(0), seed=8).pixel_maps(images, targets)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_fullgrad_is_complete_on_the_small_cnn(dtype, rtol):
    model = _model().to(dtype)
    x = torch.randn(8, 2, 8, 8, dtype=dtype)
    fg = FullGrad(model)
    logits = model(x)
    residual = fg.completeness_residual(x, target=None)
    assert (residual / logits.max(1).values.abs()).max() <= rtol
    fg.check_completeness(x, rtol=rtol)


def test_fullgrad_names_the_module_that_breaks_completeness():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 36, 3)
    ).eval()
    with pytest.raises(ValueError, match="ReLU6"):
        FullGrad(model).check_completeness(torch.randn(4, 1, 6, 6) * 10)


def test_fullgrad_leaves_the_model_as_it_was():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    FullGrad(model).attribute(torch.randn(3, 2, 8, 8), target=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert not model.training
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())
