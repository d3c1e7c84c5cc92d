"""The evaluation options as configuration: validated before any compute, and each one in the cache keys
of exactly the stages it changes."""

import csv
import re

import pytest
import torch
from omegaconf import open_dict

from roar import saliency
from roar.cli.app import experiment
from roar.conf import CONFIG_DIR
from roar.config import ConfigError, check_group_choices, validate
from roar.models import SmallCNN
from roar.removal import ranking_reduction, removal_mask
from roar.runtime.cache import spec_key
from roar.stages import removal_spec, saliency_spec, training_spec
from tests.conftest import compose_config


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["roar.fill=grey"], "roar.fill: 'grey': input should be 'mean', 'zero', 'blur' or 'road'"),
        (["roar.mode=keep"], "roar.mode: 'keep': input should be 'roar' or 'kar'"),
        (["roar.rank_by=channel"], "roar.rank_by: 'channel': input should be 'pixel' or 'element'"),
        (["roar.signed=maybe"], "roar.signed: 'maybe': input should be a valid boolean"),
        (
            ["task=perturbation", "task.fractions=[0.0,0.1]"],
            "task.fractions[0]: 0.0: input should be greater than 0",
        ),
        (
            ["task=perturbation", "task.fill=grey"],
            "task.fill: 'grey': input should be 'mean', 'zero', 'blur' or 'road'",
        ),
        (
            ["task=perturbation", "task.order=up"],
            "task.order: 'up': give lerf or morf, or both as [lerf,morf]",
        ),
        (
            ["task=perturbation", "task.order=[morf,morf]"],
            "task.order: ['morf', 'morf']: give lerf or morf, or both as [lerf,morf]",
        ),
        # task.order means one thing to each task that has it.
        (
            ["task=perturbation", "task.order=cascading"],
            "task.order: 'cascading': give lerf or morf, or both as [lerf,morf]",
        ),
        (
            ["task=randomization", "task.order=morf"],
            "task.order: 'morf': input should be 'cascading' or 'independent'",
        ),
        (
            ["task=perturbation", "task.mode=both"],
            "task.mode: 'both': input should be 'deletion' or 'insertion'",
        ),
        (
            ["task=perturbation", "task.metric=auc"],
            "task.metric: 'auc': input should be 'logit_change', 'probability' or 'accuracy'",
        ),
        (
            ["method.fullgrad.blur_sigma=-1.0"],
            "method.fullgrad.blur_sigma: -1.0: input should be greater than or equal to 0",
        ),
        (
            ["method=[oracle,random]"],
            "method: oracle returns the true informative pixels and needs a dataset",
        ),
        (["roar.fractions=[0.0]"], "roar.fractions: give at least one fraction above 0"),
        (["seeds=[]"], "seeds: []: list should have at least 1 item"),
        (["seeds=3"], "seeds: 3: input should be a valid list"),
        # Checked with the rest of the configuration, before any data is loaded.
        (
            ["task=explain", "explain.target=foo"],
            "explain.target: 'foo': input should be 'label' or 'predicted'",
        ),
        (
            ["task=explain", "explain.num_images=0"],
            "explain.num_images: 0: input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_evaluation_options_are_named(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose_config(tmp_path, *overrides))


def test_the_oracle_is_accepted_on_the_synthetic_dataset(tmp_path):
    validate(compose_config(tmp_path, "method=[oracle,random]", "dataset=synthetic"))


def test_the_gallery_shows_the_oracle_on_the_synthetic_dataset(tmp_path):
    cfg = compose_config(
        tmp_path, "task=explain", "dataset=synthetic", "method=[oracle,random]", "trainer.max_epochs=1",
        "explain.num_images=2", "logger=none",
    )  # fmt: skip
    assert (experiment(cfg) / "gallery.png").stat().st_size > 0


def test_group_sweeps_by_pattern_pass_the_early_check_and_a_typo_is_one_line():
    check_group_choices(["method=glob(*)"], CONFIG_DIR)
    with pytest.raises(ConfigError, match=r"^cannot parse the overrides: "):
        check_group_choices(["method=[fullgrad"], CONFIG_DIR)


def test_bad_option_on_the_command_line_is_one_line_before_any_compute(run_roar, tmp_path):
    done = run_roar("method=oracle", "logger=none", "hydra.run.dir=run")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "roar: error: method: oracle returns the true informative pixels and needs a dataset that knows "
        "them (dataset=synthetic); dataset=digits does not"
    ]
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "override,message",
    [
        ("task.order=up", "task.order: 'up': give lerf or morf, or both as [lerf,morf]"),
        (
            "task.metric=auc",
            "task.metric: 'auc': input should be 'logit_change', 'probability' or 'accuracy'",
        ),
    ],
)
def test_an_unknown_perturbation_option_stops_the_cli_with_one_line(run_roar, tmp_path, override, message):
    done = run_roar("task=perturbation", override, "logger=none", "hydra.run.dir=run")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"roar: error: {message}"]
    assert not (tmp_path / "cache").exists()


def _keys(cfg):
    return {
        "base": spec_key(training_spec(cfg, cfg.seed, None)),
        "saliency": spec_key(saliency_spec(cfg, "fullgrad")),
        "cell": spec_key(training_spec(cfg, cfg.seed, removal_spec(cfg, "fullgrad", 0.5))),
    }


@pytest.mark.parametrize(
    "override,changed",
    [
        ("roar.fill=road", {"cell"}),
        ("roar.fill=zero", {"cell"}),
        ("roar.mode=kar", {"cell"}),
        ("roar.rank_by=element", {"saliency", "cell"}),
        ("roar.signed=true", {"saliency", "cell"}),
        ("roar.saliency_batch_size=7", set()),
        ("method.fullgrad.blur_sigma=1.5", {"saliency", "cell"}),
        ("method.fullgrad.blur_sigma=0", set()),
    ],
)
def test_each_option_changes_the_keys_of_exactly_the_stages_it_affects(tmp_path, override, changed):
    default, other = _keys(compose_config(tmp_path)), _keys(compose_config(tmp_path, override))
    assert {stage for stage in default if default[stage] != other[stage]} == changed


def test_unblurred_maps_keep_the_key_of_a_config_without_blur_sigma(tmp_path):
    with_key = compose_config(tmp_path)
    without = compose_config(tmp_path)
    with open_dict(without):
        del without.method.fullgrad.blur_sigma
    assert with_key.method.fullgrad.blur_sigma == 0
    assert spec_key(saliency_spec(with_key, "fullgrad")) == spec_key(saliency_spec(without, "fullgrad"))


def test_the_saliency_batch_size_is_in_the_key_of_methods_that_draw_noise(tmp_path):
    noisy = [compose_config(tmp_path, "method=smoothgrad", f"roar.saliency_batch_size={b}") for b in (256, 7)]
    assert spec_key(saliency_spec(noisy[0], "smoothgrad")) != spec_key(saliency_spec(noisy[1], "smoothgrad"))


def test_a_road_run_reuses_the_base_model_and_maps_of_a_mean_run(tmp_path):
    common = ("method=random", "roar.fractions=[0.5]", "trainer.max_epochs=2", "logger=none")
    experiment(compose_config(tmp_path, *common, f"paths.output_dir={tmp_path}/mean"))
    road = experiment(
        compose_config(tmp_path, *common, "roar.fill=road", f"paths.output_dir={tmp_path}/road")
    )
    with open(road / "stages.csv") as f:
        status = [(s["stage"], s["status"]) for s in csv.DictReader(f)]
    assert status == [("train", "reused"), *[("saliency", "reused")] * 3, ("train", "computed")]
    assert "fill: road" in (road / "summary.md").read_text()


def test_element_ranking_gives_per_channel_maps_and_masks():
    torch.manual_seed(0)
    model = SmallCNN(in_channels=3, num_classes=4, widths=(4, 4)).eval()
    images, targets = torch.randn(5, 3, 8, 8), torch.arange(5) % 4
    maps = saliency.create("fullgrad", model, reduce=ranking_reduction("element", False)).pixel_maps(
        images, targets
    )
    assert maps.shape == (5, 3, 8, 8)
    assert torch.equal(maps[:, 0], maps[:, 2])  # a one-channel map gives every channel the same value
    mask = removal_mask(maps, 0.25)
    assert (mask.flatten(1).sum(1) == 48).all()  # round(0.25 * 3 * 8 * 8) channel values per image


def test_a_kar_run_puts_the_unmodified_model_at_100_percent_kept_and_ranks_higher_first(tmp_path):
    run_dir = experiment(
        compose_config(tmp_path, "roar.mode=kar", "method=random", "roar.fractions=[0.3]",
                       "trainer.max_epochs=1", "logger=none")
    )  # fmt: skip
    with open(run_dir / "results.csv") as f:
        assert sorted(float(r["fraction"]) for r in csv.DictReader(f)) == [0.3, 1.0]
    summary = (run_dir / "summary.md").read_text()
    assert summary.startswith("# KAR on digits") and "higher is better" in summary
