"""FullGrad, SimpleFullGrad, SmoothFullGrad: exact decomposition, maps equal to a naive implementation,
the clear errors, Captum composition, and a model left exactly as it was."""

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from captum.attr import NoiseTunnel
from torch import nn

from benchmarks.measure import build_model
from roar.data import DigitsDataModule
from roar.models import SmallCNN
from roar.saliency import FullGrad, SimpleFullGrad, SmoothFullGrad
from roar.saliency.fullgrad import CompletenessError

TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}
BIASED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Linear)


def randomize_batch_norm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters far from the identity, so BN's effective bias matters."""
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=generator) - 0.5)
    return model.eval()


def small_cnn(in_channels=1, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batch_norm(SmallCNN(in_channels, num_classes=10, widths=(8, 16, 16)), seed)


# Tiny batches: a second thread only adds synchronisation (and waits, on a shared machine).
pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def _built(name: str) -> nn.Module:
    return small_cnn() if name == "small_cnn" else randomize_batch_norm(build_model(name))


def model_named(name: str) -> nn.Module:
    """A fresh copy of the model (built once per session: VGG's initialisation alone takes seconds)."""
    return copy.deepcopy(_built(name))


@functools.cache
def _digits_test_images() -> torch.Tensor:
    datamodule = DigitsDataModule()
    return datamodule.normalize(datamodule.splits["test"].images[:4])


def digits_batch(name: str) -> torch.Tensor:
    """Real test images of the digits datamodule, normalised; 2 x 3 x 32 x 32 for the torchvision models."""
    images = _digits_test_images()
    if name == "small_cnn":
        return images
    return F.interpolate(images[:2], size=32, mode="bilinear").expand(-1, 3, -1, -1).contiguous()


def random_batch(name: str) -> torch.Tensor:
    shape = (4, 1, 8, 8) if name == "small_cnn" else (2, 3, 32, 32)
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


# --- an independent, naive FullGrad: gradients with respect to every kept layer output by autograd.grad,
# --- psi on every layer tensor, every channel upsampled before the sum (the authors' aggregation).


def naive_decomposition(model, x, target):
    """(input gradient, [(module, gradient of its output)] in call order, f) with clones against the
    in-place trap: the model runs on a clone of each kept output, so later in-place ops cannot touch it."""
    kept = []

    def keep(module, inputs, output):
        kept.append((module, output))
        return output.clone()

    handles = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, BIASED)]
    try:
        x = x.detach().requires_grad_(True)
        f = model(x).gather(1, target.view(-1, 1)).squeeze(1)
        grads = torch.autograd.grad(f.sum(), [x, *(out for _, out in kept)])
    finally:
        for h in handles:
            h.remove()
    return grads[0], [(m, g) for (m, _), g in zip(kept, grads[1:])], f.detach()


def naive_bias(module):
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        std = (module.running_var + module.eps).sqrt()
        return (module.bias - module.running_mean * module.weight / std).detach()
    return None if module.bias is None else module.bias.detach()


def naive_psi(t, rescale):
    t = t.abs()
    dims = tuple(range(1, t.ndim)) if rescale == "layer" else tuple(range(2, t.ndim))
    t = t - t.amin(dim=dims, keepdim=True)
    return t / (t.amax(dim=dims, keepdim=True) + 1e-6)


def naive_maps(model, x, target, rescale="layer", times_bias=True):
    input_grad, layer_grads, _ = naive_decomposition(model, x, target)
    maps = naive_psi(input_grad * x, rescale).sum(1, keepdim=True)
    for module, grad in layer_grads:
        bias = naive_bias(module)
        if bias is None or isinstance(module, nn.Linear) or grad.ndim != x.ndim:
            continue
        term = grad * bias.view(1, -1, *[1] * (grad.ndim - 2)) if times_bias else grad
        mode = {3: "linear", 4: "bilinear", 5: "trilinear"}[x.ndim]
        channels = F.interpolate(naive_psi(term, rescale), size=x.shape[2:], mode=mode, align_corners=True)
        maps += channels.sum(1, keepdim=True)
    return maps


def naive_completeness(model, x, target):
    input_grad, layer_grads, f = naive_decomposition(model, x, target)
    total = (input_grad * x).flatten(1).sum(1)
    for module, grad in layer_grads:
        bias = naive_bias(module)
        if bias is not None:
            shaped = bias if isinstance(module, nn.Linear) else bias.view(1, -1, *[1] * (grad.ndim - 2))
            total += (grad * shaped).flatten(1).sum(1)
    return f, total


# --- completeness


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("inputs", ["digits", "random"])
@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "vgg11_bn", "resnet50"])
def test_decomposition_is_complete(name, inputs, dtype):
    model = model_named(name).to(dtype)
    x = (digits_batch(name) if inputs == "digits" else random_batch(name)).to(dtype)
    relative = FullGrad(model).check_completeness(x, rtol=TOLERANCE[dtype])
    assert relative.shape == (len(x),) and relative.max() <= TOLERANCE[dtype]


def test_the_naive_decomposition_in_this_file_is_itself_complete():
    model = model_named("resnet18").double()
    x = random_batch("resnet18").double()
    f, total = naive_completeness(model, x, torch.tensor([3, 7]))
    torch.testing.assert_close(f, total, rtol=1e-10, atol=0)


class ConvTwice(nn.Module):
    """One conv module called twice, with a BN between the calls and a ReLU after each."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.shared = nn.Conv2d(6, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.bn(self.shared(x)))
        x = F.relu(self.shared(x))
        return self.head(x.mean((2, 3)))


class Reordered(nn.Module):
    """Modules registered in another order than they run, and one registered that never runs."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8 * 4 * 4, 5)
        self.unused = nn.Conv2d(8, 8, 1)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.relu(self.bn2(self.conv2(x)))
        return self.head(x.flatten(1))


@pytest.mark.parametrize("cls", [ConvTwice, Reordered])
def test_modules_called_twice_or_out_of_registration_order_decompose_exactly(cls):
    torch.manual_seed(0)
    model = randomize_batch_norm(cls()).double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    target = torch.tensor([0, 1, 2])
    FullGrad(model).check_completeness(x, target, rtol=1e-10)
    torch.testing.assert_close(FullGrad(model).attribute(x, target), naive_maps(model, x, target))


@pytest.mark.parametrize(
    "conv,bn,shape",
    [(nn.Conv1d, nn.BatchNorm1d, (3, 2, 16)), (nn.Conv3d, nn.BatchNorm3d, (3, 2, 6, 6, 6))],
    ids=["1d", "3d"],
)
def test_one_and_three_dimensional_convolutions(conv, bn, shape):
    torch.manual_seed(0)
    model = nn.Sequential(conv(2, 4, 3, padding=1), bn(4), nn.ReLU(), conv(4, 4, 3, stride=2), nn.ReLU(),
                          nn.Flatten(), nn.LazyLinear(3))  # fmt: skip
    model(torch.zeros(shape))  # materialise the lazy layer
    model = randomize_batch_norm(model).double()
    x, target = torch.randn(shape, dtype=torch.float64), torch.tensor([0, 1, 2])
    fg = FullGrad(model)
    fg.check_completeness(x, target, rtol=1e-10)
    maps = fg.attribute(x, target)
    assert maps.shape == (3, 1, *shape[2:])
    torch.testing.assert_close(maps, naive_maps(model, x, target))


def test_batch_norm_1d_and_linear_layers_enter_completeness_but_not_the_map():
    torch.manual_seed(0)
    mlp = randomize_batch_norm(nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                             nn.Linear(8, 3))).double()  # fmt: skip
    x, target = torch.randn(4, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    FullGrad(mlp).check_completeness(x, target, rtol=1e-10)
    input_grad, _, _ = naive_decomposition(mlp, x, target)
    torch.testing.assert_close(FullGrad(mlp).attribute(x, target), naive_psi(input_grad * x, "layer"))


# --- the clear errors


def breaking_model(breaker: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), breaker, nn.Flatten(), nn.Linear(4 * 36, 3)).eval()


class FunctionalGelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 4, 3), nn.Linear(4, 3)

    def forward(self, x):
        return self.head(F.gelu(self.conv(x)).mean((2, 3)))


def test_a_function_that_breaks_completeness_is_pointed_at():
    with pytest.raises(CompletenessError, match=r"the forward\(\) of FunctionalGelu \(model\) is not linear"):
        FullGrad(FunctionalGelu().eval()).check_completeness(torch.randn(2, 1, 6, 6) * 10)


def test_the_innermost_forward_that_breaks_completeness_is_named():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Sequential(nn.ReLU(), FunctionalGelu()), nn.ReLU()).eval()
    with pytest.raises(CompletenessError, match=r"the forward\(\) of FunctionalGelu \(1.1\) is not linear"):
        FullGrad(model).check_completeness(torch.randn(2, 1, 6, 6) * 10)
    # Taken whole, as a unit, it decomposes.
    FullGrad(model, units=["1.1"]).check_completeness(torch.randn(2, 1, 6, 6) * 10)
    FullGrad(model, units=[FunctionalGelu]).check_completeness(torch.randn(2, 1, 6, 6) * 10)


def test_batch_norm_with_batch_statistics_is_named():
    model = breaking_model(nn.BatchNorm2d(4, track_running_stats=False)).eval()
    with pytest.raises(CompletenessError, match=r"BatchNorm2d \(1\)"):
        FullGrad(model).check_completeness(torch.randn(4, 1, 6, 6) + 3)


def test_batch_norm_in_train_mode_is_refused_before_anything_runs():
    model = small_cnn().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 1, 8, 8)
    for call in (
        FullGrad(model).attribute,
        FullGrad(model).check_completeness,
        SmoothFullGrad(model).attribute,
    ):
        with pytest.raises(ValueError, match=r"batch-norm in eval mode.*BatchNorm2d \(1\)"):
            call(x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats kept


def test_bad_arguments():
    with pytest.raises(ValueError, match="rescale must be one of"):
        FullGrad(small_cnn(), rescale="pixel")
    with pytest.raises(TypeError, match="needs an nn.Module"):
        FullGrad(lambda x: x)
    with pytest.raises(ValueError, match="units: 'head' is neither"):
        FullGrad(small_cnn(), units=["head"])
    with pytest.raises(ValueError, match="3 classes for 2 samples"):
        FullGrad(small_cnn()).attribute(torch.randn(2, 1, 8, 8), target=torch.tensor([0, 1, 2]))


# --- the maps


@pytest.mark.parametrize("rescale", ["layer", "channel"])
@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "vgg11_bn"])
def test_maps_equal_the_naive_implementation(name, rescale):
    model = model_named(name).double()
    x = random_batch(name).double()
    target = torch.arange(len(x)) % 3
    for cls, times_bias in ((FullGrad, True), (SimpleFullGrad, False)):
        maps = cls(model, rescale=rescale).attribute(x, target=target)
        torch.testing.assert_close(
            maps, naive_maps(model, x, target, rescale, times_bias), rtol=1e-9, atol=1e-9
        )


def test_float32_maps_equal_the_naive_implementation():
    model, x = model_named("vgg11_bn"), random_batch("vgg11_bn")
    target = torch.tensor([1, 2])
    torch.testing.assert_close(FullGrad(model).attribute(x, target), naive_maps(model, x, target))


def test_simple_fullgrad_differs_from_fullgrad():
    model, x = model_named("small_cnn"), random_batch("small_cnn")
    assert not torch.allclose(FullGrad(model).attribute(x), SimpleFullGrad(model).attribute(x))


def test_smooth_fullgrad_sums_terms_over_noisy_copies_then_applies_psi():
    model = model_named("small_cnn").double()
    x = random_batch("small_cnn").double()
    target = torch.tensor([0, 1, 2, 3])
    maps = SmoothFullGrad(model, num_samples=3, std_spread=0.2, seed=5).attribute(x, target)

    noise = torch.Generator().manual_seed(5)
    spread = 0.2 * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    input_sum, layer_sums = 0, {}
    for _ in range(3):
        noisy = x + torch.randn(x.shape, generator=noise, dtype=x.dtype) * spread
        input_grad, layer_grads, _ = naive_decomposition(model, noisy, target)
        input_sum = input_sum + (input_grad * noisy).sum(1, keepdim=True)
        for i, (module, grad) in enumerate(layer_grads):
            if not isinstance(module, nn.Linear):
                layer_sums[i] = layer_sums.get(i, 0) + grad * naive_bias(module).view(1, -1, 1, 1)
    expected = naive_psi(input_sum, "layer")
    for term in layer_sums.values():
        up = F.interpolate(naive_psi(term, "layer"), size=x.shape[2:], mode="bilinear", align_corners=True)
        expected = expected + up.sum(1, keepdim=True)
    torch.testing.assert_close(maps, expected)


def test_smooth_fullgrad_is_reproducible_by_seed():
    model, x = model_named("small_cnn"), random_batch("small_cnn")
    a = SmoothFullGrad(model, num_samples=4, seed=1).attribute(x)
    b = SmoothFullGrad(model, num_samples=4, seed=1).attribute(x)
    c = SmoothFullGrad(model, num_samples=4, seed=2).attribute(x)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    defaults = SmoothFullGrad(model)
    assert (defaults.num_samples, defaults.std_spread) == (25, 0.15)


def test_smooth_fullgrad_explains_the_class_predicted_for_the_clean_input():
    model, x = model_named("small_cnn"), random_batch("small_cnn")
    predicted = model(x).argmax(1)
    implicit = SmoothFullGrad(model, num_samples=2, std_spread=1.0, seed=3).attribute(x)
    explicit = SmoothFullGrad(model, num_samples=2, std_spread=1.0, seed=3).attribute(x, target=predicted)
    assert torch.equal(implicit, explicit)


@pytest.mark.parametrize("cls", [FullGrad, SimpleFullGrad, SmoothFullGrad])
def test_maps_shape_dtype_and_device(cls):
    model, x = model_named("small_cnn"), random_batch("small_cnn")
    maps = cls(model).attribute(x)
    assert maps.shape == (4, 1, 8, 8) and maps.dtype == x.dtype and maps.device == x.device
    assert torch.isfinite(maps).all() and (maps >= 0).all()


@pytest.mark.parametrize("cls", [FullGrad, SimpleFullGrad])
def test_target_none_is_the_predicted_class_and_an_int_every_samples_class(cls):
    model, x = model_named("small_cnn"), random_batch("small_cnn")
    method = cls(model)
    predicted = model(x).argmax(1)
    torch.testing.assert_close(method.attribute(x), method.attribute(x, target=predicted))
    torch.testing.assert_close(method.attribute(x, target=predicted.tolist()), method.attribute(x))
    every_one = method.attribute(x, target=torch.ones(4, dtype=torch.long))
    torch.testing.assert_close(method.attribute(x, target=1), every_one)
    torch.testing.assert_close(method.attribute(x, target=torch.tensor(1)), every_one)
    assert not torch.allclose(method.attribute(x, target=0), every_one)


# --- the in-place ReLU trap


def test_inplace_relu_gives_the_same_terms_as_out_of_place_relu():
    inplace = model_named("resnet18").double()
    assert any(isinstance(m, nn.ReLU) and m.inplace for m in inplace.modules())
    out_of_place = model_named("resnet18").double()
    for m in out_of_place.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    x, target = random_batch("resnet18").double(), torch.tensor([4, 9])
    for method in (FullGrad, SimpleFullGrad):
        torch.testing.assert_close(
            method(inplace).attribute(x, target), method(out_of_place).attribute(x, target)
        )
    FullGrad(inplace).check_completeness(x, target, rtol=1e-10)


def test_the_inplace_trap_is_real():
    """Kept from a forward hook without a clone, a conv output is rewritten by the in-place ReLU: its
    gradient is then the ReLU output's, and completeness fails badly. FullGrad must not fall into it."""
    model = model_named("vgg11_bn").double()
    x, target = random_batch("vgg11_bn").double(), torch.tensor([0, 1])
    kept = []
    handles = [m.register_forward_hook(lambda m, i, o: kept.append((m, o))) for m in model.modules()
               if isinstance(m, BIASED)]  # fmt: skip
    x_ = x.clone().requires_grad_(True)
    f = model(x_).gather(1, target.view(-1, 1)).squeeze(1)
    for h in handles:
        h.remove()
    grads = torch.autograd.grad(f.sum(), [x_, *(o for _, o in kept)])
    total = (grads[0] * x).flatten(1).sum(1)
    for (module, _), grad in zip(kept, grads[1:]):
        bias = naive_bias(module)
        total += (
            (grad * (bias if isinstance(module, nn.Linear) else bias.view(1, -1, 1, 1))).flatten(1).sum(1)
        )
    assert ((f - total).abs() / f.abs()).max() > 1e-3
    assert FullGrad(model).completeness_residual(x, target).max() / f.abs().min() < 1e-10


# --- Captum conventions


def test_composes_with_captum_noise_tunnel_and_its_convergence_delta():
    model, x = model_named("small_cnn"), random_batch("small_cnn")
    fg = FullGrad(model)
    assert fg.has_convergence_delta() and fg.get_name() == "Full Grad"
    maps, delta = NoiseTunnel(fg).attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.1, target=2,
                                            return_convergence_delta=True)  # fmt: skip
    assert maps.shape == (4, 1, 8, 8) and delta.shape == (12,)
    assert (delta.abs() / model(x).abs().amax()).max() < 1e-4


def test_convergence_delta_is_the_signed_completeness_residual():
    model, x = model_named("small_cnn").double(), random_batch("small_cnn").double()
    x[0] *= 40  # a larger logit and residual for sample 0
    fg = FullGrad(model)
    maps, delta = fg.attribute(x, target=1, return_convergence_delta=True)
    torch.testing.assert_close(maps, fg.attribute(x, target=1))
    torch.testing.assert_close(delta, fg.compute_convergence_delta(maps, x, target=1))
    torch.testing.assert_close(delta.abs(), fg.completeness_residual(x, target=1))
    f, total = naive_completeness(model, x, torch.ones(4, dtype=torch.long))
    torch.testing.assert_close(delta, f - total, rtol=0, atol=1e-12)
    _, smooth_delta = SmoothFullGrad(model, num_samples=2).attribute(x, return_convergence_delta=True)
    assert smooth_delta.shape == (4,) and smooth_delta.abs().max() < 1e-10


# --- the model is left as it was


def test_model_state_is_untouched():
    model = model_named("resnet18")
    model.layer1.requires_grad_(False)  # mixed flags
    model.fc.weight.grad = torch.full_like(model.fc.weight, 0.5)  # a stale gradient the user kept
    model.layer2[0].relu.train()  # mixed modes: a ReLU in train mode is harmless and must stay so
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = random_batch("resnet18")
    x_before = x.clone()

    FullGrad(model).attribute(x, target=1)
    SimpleFullGrad(model).check_completeness(x)
    SmoothFullGrad(model, num_samples=2).attribute(x, return_convergence_delta=True)

    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model.fc.weight.grad, torch.full_like(model.fc.weight, 0.5))
    assert all(p.grad is None for name, p in model.named_parameters() if name != "fc.weight")
    assert torch.equal(x, x_before) and not x.requires_grad and x.grad is None
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_hooks_are_removed_when_the_forward_pass_raises():
    class Failing(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            self.conv(x)
            raise RuntimeError("boom")

    model = Failing().eval()
    for call in (FullGrad(model).attribute, FullGrad(model).check_completeness):
        with pytest.raises(RuntimeError, match="boom"):
            call(torch.randn(1, 1, 5, 5))
        assert not model.conv._forward_hooks
