"""The baseline saliency methods: one interface, Captum underneath, seeded noise, bounded passes."""

import copy
import csv

import pytest
import torch
import torchvision
from torch import nn

from roar import saliency
from roar.cli.app import experiment
from roar.config import ConfigError, method_names, validate
from roar.models import SmallCNN
from roar.saliency import GradCam, GradCamPlusPlus, IntegratedGradients, Sobel
from roar.saliency.cam import spatial_modules
from tests.conftest import compose_config

BASELINES = [
    "input_gradient", "input_x_gradient", "integrated_gradients", "smoothgrad", "smoothgrad_sq", "vargrad",
    "guided_backprop", "gradcam", "gradcam_plus_plus", "random", "sobel",
]  # fmt: skip
NOISY = ["smoothgrad", "smoothgrad_sq", "vargrad"]
# Small but real settings: the tests check the methods, not their convergence.
FAST = {"integrated_gradients": {"n_steps": 8}, **{name: {"n_samples": 5} for name in NOISY}}
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
]


def _model(seed=0, in_channels=2, dtype=torch.float32):
    torch.manual_seed(seed)
    model = SmallCNN(in_channels=in_channels, num_classes=5, widths=(8, 8, 8)).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.to(dtype)


def _batch(n=6, channels=2, size=8, seed=1, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=generator, dtype=dtype), torch.arange(n) % 5


def _maps(name, model, images, targets, **params):
    return saliency.create(name, model, **{**FAST.get(name, {}), **params}).pixel_maps(images, targets)


def test_every_baseline_has_a_config_file_naming_its_target():
    assert set(BASELINES) <= set(saliency.available())
    for name in BASELINES:
        assert "_target_" in saliency.named_config(name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", BASELINES)
def test_maps_are_finite_float_per_pixel_on_the_model_device(name, device):
    model = _model().to(device)
    images, targets = _batch()  # on the CPU: pixel_maps moves them to the model's device
    maps = _maps(name, model, images, targets)
    assert maps.shape == (6, 8, 8) and maps.dtype == torch.float32
    assert maps.device.type == device
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0


@pytest.mark.parametrize("name", BASELINES)
def test_a_fixed_seed_gives_the_same_maps_and_leaves_the_global_rng_alone(name):
    images, targets = _batch()
    state = torch.get_rng_state()
    first = _maps(name, _model(), images, targets, **({"seed": 3} if name in NOISY + ["random"] else {}))
    assert torch.equal(torch.get_rng_state(), state)
    again = _maps(name, _model(), images, targets, **({"seed": 3} if name in NOISY + ["random"] else {}))
    assert torch.equal(first, again)
    if name in NOISY:
        other = _maps(name, _model(), images, targets, seed=4)
        assert not torch.allclose(first, other)


@pytest.mark.parametrize("name", BASELINES)
def test_the_model_is_left_as_it_was(name):
    model = _model()
    model[0].weight.requires_grad_(False)  # a frozen layer stays frozen
    before = copy.deepcopy(model.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    _maps(name, model, *_batch())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags and not flags[0]
    assert not model.training and not any(m.training for m in model.modules())
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


@pytest.mark.parametrize("baseline", IntegratedGradients.BASELINES)
def test_integrated_gradients_are_complete_for_every_baseline(baseline):
    model = _model(dtype=torch.float64)
    with torch.no_grad():
        model[-1].weight.mul_(10)  # logit gaps well above the quadrature error
    images, targets = _batch(n=4, dtype=torch.float64)
    method = IntegratedGradients(
        model, n_steps=400, baseline=baseline, baseline_sigma=1.5, steps_per_pass=400
    )
    attributions = method.attribute(images, target=targets)
    with torch.no_grad():
        gap = (model(images) - model(method.baselines(images))).gather(1, targets.view(-1, 1)).squeeze(1)
    assert gap.abs().min() > 1e-2
    # ReLU kinks along the path slow the quadrature's convergence: 400 points leave < 1e-3 of the gaps.
    torch.testing.assert_close(attributions.sum(dim=(1, 2, 3)), gap, rtol=1e-2, atol=1e-3 * gap.abs().max())


def test_integrated_gradients_baselines_are_what_they_say():
    images, _ = _batch(n=2)
    method = IntegratedGradients(_model(), baseline="channel_mean")
    means = method.baselines(images)
    assert torch.allclose(means, images.mean(dim=(2, 3), keepdim=True).expand_as(images))
    method.baseline = "blurred"
    blurred = method.baselines(images)
    # Same mean colour (up to the reflected borders), much less variation between neighbours.
    assert blurred.diff(dim=-1).abs().mean() < 0.3 * images.diff(dim=-1).abs().mean()
    assert torch.equal(IntegratedGradients(_model()).baselines(images), torch.zeros_like(images))


def test_chunked_integrated_gradients_equal_one_big_batch():
    model, (images, targets) = _model(dtype=torch.float64), _batch(dtype=torch.float64)
    chunked = IntegratedGradients(model, n_steps=12, steps_per_pass=1).attribute(images, target=targets)
    uneven = IntegratedGradients(model, n_steps=12, steps_per_pass=5).attribute(images, target=targets)
    whole = IntegratedGradients(model, n_steps=12, steps_per_pass=12).attribute(images, target=targets)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(uneven, whole)


@pytest.mark.parametrize("name", NOISY)
def test_noise_chunking_changes_nothing_but_the_pass_size(name):
    model, (images, targets) = _model(dtype=torch.float64), _batch(dtype=torch.float64)
    maps = [_maps(name, model, images, targets, n_samples=7, samples_per_pass=k, seed=2) for k in (1, 3, 7)]
    torch.testing.assert_close(maps[1], maps[0])
    torch.testing.assert_close(maps[2], maps[0])


def test_noise_methods_agree_with_their_definitions():
    """SmoothGrad, SmoothGrad^2 and VarGrad are the mean, mean square and variance of the same gradients."""
    model, (images, targets) = _model(dtype=torch.float64), _batch(dtype=torch.float64)
    params = {"n_samples": 6, "seed": 5, "reduce": "sum"}
    grads = []
    method = saliency.SmoothGrad(model, n_samples=1, seed=5)  # one noisy copy per call, same stream
    for _ in range(6):
        grads.append(method.attribute(images.clone().requires_grad_(), target=targets))
    grads = torch.stack(grads)
    for name, expected in [
        ("smoothgrad", grads.mean(0)),
        ("smoothgrad_sq", grads.square().mean(0)),
        ("vargrad", grads.var(0, unbiased=False)),
    ]:
        maps = saliency.create(name, model, **params).pixel_maps(images, targets)
        torch.testing.assert_close(maps, expected.sum(1).float())


class _HalfSquaredNorm(nn.Module):
    """f_c(x) = |x|^2 / 2 for every class c: its input gradient is x itself."""

    def forward(self, x):
        return (x.flatten(1).square().sum(1, keepdim=True) / 2).repeat(1, 5)


def test_noise_sigma_is_a_fraction_of_each_images_range():
    """With gradient x, VarGrad is the variance of the noise itself: (noise_level * (max - min))^2."""
    images, targets = _batch(n=2, dtype=torch.float64)
    images[1] *= 100
    variance = saliency.VarGrad(_HalfSquaredNorm(), n_samples=400, noise_level=0.1).attribute(images, targets)
    sigma = 0.1 * (images.flatten(1).amax(1) - images.flatten(1).amin(1))
    torch.testing.assert_close(variance.flatten(1).mean(1), sigma.square(), rtol=0.1, atol=0)


def test_gradcam_default_layer_is_the_last_conv_block_for_any_model():
    images = torch.randn(2, 1, 8, 8)
    assert spatial_modules(SmallCNN(1, 10, widths=(16, 32, 32)).eval(), images)[-1] == "10"  # 2x2 ReLU
    cifar = torch.randn(1, 3, 32, 32)
    resnet = torchvision.models.resnet18(num_classes=10).eval()
    assert spatial_modules(resnet, cifar)[-1] == "layer3"  # layer4 is 1x1 at 32x32
    assert spatial_modules(resnet, torch.randn(1, 3, 64, 64))[-1] == "layer4"
    vgg = torchvision.models.vgg11_bn(num_classes=10).eval()
    # Unmodified: its avgpool copies the 1x1 features to 7x7, which would give a constant map.
    assert spatial_modules(vgg, cifar)[-1] == "features.27"  # the last ReLU; its max-pool leaves 1x1
    vgg.avgpool = nn.Identity()  # resized for 512x1x1 features, as for 32x32 inputs
    vgg.classifier[0] = nn.Linear(512, 4096)
    assert spatial_modules(vgg, cifar)[-1] == "features.27"


@pytest.mark.parametrize("cls", [GradCam, GradCamPlusPlus])
def test_grad_cams_are_nonnegative_at_the_input_size_and_follow_the_layer(cls):
    model, (images, targets) = _model(), _batch(size=12)
    default = cls(model).attribute(images, target=targets)
    last_block = cls(model, layer="10").attribute(images, target=targets)
    middle = cls(model, layer="6").attribute(images, target=targets)
    assert default.shape == (6, 1, 12, 12) and (default >= 0).all() and default.sum() > 0
    assert torch.equal(default, last_block) and not torch.allclose(default, middle)
    with pytest.raises(ValueError, match="no module 'nope'; modules with a spatial output: 0, 1, 2"):
        cls(model, layer="nope").attribute(images, target=targets)


def test_grad_cam_plus_plus_follows_the_papers_definition():
    """Chattopadhay et al.: Y = exp(S), alpha = d2Y / (2 d2Y + sum_ab A_ab d3Y), w = sum alpha relu(dY),
    cam = relu(sum_k w_k A_k). Derivatives taken here by autograd, element by element."""
    model = _model(dtype=torch.float64)
    images, targets = _batch(n=2, dtype=torch.float64)
    ours = GradCamPlusPlus(model, layer="10").attribute(images, target=targets)
    layers = list(model)
    body, head = nn.Sequential(*layers[:11]), nn.Sequential(*layers[11:])  # up to the layer, and after it
    for i in range(2):
        with torch.no_grad():
            activation = body(images[i : i + 1])
        a = activation.clone().requires_grad_(True)
        y = head(a)[0, targets[i]].exp()
        (d1,) = torch.autograd.grad(y, a, create_graph=True)
        d2, d3 = torch.zeros_like(a), torch.zeros_like(a)
        for j in range(a.numel()):
            (row2,) = torch.autograd.grad(d1.flatten()[j], a, create_graph=True)
            (row3,) = torch.autograd.grad(row2.flatten()[j], a, retain_graph=True)
            d2.view(-1)[j], d3.view(-1)[j] = row2.flatten()[j].detach(), row3.flatten()[j]
        a, d1 = a.detach(), d1.detach()
        denominator = 2 * d2 + a.sum((2, 3), keepdim=True) * d3
        alpha = d2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        weights = (alpha * d1.clamp_min(0)).sum((2, 3), keepdim=True)
        cam = (weights * a).sum(1, keepdim=True).clamp_min(0)
        # dY = Y dS: the paper's map is Y times the map of the score itself.
        expected = torch.nn.functional.interpolate(cam / y.detach(), size=(8, 8), mode="bilinear")
        torch.testing.assert_close(ours[i : i + 1], expected)


def test_sobel_is_the_edge_magnitude_and_ignores_the_model():
    step = torch.zeros(1, 1, 6, 6)
    step[..., 3:] = 1.0  # a vertical edge between columns 2 and 3
    edges = Sobel().attribute(step)
    expected = torch.zeros(1, 1, 6, 6)
    expected[..., 2:4] = 4.0  # (1 + 2 + 1) x the unit step, on both sides of the edge
    assert torch.equal(edges, expected)
    corner = torch.ones(1, 1, 5, 5).triu()
    assert torch.equal(Sobel().attribute(corner.mT), Sobel().attribute(corner).mT)
    images, targets = _batch()
    assert torch.equal(_maps("sobel", _model(0), images, targets), _maps("sobel", _model(1), images, targets))


def test_guided_backprop_is_unchanged_by_inplace_relus():
    """torchvision's VGG rewrites conv/BN outputs in place (ReLU(inplace=True)); Captum's hooks must see
    the same gradients as with out-of-place ReLUs."""
    torch.manual_seed(0)
    vgg = torchvision.models.vgg11_bn(num_classes=10).eval()
    outofplace = copy.deepcopy(vgg)
    for m in outofplace.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    images, targets = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    for name in ("guided_backprop", "gradcam_plus_plus"):
        torch.testing.assert_close(
            saliency.create(name, vgg).pixel_maps(images, targets),
            saliency.create(name, outofplace).pixel_maps(images, targets),
        )


def test_reduce_is_configurable_per_method():
    model, (images, targets) = _model(), _batch()
    attributions = saliency.create("input_x_gradient", model).attribution.attribute(
        images.clone().requires_grad_(), target=targets
    )
    for reduce, expected in [
        ("abs_sum", attributions.abs().sum(1)),
        ("sum", attributions.sum(1)),
        ("abs_max", attributions.abs().amax(1)),
    ]:
        maps = saliency.create("input_x_gradient", model, reduce=reduce).pixel_maps(images, targets)
        torch.testing.assert_close(maps, expected)


@pytest.mark.parametrize(
    "choice,expected",
    [
        ("method=paper", ["input_gradient", "integrated_gradients", "smoothgrad", "gradcam", "fullgrad",
                          "random"]),
        ("method=[paper]", ["input_gradient", "integrated_gradients", "smoothgrad", "gradcam", "fullgrad",
                            "random"]),
        ("method=[paper,sobel,vargrad]", ["input_gradient", "integrated_gradients", "smoothgrad", "gradcam",
                                          "fullgrad", "random", "sobel", "vargrad"]),
        ("method=[sobel,gradcam_plus_plus]", ["sobel", "gradcam_plus_plus"]),
    ],
)  # fmt: skip
def test_presets_and_lists_compose(tmp_path, choice, expected):
    cfg = compose_config(tmp_path, choice)
    assert method_names(cfg) == expected
    validate(cfg)


def test_all_preset_selects_every_method_that_needs_no_ground_truth(tmp_path):
    cfg = compose_config(tmp_path, "method=all")
    # The oracle reads the dataset's ground truth (dataset=synthetic only), so no preset can hold it; the
    # perturbation methods that sample and the integrated gradients ensembles are left to be selected by name.
    costly = {"shapley_value_sampling", "lime", "kernel_shap"}  # hundreds of passes per image
    costly |= {"integrated_gradients_sg", "integrated_gradients_sg_sq", "integrated_gradients_var"}
    assert sorted(method_names(cfg)) == sorted(set(saliency.available()) - {"oracle"} - costly)


def test_the_demo_runs_the_paper_preset(tmp_path):
    assert method_names(compose_config(tmp_path, "experiment=digits")) == method_names(
        compose_config(tmp_path, "method=paper")
    )


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "method.integrated_gradients.baseline=black",
            "method.integrated_gradients: baseline must be one of",
        ),
        ("method.smoothgrad.n_samples=0", "method.smoothgrad: n_samples and samples_per_pass must be >= 1"),
        ("+method.gradcam.target_layer=6", "method.gradcam: .*unexpected keyword argument 'target_layer'"),
        ("method.input_gradient.reduce=max", "method.input_gradient: unknown pixel reduction 'max'"),
    ],
)
def test_bad_method_parameters_are_rejected_before_any_compute(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config(tmp_path, "method=paper", override))


def test_a_bad_method_parameter_stops_the_cli_with_one_line(run_roar, tmp_path):
    done = run_roar(
        "method=paper", "method.integrated_gradients.baseline=black", "logger=none", "hydra.run.dir=run"
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "roar: error: method.integrated_gradients: baseline must be one of "
        "('zeros', 'channel_mean', 'blurred'), got 'black'"
    ]
    assert not (tmp_path / "cache").exists()


def test_the_paper_preset_runs_the_grid(tmp_path):
    cheap = ["method.integrated_gradients.n_steps=4", "method.smoothgrad.n_samples=4"]
    cfg = compose_config(
        tmp_path, "method=paper", "roar.fractions=[0.5]", "trainer.max_epochs=1", "logger=none", *cheap
    )
    with open(experiment(cfg) / "results.csv") as f:
        cells = {(row["method"], float(row["fraction"])) for row in csv.DictReader(f)}
    assert cells == {(m, f) for m in method_names(cfg) for f in (0.0, 0.5)}
