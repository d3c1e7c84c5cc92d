"""task=randomization: which layers each step re-initialises, the similarity measures against scipy and
their identities, the options and cache keys, and the task end to end on digits (sobel and random stay at
1, FullGrad's maps change)."""

import copy
import csv
import re

import matplotlib.image
import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from roar.cli.app import experiment
from roar.config import ConfigError, validate
from roar.models import SmallCNN
from roar.runtime.cache import spec_key
from roar.stages.training import build_classifier
from roar.tasks import common, randomization
from roar.tasks.explain import CELL_INCHES, DPI
from roar.tasks.randomization import (
    map_entropy,
    map_similarity,
    maps_spec,
    parameter_layers,
    randomized_models,
)
from tests.conftest import compose_config


def scrambled_cnn() -> SmallCNN:
    """A small CNN whose every parameter and batch-norm statistic is far from what a reset gives (a fresh
    batch-norm layer already holds its reset values), so that a re-initialised layer shows in every entry."""
    torch.manual_seed(0)
    net = SmallCNN(1, 10, (4, 8)).eval()
    with torch.no_grad():
        for value in net.state_dict().values():
            value.copy_(
                torch.randint_like(value, 3, 9) if value.dtype == torch.long else torch.randn_like(value) + 5
            )
    return net


def changed_layers(model: nn.Module, randomized: nn.Module) -> set[str]:
    """The layers with parameters whose state differs from `model`'s; each must differ in every entry."""
    before, after = model.state_dict(), randomized.state_dict()
    changed = set()
    for name, _ in parameter_layers(model):
        keys = [key for key in before if key.rpartition(".")[0] == name]
        differs = [not torch.equal(before[key], after[key]) for key in keys]
        if any(differs):
            assert all(differs), f"{name}: only some of {keys} were re-initialised"
            changed.add(name)
    return changed


def test_cascading_reinitializes_the_layers_from_the_logits_down_and_leaves_the_model_untouched():
    net = scrambled_cnn()
    kept = copy.deepcopy(net.state_dict())
    top_down = [name for name, _ in reversed(parameter_layers(net))]
    assert isinstance(net.get_submodule(top_down[0]), nn.Linear)  # the logits come first
    steps = list(randomized_models(net, "cascading", seed=0))
    assert [name for name, _ in steps] == top_down
    for step, (_, randomized) in enumerate(steps, start=1):
        assert changed_layers(net, randomized) == set(top_down[:step])
    assert all(torch.equal(kept[key], value) for key, value in net.state_dict().items())


def test_independent_randomizes_exactly_one_layer_with_the_weights_cascading_gives_it():
    net = scrambled_cnn()
    cascading = dict(randomized_models(net, "cascading", seed=3))
    for name, randomized in randomized_models(net, "independent", seed=3):
        assert changed_layers(net, randomized) == {name}
        assert all(
            torch.equal(value, cascading[name].get_submodule(name).state_dict()[key])
            for key, value in randomized.get_submodule(name).state_dict().items()
        )


def test_the_seed_decides_the_new_weights_and_the_global_generator_is_left_alone():
    net = scrambled_cnn()
    state = torch.random.get_rng_state()
    (_, first), (_, again), (_, other) = (next(randomized_models(net, seed=s)) for s in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), state)
    logits = parameter_layers(net)[-1][0]
    weights = [model.get_submodule(logits).weight for model in (first, again, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_an_unknown_order_and_a_layer_that_cannot_be_reset_are_refused():
    with pytest.raises(ValueError, match="unknown randomisation order 'sideways'"):
        next(randomized_models(scrambled_cnn(), "sideways"))

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

    with pytest.raises(ValueError, match=r"layer 1 \(Scaled\) has parameters but no reset_parameters"):
        parameter_layers(nn.Sequential(nn.Linear(2, 2), Scaled()))


@pytest.mark.parametrize("shape", [(5, 8, 8), (5, 3, 12, 10)])
def test_a_map_compared_with_itself_is_fully_similar(shape):
    maps = torch.randn(shape)
    similarity = map_similarity(maps, maps.clone())
    assert torch.equal(similarity["spearman"], torch.ones(5))
    assert similarity["ssim"] == pytest.approx(torch.ones(5), abs=1e-6)
    assert torch.equal(similarity["entropy_change"], torch.zeros(5))
    constant = map_similarity(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8))
    assert torch.equal(constant["spearman"], torch.ones(2)) and constant["ssim"] == pytest.approx(
        torch.ones(2)
    )


def test_the_similarity_measures_agree_with_scipy_and_ignore_sign_and_scale():
    torch.manual_seed(0)
    original = torch.randn(6, 8, 8)
    other = (original.abs() + torch.rand(6, 8, 8)).round()  # related, with many ties
    similarity = map_similarity(original, other)
    for i in range(6):
        expected = scipy.stats.spearmanr(original[i].abs().flatten(), other[i].flatten()).statistic
        assert similarity["spearman"][i].item() == pytest.approx(expected, abs=1e-5)
    # |map| is compared, and SSIM after scaling each map by its maximum: sign and scale do not count.
    flipped = map_similarity(original, -3 * original)
    assert flipped["spearman"] == pytest.approx(torch.ones(6)) and flipped["ssim"] == pytest.approx(
        torch.ones(6)
    )
    reversed_ranks = map_similarity(original.abs() + 1, 1 / (original.abs() + 1))
    assert reversed_ranks["spearman"] == pytest.approx(-torch.ones(6), abs=1e-5)


def test_map_entropy_is_that_of_the_histogram_scipy_computes():
    maps = torch.rand(4, 3, 16, 16) ** 3
    bins = round((3 * 16 * 16) ** 0.5)  # the square-root rule, inside its bounds here
    for entropy, values in zip(map_entropy(maps), maps.flatten(1).numpy()):
        counts, _ = np.histogram(values, bins=bins)
        assert entropy.item() == pytest.approx(scipy.stats.entropy(counts), rel=1e-5)
    assert torch.equal(map_entropy(torch.ones(2, 8, 8)), torch.zeros(2))  # one value: no uncertainty


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["task.order=sideways"], "task.order: 'sideways': input should be 'cascading' or 'independent'"),
        (["task.num_images=0"], "task.num_images: 0: input should be greater than or equal to 1"),
    ],
)
def test_bad_options_are_named_before_any_compute(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose_config(tmp_path, "task=randomization", *overrides))


def test_more_images_than_the_test_split_holds_stop_the_run_before_training(tmp_path):
    cfg = compose_config(tmp_path, "task=randomization", "task.num_images=100000", "logger=none")
    with pytest.raises(ConfigError, match=r"^task.num_images: 100000 exceeds the \d+ test images$"):
        experiment(cfg)
    assert not (tmp_path / "cache" / "train").exists()


@pytest.mark.slow  # a process of its own: about 20 s on a loaded machine
def test_an_unknown_order_on_the_command_line_is_one_line(run_roar, tmp_path):
    done = run_roar("task=randomization", "task.order=sideways", "logger=none", "hydra.run.dir=run")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "roar: error: task.order: 'sideways': input should be 'cascading' or 'independent'"
    ]
    assert not (tmp_path / "cache").exists()


def _key(cfg, layers=("13",), seed=0, method="fullgrad"):
    return spec_key(maps_spec(cfg, method, cfg.task.num_images, list(layers), seed))


@pytest.mark.parametrize(
    "override,changes",
    [
        ("task.num_images=7", True),
        ("method.fullgrad.rescale=channel", True),
        ("seed=1", True),  # the base model
        ("roar.signed=true", False),  # ranking for removal: not this task's maps
        ("roar.rank_by=element", False),
        ("roar.fill=zero", False),
        ("task.order=independent", False),  # the layers randomised say it
    ],
)
def test_the_maps_key_holds_what_changes_them(tmp_path, override, changes):
    default = compose_config(tmp_path, "task=randomization")
    other = compose_config(tmp_path, "task=randomization", override)
    assert (_key(default) != _key(other)) == changes


def test_the_maps_key_names_the_layers_and_seed_and_the_trained_maps_serve_every_seed(tmp_path):
    cfg = compose_config(tmp_path, "task=randomization")
    assert _key(cfg, ("13",), 0) != _key(cfg, ("13",), 1)
    assert _key(cfg, ("13",), 0) != _key(cfg, ("13", "9"), 0)
    assert _key(cfg, (), 0) == _key(cfg, (), 1)


def test_on_digits_sobel_and_random_stay_similar_and_fullgrad_does_not(tmp_path, monkeypatch):
    published = []

    def write_outputs(run, rows, out):
        published.extend(rows)
        common.write_outputs(run, rows, out)

    monkeypatch.setattr(randomization, "write_outputs", write_outputs)
    overrides = ["task=randomization", "trainer.max_epochs=2", "logger=none",
                 "method=[fullgrad,sobel,random]", "task.num_images=16"]  # fmt: skip
    cfg = compose_config(tmp_path, *overrides)
    run_dir = experiment(cfg)
    top_down = [name for name, _ in reversed(parameter_layers(build_classifier(cfg.model).net))]
    with open(run_dir / "randomization.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(randomization.COLUMNS)
    values = {(r["method"], int(r["step"])): {m: float(r[m]) for m in randomization.METRICS} for r in rows}
    assert {(r["method"], int(r["step"]), r["layer"]) for r in rows} == {
        (m, step, layer)
        for m in ("fullgrad", "sobel", "random")
        for step, layer in enumerate(["trained", *top_down])
    }
    for step in range(len(top_down) + 1):
        for control in ("sobel", "random"):  # maps that ignore the model: the same maps at every step
            assert values[(control, step)]["spearman"] == 1.0
            assert values[(control, step)]["ssim"] == pytest.approx(1.0, abs=1e-6)
            assert values[(control, step)]["entropy_change"] == 0.0
        if step > 0:
            assert values[("fullgrad", step)]["spearman"] < 1.0 and values[("fullgrad", step)]["ssim"] < 1.0
    # Fully randomised, FullGrad's maps keep less of their ranking than with the logits layer alone re-drawn.
    assert values[("fullgrad", len(top_down))]["spearman"] < values[("fullgrad", 1)]["spearman"]
    for row in published:  # each image's Spearman correlation travels with its row
        assert row["per_image"].shape == (16,)
        assert row["per_image"].mean().item() == pytest.approx(row["spearman"])
    assert "lower is better" in (run_dir / "summary.md").read_text()
    gallery = matplotlib.image.imread(run_dir / randomization.GALLERY)  # a row per step, a column per method
    assert gallery.shape[:2] == (round((len(top_down) + 1) * CELL_INCHES * DPI), round(4 * CELL_INCHES * DPI))
    assert (run_dir / randomization.CURVES).stat().st_size > 10_000

    # The other order reuses the base model, the trained model's maps and step 1 (the logits layer alone).
    again = experiment(
        compose_config(tmp_path, *overrides, "task.order=independent", f"paths.output_dir={tmp_path}/again")
    )
    with open(again / "stages.csv") as f:
        stages = [(s["stage"], s["status"]) for s in csv.DictReader(f)]
    reused = 1 + 3 * 2  # training; per method the trained model's maps and step 1
    assert stages.count(("train", "reused")) == 1
    assert stages.count(("randomized_saliency", "reused")) == reused - 1
    assert stages.count(("randomized_saliency", "computed")) == 3 * (len(top_down) - 1)
