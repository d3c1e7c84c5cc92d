"""Captum's attribution methods and zennit's LRP by name, on roar's small CNN and CIFAR ResNet-18."""

import csv

import captum.attr
import pytest
import torch
from captum._utils.models.linear_model import SkLearnRidge
from torch import nn

from roar import saliency
from roar.cli.app import experiment
from roar.models import SmallCNN, resnet18_cifar
from roar.saliency.perturbation import patch_mask, superpixel_mask
from roar.saliency.reference import DeepLift, max_unpool_allowed, untangled
from tests.conftest import compose_config

METHODS = ["deeplift", "deeplift_shap", "gradient_shap", "deconvolution", "guided_gradcam", "occlusion",
           "feature_ablation", "shapley_value_sampling", "lime", "kernel_shap", "lrp"]  # fmt: skip
# Small but real settings: the tests check the methods, not their convergence.
FAST = {
    "deeplift_shap": {"n_references": 2},
    "gradient_shap": {"n_samples": 2},
    "shapley_value_sampling": {"n_samples": 1, "patch": 0.25},
    "lime": {"n_samples": 12, "segments": 9},
    "kernel_shap": {"n_samples": 12, "features": "patch", "patch": 0.25},
    "feature_ablation": {"features": "superpixel", "segments": 9},
}


def _randomised(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


MODELS = {
    "small_cnn": (lambda: _randomised(SmallCNN(3, 10, widths=(8, 8))), 8),
    "resnet18_cifar": (lambda: _randomised(resnet18_cifar(3, 10)), 32),
}


def _state(model: nn.Module) -> tuple:
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [(name, type(m), m.training) for name, m in model.named_modules()],
        [(p.requires_grad, p.grad) for p in model.parameters()],
        [len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules()],
    )


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("name", METHODS)
def test_method_by_name_gives_finite_maps_and_leaves_the_model_as_it_was(name, model_name):
    build, size = MODELS[model_name]
    model = build()
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([1, 7])
    before = _state(model)
    maps = saliency.create(name, model, **FAST.get(name, {})).pixel_maps(images, targets)
    assert maps.shape == (2, size, size) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0
    after = _state(model)
    assert before[1:] == after[1:]
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])


def _patches(images: torch.Tensor) -> torch.Tensor:
    """The 16 patches of 2 x 2 pixels of 8 x 8 images, numbered row by row: patch: 0.25, built by hand."""
    rows, columns = torch.meshgrid(torch.arange(8) // 2, torch.arange(8) // 2, indexing="ij")
    return (rows * 4 + columns).expand(len(images), 1, 8, 8).contiguous()


def _seeded(call, seed: int = 0):
    """`call()` with torch's global RNG seeded for it, restored afterwards (Captum samples from it)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return call()


def _unpool_allowed(call):
    with max_unpool_allowed():
        return call()


PATCHES = {"features": "patch", "patch": 0.25}
# Each method by name (with these parameters) against Captum's own class called directly on the same model,
# inputs and targets: the same attribution, reduced as ROAR ranks it (|.| summed over channels).
DIRECT = {
    # under the deterministic algorithms an earlier fit may have left on, Captum's max-pool rule would raise
    "deeplift": ({}, lambda m, x, t: _unpool_allowed(lambda: captum.attr.DeepLift(m).attribute(x, target=t))),
    "deconvolution": ({}, lambda m, x, t: captum.attr.Deconvolution(m).attribute(x, target=t)),
    # the default layer of the small CNN: its last ReLU ("6"), the last module with a 2 x 2 output
    "guided_gradcam": ({}, lambda m, x, t: captum.attr.GuidedGradCam(m, m[6]).attribute(
        x, target=t, interpolate_mode="bilinear")),
    # window and stride 0.125 of 8 pixels: one pixel, every channel
    "occlusion": ({}, lambda m, x, t: captum.attr.Occlusion(m).attribute(
        x, target=t, sliding_window_shapes=(3, 1, 1), strides=(3, 1, 1))),
    "feature_ablation": (PATCHES, lambda m, x, t: captum.attr.FeatureAblation(m).attribute(
        x, target=t, feature_mask=_patches(x))),
    "shapley_value_sampling": ({**PATCHES, "n_samples": 2, "seed": 3}, lambda m, x, t: _seeded(
        lambda: captum.attr.ShapleyValueSampling(m).attribute(x, target=t, feature_mask=_patches(x),
                                                              n_samples=2), seed=3)),
    "lime": ({**PATCHES, "n_samples": 12, "seed": 3}, lambda m, x, t: _seeded(
        lambda: captum.attr.Lime(m, interpretable_model=SkLearnRidge(alpha=1.0)).attribute(
            x, target=t, feature_mask=_patches(x), n_samples=12), seed=3)),
    "kernel_shap": ({**PATCHES, "n_samples": 12, "seed": 3}, lambda m, x, t: _seeded(
        lambda: captum.attr.KernelShap(m).attribute(x, target=t, feature_mask=_patches(x), n_samples=12),
        seed=3)),
}  # fmt: skip


@pytest.mark.parametrize("name", DIRECT)
def test_method_by_name_equals_captums_own_call(name):
    model = MODELS["small_cnn"][0]()
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([1, 7])
    params, direct = DIRECT[name]
    maps = saliency.create(name, model, **params).pixel_maps(images, targets)
    expected = direct(model, images.clone().requires_grad_(), targets).detach().abs().sum(1)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(maps, expected)


def test_gradient_shap_equals_captums_on_a_linear_model():
    # Both draw references and interpolation points at random, from different generators; on a linear model
    # every point has the same gradient, so with the zero reference (no noise) both are exactly w_t * x
    # whatever they draw.
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).eval()
    images, targets = torch.randn(2, 3, 8, 8), torch.tensor([1, 7])
    maps = saliency.create("gradient_shap", model, n_samples=3, n_references=1, noise_level=0.0).pixel_maps(
        images, targets
    )
    expected = captum.attr.GradientShap(model).attribute(
        images.clone().requires_grad_(), torch.zeros(1, 3, 8, 8), target=targets, n_samples=3
    )
    torch.testing.assert_close(maps, expected.detach().abs().sum(1))
    weights = model[1].weight[targets].detach().view(2, 3, 8, 8)
    torch.testing.assert_close(maps, (images * weights).abs().sum(1))


def test_deeplift_untangles_reused_activations_and_sums_to_the_logit_difference():
    model = MODELS["resnet18_cifar"][0]()
    # Captum's DeepLift refuses a model that calls one ReLU module twice (every torchvision ResNet block).
    images, targets = torch.randn(2, 3, 32, 32), torch.tensor([3, 4])
    with pytest.raises(RuntimeError, match="DeepLift"):
        captum.attr.DeepLift(model).attribute(images.clone().requires_grad_(), target=targets)
    attributions = DeepLift(model).attribute(images.clone().requires_grad_(), target=targets)
    difference = (model(images) - model(torch.zeros_like(images))).gather(1, targets.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(attributions.sum((1, 2, 3)), difference.detach(), rtol=1e-4, atol=1e-5)
    # The copy holds one ReLU per call; the model keeps its one shared module.
    assert sum(isinstance(m, nn.ReLU) for m in untangled(model, images).modules()) > sum(
        isinstance(m, nn.ReLU) for m in model.modules()
    )


def test_deeplift_runs_under_deterministic_algorithms_and_leaves_the_setting_as_it_was():
    # A deterministic Lightning fit turns them on; Captum's max-pool rule calls max_unpool, flagged otherwise.
    model, images = MODELS["small_cnn"][0](), torch.randn(2, 3, 8, 8)
    torch.use_deterministic_algorithms(True)
    try:
        saliency.create("deeplift", model).pixel_maps(images, torch.tensor([0, 1]))
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_deeplift_shap_equals_captums_with_the_same_references():
    model = MODELS["small_cnn"][0]()
    images, targets = torch.randn(3, 3, 8, 8), torch.tensor([0, 1, 2])
    ours = saliency.DeepLiftShap(model, n_references=4, seed=3)
    references = saliency.DeepLiftShap(model, n_references=4, seed=3).references(images)
    expected = _unpool_allowed(lambda: captum.attr.DeepLiftShap(model).attribute(
        images.clone().requires_grad_(), references, target=targets
    ))  # fmt: skip
    torch.testing.assert_close(ours.attribute(images.clone().requires_grad_(), targets), expected.detach())


def test_feature_masks_cover_every_pixel_with_consecutive_ids():
    images = torch.rand(2, 3, 32, 32)
    patches = patch_mask(images, 0.125)
    assert patches.shape == (2, 1, 32, 32) and patches.unique().tolist() == list(range(64))
    assert (patches[0, 0, :4, :4] == 0).all() and (patches[0, 0, 4:8, :4] == 8).all()
    segments = superpixel_mask(images, 16)
    for mask in segments:
        ids = mask.unique()
        assert ids.tolist() == list(range(len(ids))) and 2 <= len(ids) <= 16


def test_seeded_perturbation_methods_are_reproducible_and_leave_the_global_rng_alone():
    model = MODELS["small_cnn"][0]()
    images, targets = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    state = torch.get_rng_state()
    a = saliency.create("lime", model, n_samples=12, seed=4).pixel_maps(images, targets)
    b = saliency.create("lime", model, n_samples=12, seed=4).pixel_maps(images, targets)
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)


def test_lrp_on_a_linear_model_is_input_times_weight():
    # epsilon_plus applies the epsilon rule to dense layers: on a linear model (no bias) the relevance of
    # each input is its value times its weight for the target, which sums to the target logit.
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3, bias=False)).eval()
    images, targets = torch.randn(2, 2, 4, 4), torch.tensor([0, 2])
    relevance = saliency.LRP(model, composite="epsilon_plus", canonizers=[]).attribute(images, targets)
    expected = images * model[1].weight[targets].view(2, 2, 4, 4).detach()
    torch.testing.assert_close(relevance, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("occlusion", {"window": 0}, "window and stride"),
        ("feature_ablation", {"features": "pixels"}, "features must be one of patch, superpixel"),
        ("lrp", {"composite": "nope"}, "composite must be one of"),
        ("lrp", {"canonizers": ["Nope"]}, "no zennit canonizer 'Nope'"),
        ("gradient_shap", {"n_samples": 0}, "n_samples must be at least 1"),
    ],
)
def test_bad_parameters_fail_when_the_method_is_built(name, params, message):
    with pytest.raises(ValueError, match=message):
        saliency.check_params({**saliency.named_config(name), **params})


@pytest.mark.slow  # 12 trainings: about 45 s of CPU time
def test_every_method_runs_the_roar_grid(tmp_path):
    cheap = [f"method.{name}.{key}={value}" for name, params in FAST.items() for key, value in params.items()]
    cfg = compose_config(tmp_path, f"method=[{','.join(METHODS)}]", "roar.fractions=[0.5]",
                         "trainer.max_epochs=1", "logger=none", *cheap)  # fmt: skip
    with open(experiment(cfg) / "results.csv") as f:
        cells = {(row["method"], float(row["fraction"])) for row in csv.DictReader(f)}
    assert cells == {(m, f) for m in METHODS for f in (0.0, 0.5)}
