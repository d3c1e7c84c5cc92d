"""task=explain: the gallery PNG of test images x every selected method, from the cached base model."""

import re

import matplotlib.image
import pytest
import torch
from hydra.utils import instantiate

from roar import saliency
from roar.cli.app import experiment
from roar.config import ConfigError
from roar.runtime.cache import StageCache, spec_key
from roar.stages import training_spec
from roar.stages.training import load_classifier
from roar.tasks.explain import CELL_INCHES, DPI, GALLERY, LOGIT_SHARES, explain_images
from tests import wandb_records
from tests.conftest import compose_config, succeeded

# Every method but the oracle, which needs dataset=synthetic's ground truth.
GALLERY_METHODS = [name for name in saliency.available() if name != "oracle"]
ALL_METHODS = f"method=[{','.join(GALLERY_METHODS)}]"
FAST = ["task=explain", "trainer.max_epochs=2"]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One stage cache for the module: the base model is trained once."""
    return f"paths.cache_dir={tmp_path_factory.mktemp('cache')}"


@pytest.mark.slow
def test_gallery_shows_every_method_and_reuses_the_base_model(tmp_path, shared_cache, run_roar):
    overrides = (
        *FAST,
        shared_cache,
        ALL_METHODS,
        "method.smooth_fullgrad.num_samples=3",
        "explain.num_images=3",
    )
    run_dir = experiment(compose_config(tmp_path, *overrides, "logger=none"))
    png = matplotlib.image.imread(run_dir / GALLERY)
    columns = 1 + len(GALLERY_METHODS)  # the image, then one column per method
    assert png.shape[:2] == (round(3 * CELL_INCHES * DPI), round(columns * CELL_INCHES * DPI))
    cell = round(CELL_INCHES * DPI)
    last_row = png[2 * cell : 3 * cell]
    columns_drawn = [last_row[:, j * cell : (j + 1) * cell, :3] for j in range(columns)]
    assert all(c.std() > 0.05 for c in columns_drawn)  # every cell holds a picture, not blank paper

    # Again from the command line, logged to an offline W&B run (in a process of its own: W&B's service
    # would otherwise outlive the test in this one).
    done = succeeded(run_roar(*overrides, "logger=wandb", "hydra.run.dir=again"))
    assert "cell 1/1 unmodified, seed 0: reused" in done.stdout
    again = tmp_path / "again"
    media = wandb_records.run_file(again).parent / "files" / "media" / "images"
    (logged,) = media.glob("saliency_gallery_*.png")
    assert logged.read_bytes() == (again / GALLERY).read_bytes()
    assert wandb_records.config(wandb_records.run_file(again))["explain.num_images"] == 3


def test_gallery_maps_are_the_pipeline_maps_of_the_first_test_images(tmp_path, shared_cache):
    overrides = (
        *FAST,
        shared_cache,
        "logger=none",
        "method=[fullgrad,simple_fullgrad]",
        "explain.num_images=5",
    )
    cfg = compose_config(tmp_path, *overrides)
    experiment(cfg)
    datamodule = instantiate(cfg.dataset.datamodule)
    base = StageCache(cfg.paths.cache_dir).load("train", spec_key(training_spec(cfg, cfg.seed, None)))
    net = load_classifier(cfg.model, base).net
    images, labels, predicted, maps = explain_images(cfg, net, datamodule, torch.device("cpu"))
    test = datamodule.splits["test"]
    assert torch.equal(images, test.images[:5]) and torch.equal(labels, test.labels[:5])
    assert list(maps) == ["fullgrad", "simple_fullgrad"]
    expected = saliency.create("fullgrad", net).pixel_maps(datamodule.normalize(images), labels)
    torch.testing.assert_close(maps["fullgrad"], expected)
    assert maps["simple_fullgrad"].shape == (5, 8, 8)
    assert not torch.allclose(maps["simple_fullgrad"], expected)


def test_logit_shares_beside_the_gallery(tmp_path, shared_cache):
    overrides = ("logger=none", "method=[fullgrad]", "explain.num_images=2", "explain.logit_shares=true")
    cfg = compose_config(tmp_path, *FAST, shared_cache, *overrides)
    run_dir = experiment(cfg)
    assert (run_dir / GALLERY).exists()
    png = matplotlib.image.imread(run_dir / LOGIT_SHARES)
    assert png.shape[0] == round(2 * 2.2 * DPI)  # one chart per image
    base = StageCache(cfg.paths.cache_dir).load("train", spec_key(training_spec(cfg, cfg.seed, None)))
    net, datamodule = load_classifier(cfg.model, base).net, instantiate(cfg.dataset.datamodule)
    test = datamodule.splits["test"]
    terms = saliency.full_gradient_terms(net, datamodule.normalize(test.images[:2]), test.labels[:2])
    names, shares = terms.shares()
    assert names[0] == "input" and len(names) > 3  # the input, then the layers that carry a bias
    torch.testing.assert_close(
        shares.sum(1), torch.ones(2), rtol=1e-4, atol=1e-4
    )  # complete: they add up to f


@pytest.mark.parametrize(
    "override,message",
    [
        ("explain.num_images=0", "explain.num_images: 0: input should be greater than or equal to 1"),
        ("explain.num_images=100000", "explain.num_images: 100000 exceeds the 360 test images"),
        ("explain.target=random", "explain.target: 'random': input should be 'label' or 'predicted'"),
        ("explain.logit_shares=maybe", "explain.logit_shares: 'maybe': input should be a valid boolean"),
    ],
)
def test_bad_gallery_options_are_refused_before_training(tmp_path, override, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        experiment(compose_config(tmp_path, "task=explain", override))
    assert not (tmp_path / "cache").exists()


def test_a_bad_gallery_option_is_one_line_on_the_command_line(run_roar):
    done = run_roar("task=explain", "explain.num_images=-2", "logger=none", "hydra.run.dir=run")
    assert done.returncode == 2
    message = "roar: error: explain.num_images: -2: input should be greater than or equal to 1"
    assert done.stderr.strip().splitlines() == [message]
