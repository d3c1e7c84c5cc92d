"""FullGrad beyond piecewise-linear networks: implicit biases b = m(z) - J_m(z) z of every non-linear module,
units taken whole, free parameters; checked against full Jacobians computed by brute force, on the five
modern torchvision architectures, and against the maps FullGrad gave ReLU networks before."""

import copy
import csv
import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torchvision.models.convnext import LayerNorm2d
from torchvision.ops.misc import SqueezeExcitation

from roar.cli.app import experiment
from roar.saliency import FullGrad, SimpleFullGrad, SmoothFullGrad, full_gradient_terms
from roar.saliency.decomposition import LayerCall
from roar.saliency.fullgrad import feature_maps, rescaled_channel_sum
from tests.conftest import compose_config
from tests.saliency.test_fullgrad import model_named, naive_psi, random_batch

TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}
REFERENCE_MAPS = Path(__file__).with_name("fullgrad_relu_maps.pt")


# Tiny batches: a second thread only adds synchronisation (and waits, on a shared machine).
pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random normalisation statistics and every parameter moved off its initialisation (torchvision
    zero-initialises ViT's head and ConvNeXt's layer scale is 1e-6: both would hide terms)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) * 1.5 + 0.5)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    return model.eval()


# --- brute force: the full Jacobian of every unit call on tiny inputs, gradients by autograd.grad


def brute_force_terms(model: nn.Module, x: torch.Tensor, target: torch.Tensor, units: list[nn.Module]):
    """(f, input term grad_x f * x, {(module, call index): term grad_out f * b, shaped as the call's
    output}), per element: each unit's call is replayed from clones
    of its inputs (taken before it runs: in-place units overwrite them), its full Jacobian J taken by
    torch.autograd.functional.jacobian, b = m(z) - J z."""
    inputs, outputs = [], []

    def keep_inputs(module, args, kwargs):
        inputs.append((module, tuple(a.detach().clone() for a in args), kwargs))

    def keep_output(module, args, output):
        outputs.append(output[0] if isinstance(output, tuple) else output)
        return (output[0].clone(), *output[1:]) if isinstance(output, tuple) else output.clone()

    handles = [m.register_forward_pre_hook(keep_inputs, with_kwargs=True) for m in units]
    handles += [m.register_forward_hook(keep_output) for m in units]
    try:
        x = x.detach().requires_grad_(True)
        with sdpa_kernel(SDPBackend.MATH):
            f = model(x).gather(1, target.view(-1, 1)).squeeze(1)
        input_grad, *grads = torch.autograd.grad(f.sum(), [x, *outputs])
    finally:
        for h in handles:
            h.remove()
    terms, counts = {}, {}
    for (module, args, kwargs), grad in zip(inputs, grads):

        def first_output(*z, module=module, kwargs=kwargs):
            out = module(*(t.clone() for t in z), **kwargs)
            return out[0] if isinstance(out, tuple) else out

        with sdpa_kernel(SDPBackend.MATH):
            jacobians = torch.autograd.functional.jacobian(first_output, args)
        value = first_output(*args).detach()
        linear = sum(j.reshape(value.numel(), -1) @ z.reshape(-1) for j, z in zip(jacobians, args))
        bias = value - linear.view_as(value)
        index = counts.get(module, 0)
        counts[module] = index + 1
        terms[module, index] = grad * bias
    return f.detach(), (input_grad * x).detach(), terms


def parameter_term(model: nn.Module, name: str, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """grad_p f * p per sample by forward mode over the whole model: d/de f(p (1 + e)) at e = 0."""
    p = dict(model.named_parameters())[name].detach()

    def f(value):
        logits = torch.func.functional_call(model, {name: value}, (x,))
        return logits.gather(1, target.view(-1, 1)).squeeze(1)

    with sdpa_kernel(SDPBackend.MATH):
        return torch.func.jvp(f, (p,), (p,))[1]


class Tokens(nn.Module):
    """A conv stem, attention over the 9 positions as tokens, a linear head."""

    def __init__(self):
        super().__init__()
        self.stem, self.attention = nn.Conv2d(2, 4, 1), nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        tokens = self.stem(x).flatten(2).transpose(1, 2)
        attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return self.head((attended + tokens).mean(1))


ELEMENTWISE = [nn.GELU(), nn.GELU("tanh"), nn.SiLU(), nn.Sigmoid(), nn.Tanh(), nn.Hardswish(),
               nn.Hardsigmoid(), nn.ELU(), nn.SELU(), nn.Softplus(), nn.Mish(), nn.ReLU6(),
               nn.Hardtanh(-0.5, 0.5), nn.SiLU(inplace=True), nn.Hardswish(inplace=True)]  # fmt: skip
NORMS = [nn.GroupNorm(2, 4), LayerNorm2d(4), nn.LayerNorm([4, 3, 3]), SqueezeExcitation(4, 2)]


def hand_built(unit: nn.Module) -> nn.Module:
    # A copy: the parametrised unit is one object shared by every test that takes it, and randomize() and
    # .double() change a model in place; a test must not see what an earlier one did to it.
    # Its own parameters are drawn again here: those it was built with at collection come from whatever
    # global random state the collection left (a SqueezeExcitation whose ReLU is dead for these inputs is
    # linear, with no implicit bias to find).
    unit = copy.deepcopy(unit)
    torch.manual_seed(0)
    for m in unit.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    if isinstance(unit, nn.MultiheadAttention):
        return randomize(Tokens())
    return randomize(nn.Sequential(nn.Conv2d(2, 4, 1), unit, nn.Flatten(), nn.Linear(36, 3)))


@pytest.mark.parametrize(
    "unit",
    [*ELEMENTWISE, *NORMS, nn.MultiheadAttention(4, 2)],
    ids=lambda m: type(m).__name__ + ("_inplace" if getattr(m, "inplace", False) else ""),
)
def test_each_term_equals_the_brute_force_one(unit):
    model = hand_built(unit).double()
    unit = model.attention if isinstance(model, Tokens) else model[1]
    x = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    target = torch.tensor([0, 1, 2])
    units = [m for m in model.modules() if m is unit or isinstance(m, (nn.Conv2d, nn.Linear))]
    units = [m for m in units if not any(m in set(u.modules()) - {u} for u in units)]  # none inside another
    f, input_term, brute = brute_force_terms(model, x, target, units)
    input_term = input_term.flatten(1).sum(1)
    brute = {call: term.flatten(1).sum(1) for call, term in brute.items()}
    torch.testing.assert_close(input_term + sum(brute.values()), f, rtol=1e-10, atol=0)  # brute force holds

    terms = full_gradient_terms(model, x, target)
    names = {m: name for name, m in model.named_modules()}
    ours = {(name, index): t.flatten(1).sum(1) for name, index, t in terms.terms}
    assert set(ours) == {(names[m], index) for m, index in brute}
    for (module, index), term in brute.items():
        torch.testing.assert_close(ours[names[module], index], term, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(terms.input.flatten(1).sum(1), input_term, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(terms.output, f, rtol=1e-12, atol=0)  # ours: the fused attention kernel
    assert abs(brute[unit, 0]).max() > 1e-3  # the unit's implicit bias is there to be found


@pytest.mark.parametrize("rescale", ["layer", "channel"])
def test_maps_with_implicit_biases_are_psi_of_the_brute_force_terms_upsampled_and_summed(rescale):
    # GELU, SiLU and LayerNorm (implicit biases), a pooling that halves the grid (the map upsamples those
    # terms), a linear head (its term, on the logits, lies nowhere on the image). The expected map is the
    # authors' aggregation, computed independently: psi of each brute-force term (naive_psi), every channel
    # upsampled bilinearly to the image, summed with psi of the input term.
    torch.manual_seed(0)
    model = randomize(nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.GELU(), nn.AvgPool2d(2), nn.Conv2d(4, 4, 1), LayerNorm2d(4),
        nn.SiLU(), nn.Flatten(), nn.Linear(36, 3),
    )).double()  # fmt: skip
    x = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    target = torch.tensor([0, 1, 2])
    units = [m for m in model if not isinstance(m, (nn.AvgPool2d, nn.Flatten))]
    f, input_term, terms = brute_force_terms(model, x, target, units)
    on_image = [term for term in terms.values() if term.ndim == x.ndim]
    assert len(on_image) == 5 and {term.shape[-1] for term in on_image} == {6, 3}
    expected = naive_psi(input_term, rescale).sum(1, keepdim=True)
    for term in on_image:
        upsampled = F.interpolate(naive_psi(term, rescale), x.shape[2:], mode="bilinear", align_corners=True)
        expected += upsampled.sum(1, keepdim=True)
    maps = FullGrad(model, rescale=rescale).attribute(x, target)
    torch.testing.assert_close(maps, expected, rtol=1e-10, atol=1e-10)
    # GELU's, LayerNorm's and SiLU's terms weigh in the expected map: leaving one out would break the equality
    implicit = [terms[m, 0] for m in (model[1], model[4], model[5])]
    assert min(naive_psi(t, rescale).sum(1).amax().item() for t in implicit) > 0.5


def test_inplace_units_run_out_of_place_and_get_their_flag_back():
    model = hand_built(nn.SiLU(inplace=True))
    x = torch.randn(2, 2, 3, 3)
    FullGrad(model).check_completeness(x)
    assert model[1].inplace


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return randomize(torchvision.models.VisionTransformer(8, 4, num_layers=1, num_heads=2, hidden_dim=8,
                                                          mlp_dim=16, num_classes=3))  # fmt: skip


def test_free_parameters_are_units_equal_to_the_forward_mode_product():
    model = tiny_vit().double()
    x, target = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 2])
    terms = full_gradient_terms(model, x, target)
    by_name = {name: t for name, _, t in terms.terms}
    for name in ("class_token", "encoder.pos_embedding"):
        torch.testing.assert_close(by_name[name].flatten(1).sum(1), parameter_term(model, name, x, target))
    # cat([class token, patches]): the term covers the concatenation, zero on the patches
    assert by_name["class_token"].shape == (2, 5, 8) and not by_name["class_token"][:, 1:].any()


def test_parameters_that_do_not_require_a_gradient_still_give_their_terms():
    model = tiny_vit().double().requires_grad_(False)
    FullGrad(model).check_completeness(torch.randn(2, 3, 8, 8, dtype=torch.float64), rtol=1e-10)


# --- the five architectures


@functools.cache
def _architecture(name: str) -> nn.Module:
    torch.manual_seed(0)
    extra = {"image_size": 32} if name == "vit_b_16" else {}
    return randomize(torchvision.models.get_model(name, weights=None, num_classes=10, **extra))


ARCHITECTURES = ["convnext_tiny", "efficientnet_b0", "mobilenet_v3_small", "vit_b_16", "swin_t"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_modern_architectures_decompose_exactly(name, dtype):
    model = copy.deepcopy(_architecture(name)).to(dtype)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=dtype)
    relative = FullGrad(model).check_completeness(x, rtol=TOLERANCE[dtype])
    assert relative.max() <= TOLERANCE[dtype]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_maps_on_modern_architectures(name):
    model = _architecture(name)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for method in (FullGrad(model), SimpleFullGrad(model), SmoothFullGrad(model, num_samples=2)):
        maps, delta = method.attribute(x, target=1, return_convergence_delta=True)
        assert maps.shape == (2, 1, 32, 32) and torch.isfinite(maps).all() and maps.min() >= 0
        assert (delta.abs() / model(x)[:, 1].abs()).max() < 1e-4
    # the layers' terms enter the map, not only the input term
    input_map = rescaled_channel_sum(full_gradient_terms(model, x, 1).input.abs(), "layer")
    assert (FullGrad(model).attribute(x, 1) - input_map).abs().amax() > 0.5


# --- where the terms lie on the image


def test_feature_maps_layouts():
    image = (32, 32)
    channel_first, channel_last = torch.randn(2, 96, 8, 8), torch.randn(2, 8, 8, 96)
    implicit, linear, conv = LayerCall("u", 0), LayerCall("l", 0, bias_dim=-1), LayerCall("c", 0, bias_dim=1)
    assert feature_maps(channel_first, implicit, image) is channel_first
    torch.testing.assert_close(feature_maps(channel_last, implicit, image), channel_last.movedim(-1, 1))
    torch.testing.assert_close(feature_maps(channel_last, linear, image), channel_last.movedim(-1, 1))
    assert feature_maps(channel_first, conv, image) is channel_first
    tokens = torch.randn(2, 1 + 4 * 4, 8)  # a class token, then 16 patches row by row
    grid = feature_maps(tokens, implicit, image)
    assert grid.shape == (2, 8, 4, 4) and torch.equal(grid[:, :, 1, 2], tokens[:, 1 + 4 + 2])
    assert feature_maps(torch.randn(2, 10), linear, image) is None  # logits lie nowhere
    assert feature_maps(torch.randn(2, 7, 8), implicit, image) is None  # 7 tokens fill no square grid


# --- ReLU networks: the maps of before


# Per map, the largest difference allowed, as a fraction of the reference map's maximum. A float32 computation
# on another CPU (other kernels, other summation orders) differs from this machine's by up to about twice
# either one's distance from the exact maps; measured against float64 here, that distance is at most 4.7e-7 of
# the maximum with psi over the whole layer, and 1.1e-3 with psi per channel, whose division by a channel's
# span amplifies rounding where a channel's values nearly coincide. The tolerances leave 10x and 4.5x that
# margin. Leaving out one layer's term moves the layer-rescaled maps by at least 5.3e-3 of their maximum, and
# the channel-rescaled maps of small_cnn and vgg11_bn by at least 0.16; ResNet-18's channel-rescaled map moves
# by only 1e-4, inside its own float32 noise, so for it this test is coarse (test_fullgrad.py checks those
# maps exactly, in float64, against a naive implementation). SmoothFullGrad's noise comes from a seeded CPU
# generator: the same draws everywhere.
RELU_MAP_TOLERANCE = {
    "fullgrad": 1e-5, "fullgrad_channel": 1e-2, "simple_fullgrad": 1e-5, "smooth_fullgrad": 1e-5,
}  # fmt: skip


@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "vgg11_bn"])
def test_relu_networks_give_the_maps_they_gave_before(name):
    """tests/saliency/fullgrad_relu_maps.pt holds the maps of the implementation before implicit biases
    (commit 21b9b08), computed with one thread by `python -m scripts.fullgrad_relu_maps` (bit for bit what
    this project's development machine gives today)."""
    reference = torch.load(REFERENCE_MAPS)
    model, x = model_named(name), random_batch(name)
    target = torch.arange(len(x)) % 3
    methods = {
        "fullgrad": FullGrad(model),
        "fullgrad_channel": FullGrad(model, rescale="channel"),
        "simple_fullgrad": SimpleFullGrad(model),
        "smooth_fullgrad": SmoothFullGrad(model, num_samples=2),
    }
    for key, method in methods.items():
        expected = reference[f"{name}/{key}"]
        atol = RELU_MAP_TOLERANCE[key] * expected.abs().max().item()
        torch.testing.assert_close(method.attribute(x, target), expected, rtol=0, atol=atol, msg=key)
    # The completeness delta is rounding noise: both this one and the reference's lie within float32's
    # completeness tolerance of zero (TOLERANCE: 1e-4 of the logit), so within twice that of each other.
    delta = FullGrad(model).attribute(x, target, return_convergence_delta=True)[1]
    logits = model(x).gather(1, target.view(-1, 1)).squeeze(1).detach()
    assert ((delta - reference[f"{name}/delta"]).abs() <= 2 * TOLERANCE[torch.float32] * logits.abs()).all()


# --- full-gradients as data


def test_full_gradient_terms_sum_to_the_output_and_are_named_like_the_modules():
    model = _architecture("efficientnet_b0").double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    terms = full_gradient_terms(model, x)
    assert terms.output.shape == (2,) and terms.input.shape == x.shape
    total = terms.input.flatten(1).sum(1) + sum(t.flatten(1).sum(1) for _, _, t in terms.terms)
    torch.testing.assert_close(total, terms.output, rtol=1e-10, atol=0)
    modules = dict(model.named_modules())
    assert all(name in modules for name, _, _ in terms.terms)
    assert ("features.1.0.block.1", 0) in {(name, index) for name, index, _ in terms.terms}  # an SE unit
    names, shares = terms.shares()
    assert names[0] == "input" and shares.shape == (2, len(names))
    torch.testing.assert_close(shares.sum(1), torch.ones(2, dtype=torch.float64))


# --- the ROAR grid on the new architectures


def _fullgrad_roar(tmp_path, name: str, *overrides: str, model: str = "torchvision") -> dict:
    """A tiny ROAR run with fullgrad on synthetic 32 x 32 images, `model=<model> model.name=<name>` ->
    {fraction: test accuracy}."""
    cfg = compose_config(
        tmp_path, "dataset=synthetic", "dataset.datamodule.image_size=32", "dataset.datamodule.train_size=64",
        "dataset.datamodule.val_size=16", "dataset.datamodule.test_size=16", f"model={model}",
        f"model.name={name}", "method=[fullgrad]", "roar.fractions=[0.5]", "trainer.max_epochs=1",
        "logger=none", "roar.proceed_at_chance=true", *overrides,  # one epoch: the wiring, not accuracy
    )  # fmt: skip
    with open(experiment(cfg) / "results.csv") as f:
        return {
            float(r["fraction"]): float(r["test_acc"]) for r in csv.DictReader(f) if r["method"] == "fullgrad"
        }


def test_roar_runs_fullgrad_on_a_network_with_implicit_biases(tmp_path):
    accuracy = _fullgrad_roar(tmp_path, "mobilenet_v3_small")
    assert set(accuracy) == {0.0, 0.5} and all(0 <= a <= 1 for a in accuracy.values())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "overrides"),
    [("convnext_tiny", []), ("efficientnet_b0", []), ("swin_t", []), ("vit_b_16", ["model.image_size=32"])],
)
def test_roar_runs_fullgrad_on_the_modern_architectures(tmp_path, name, overrides):
    assert set(_fullgrad_roar(tmp_path, name, *overrides)) == {0.0, 0.5}
