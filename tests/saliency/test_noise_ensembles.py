"""Noise ensembles over any method (`noise:` in a method config, Captum's NoiseTunnel): closed forms, seeds,
the shipped configs and the preset method=hooker, the cache key, and the one-line refusals."""

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from roar import saliency
from roar.config import ConfigError, method_names, validate
from roar.runtime.cache import spec_key
from roar.saliency import NoiseEnsemble
from roar.stages.specs import saliency_spec
from tests.conftest import compose_config
from tests.saliency.test_baselines import _batch, _model

TYPES = ["smoothgrad", "smoothgrad_sq", "vargrad"]
ENSEMBLES = [f"{base}_{suffix}" for base in ("integrated_gradients", "guided_backprop")
             for suffix in ("sg", "sg_sq", "var")]  # fmt: skip
# Small but real settings for the tests: a few noisy copies, a few path points.
CHEAP = [
    *(f"method.{name}.noise.n_samples=2" for name in ENSEMBLES),
    *(f"method.integrated_gradients{s}.n_steps=3" for s in ("", "_sg", "_sg_sq", "_var")),
    *(f"method.{name}.n_samples=2" for name in ("smoothgrad", "smoothgrad_sq", "vargrad")),
]
BASES = {
    "integrated_gradients": {"_target_": "roar.saliency.IntegratedGradients", "n_steps": 4},
    "guided_backprop": {"_target_": "captum.attr.GuidedBackprop"},
    "input_x_gradient": {"_target_": "captum.attr.InputXGradient"},
}


def _attributions(config: dict, model, images, targets, **params) -> torch.Tensor:
    method = saliency.create(config, model, **params).attribution
    return method.attribute(images.clone().requires_grad_(), target=targets).detach()


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("type", TYPES)
def test_without_noise_an_ensemble_is_its_method_combined_with_itself(base, type):
    """noise_level=0: every copy is the image, so the mean is the method's attribution, the mean square
    its square and the variance 0."""
    model, (images, targets) = _model(dtype=torch.float64), _batch(dtype=torch.float64)
    plain = _attributions(BASES[base], model, images, targets)
    noise = {"type": type, "n_samples": 4, "noise_level": 0.0, "seed": 0, "samples_per_pass": 3}
    ensemble = _attributions({**BASES[base], "noise": noise}, model, images, targets)
    expected = {"smoothgrad": plain, "smoothgrad_sq": plain.square(), "vargrad": torch.zeros_like(plain)}
    assert plain.abs().sum() > 0
    scale = plain.abs().max().item()
    torch.testing.assert_close(ensemble, expected[type], rtol=1e-12, atol=1e-12 * scale**2)


def _identity(model, inputs, targets):
    """An attribution that is the input itself: its ensembles are statistics of the noisy copies."""
    return inputs.detach().clone()


@pytest.mark.parametrize("type", TYPES)
def test_the_noise_is_a_fraction_of_each_images_range_drawn_copy_by_copy_from_the_seed(type):
    images, targets = _batch(n=3, dtype=torch.float64)
    images[1] *= 100  # another range, another sigma
    noise = {"type": type, "n_samples": 5, "noise_level": 0.2, "seed": 7, "samples_per_pass": 2}
    ensemble = NoiseEnsemble(saliency.FunctionAttribution(_identity, nn.Identity()), nn.Identity(), **noise)
    got = ensemble.attribute(images, target=targets)
    generator = torch.Generator().manual_seed(7)
    sigma = 0.2 * (images.flatten(1).amax(1) - images.flatten(1).amin(1)).view(-1, 1, 1, 1)
    copies = torch.stack([images + sigma * torch.randn(images.shape, generator=generator, dtype=images.dtype)
                          for _ in range(5)])  # fmt: skip
    expected = {"smoothgrad": copies.mean(0), "smoothgrad_sq": copies.square().mean(0),
                "vargrad": copies.var(0, unbiased=False)}[type]  # fmt: skip
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("name", ["integrated_gradients_var", "guided_backprop_sg"])
def test_a_seed_gives_the_same_maps_whatever_the_pass_size_and_leaves_the_global_rng_alone(name):
    model, (images, targets) = _model(dtype=torch.float64), _batch(dtype=torch.float64)
    config = saliency.named_config(name)
    if "n_steps" in config:
        config["n_steps"] = 3

    def maps(**noise):
        noise = {**config["noise"], "n_samples": 5, **noise}
        return saliency.create({**config, "noise": noise}, model).pixel_maps(images, targets)

    state = torch.get_rng_state()
    first = maps(seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(maps(seed=3), first)
    assert not torch.allclose(maps(seed=4), first)
    torch.testing.assert_close(maps(seed=3, samples_per_pass=5), first)
    torch.testing.assert_close(maps(seed=3, samples_per_pass=2), first)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("name", ENSEMBLES)
def test_the_noise_is_drawn_on_the_cpu_so_a_gpu_gives_the_cpus_maps(name):
    config = saliency.named_config(name)
    config["noise"]["n_samples"] = 3
    if "n_steps" in config:
        config["n_steps"] = 3
    model, (images, targets) = _model(dtype=torch.float64), _batch(dtype=torch.float64)
    on_cpu = saliency.create(config, model).pixel_maps(images, targets)
    on_gpu = saliency.create(config, model.cuda()).pixel_maps(images, targets)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu)


def test_a_one_image_batch_has_one_target_per_copy():
    model, (images, targets) = _model(), _batch(n=1)
    noise = {"type": "smoothgrad", "n_samples": 3, "noise_level": 0.1, "seed": 0}
    maps = saliency.create("integrated_gradients", model, n_steps=2, noise=noise).pixel_maps(images, targets)
    assert maps.shape == (1, 8, 8) and torch.isfinite(maps).all()


def test_the_oracle_takes_no_noise():
    with pytest.raises(ValueError, match="the oracle's maps are the dataset's ground truth"):
        saliency.create("oracle", _model(), noise={"type": "smoothgrad", "seed": 0})


def test_the_ensembles_and_method_hooker_compose_and_run_on_the_digits_model(tmp_path):
    cfg = compose_config(tmp_path, "experiment=digits", "method=hooker", "logger=none", *CHEAP)
    validate(cfg)
    bases = ["input_gradient", "integrated_gradients", "guided_backprop"]
    noisy = ["smoothgrad", "smoothgrad_sq", "vargrad", *ENSEMBLES]
    assert sorted(method_names(cfg)) == sorted([*bases, *noisy, "random"])
    assert {cfg.method[name].noise.type for name in ENSEMBLES} == set(TYPES)
    net = instantiate(cfg.model.net).eval()
    images, targets = torch.rand(3, 1, 8, 8), torch.tensor([0, 3, 9])
    for name in method_names(cfg):
        maps = saliency.create(cfg.method[name], net).pixel_maps(images, targets)
        assert maps.shape == (3, 8, 8) and torch.isfinite(maps).all() and maps.abs().sum() > 0, name


def test_the_ensembles_are_seeded_with_the_runs_seed_and_keyed_by_their_noise(tmp_path):
    def key(*overrides):
        cfg = compose_config(tmp_path, "method=guided_backprop_sg", *overrides)
        return spec_key(saliency_spec(cfg, "guided_backprop_sg"))

    cfg = compose_config(tmp_path, "method=[guided_backprop_sg,integrated_gradients_var]", "seed=5")
    assert [cfg.method[name].noise.seed for name in cfg.method] == [5, 5]
    default = key()
    changes = ["n_samples=3", "noise_level=0.3", "type=vargrad", "samples_per_pass=5"]
    for override in [*(f"method.guided_backprop_sg.noise.{change}" for change in changes),
                     "roar.saliency_batch_size=7"]:  # fmt: skip
        assert key(override) != default, override
    # A method without noise keeps its key: no batch size in it.
    plain = compose_config(tmp_path, "method=guided_backprop")
    assert "batch_size" not in saliency_spec(plain, "guided_backprop")


def test_noise_can_be_added_to_any_method_from_the_command_line(tmp_path):
    noise = "+method.gradcam.noise={type:smoothgrad_sq,n_samples:2,noise_level:0.1,seed:${seed}}"
    cfg = compose_config(tmp_path, "method=gradcam", "seed=3", noise)
    validate(cfg)
    assert dict(cfg.method.gradcam.noise) == {"type": "smoothgrad_sq", "n_samples": 2, "noise_level": 0.1,
                                              "seed": 3}  # fmt: skip
    assert isinstance(saliency.create(cfg.method.gradcam, _model(in_channels=1)).attribution, NoiseEnsemble)


@pytest.mark.parametrize(
    "override,message",
    [
        ("method.guided_backprop_sg.noise.type=smoothgrad2",
         r"method.guided_backprop_sg: noise: type must be one of \('smoothgrad', 'smoothgrad_sq', "
         r"'vargrad'\), got 'smoothgrad2'"),
        ("method.guided_backprop_sg.noise.n_samples=0",
         "method.guided_backprop_sg.noise.n_samples: 0: input should be greater than or equal to 1"),
        ("method.guided_backprop_sg.noise.noise_level=-0.1",
         r"method.guided_backprop_sg.noise.noise_level: -0.1: input should be greater than or equal to 0"),
        ("+method.guided_backprop_sg.noise.sigma=1", "method.guided_backprop_sg.noise.sigma: 1: extra input"),
        ("~method.guided_backprop_sg.noise.seed", "method.guided_backprop_sg.noise.seed: required"),
        ("+method.oracle.noise={type:vargrad,seed:0}", "method.oracle: noise: the oracle's maps are"),
    ],
)  # fmt: skip
def test_a_noise_that_cannot_work_is_refused_before_any_compute(tmp_path, override, message):
    methods = "method=[guided_backprop_sg,oracle]" if "oracle" in override else "method=guided_backprop_sg"
    with pytest.raises(ConfigError, match=message):
        validate(compose_config(tmp_path, methods, "dataset=synthetic", override))


def test_an_unknown_noise_type_stops_the_command_with_one_line(run_roar, tmp_path):
    done = run_roar(
        "method=integrated_gradients_sg", "method.integrated_gradients_sg.noise.type=smoothgrad2",
        "logger=none", "hydra.run.dir=run",
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "roar: error: method.integrated_gradients_sg: noise: type must be one of "
        "('smoothgrad', 'smoothgrad_sq', 'vargrad'), got 'smoothgrad2'"
    ]
    assert not (tmp_path / "cache").exists()
