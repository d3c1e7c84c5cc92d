"""Input that only the model, the methods or the filesystem can refuse: one `roar: error:` line, before any
training (issue 15, cases 7 and 11)."""

from __future__ import annotations

import pytest
import torch

from roar.errors import ConfigError
from roar.pipeline import check_model
from tests.conftest import compose_config


def _one_error_line(done) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("roar: error: "), line
    return line


def test_a_model_that_cannot_take_the_images_is_refused_before_training(run_roar, tmp_path):
    done = run_roar(
        "model=torchvision", "model.name=vit_b_16", "method=random", "logger=none", "hydra.run.dir=run"
    )
    line = _one_error_line(done)
    assert line.startswith("roar: error: model: vit_b_16 cannot take the 1x8x8 images of dataset=digits: ")
    assert "Expected 224 but got 8" in line  # what the model itself said
    assert not list(tmp_path.glob("cache/*/*/manifest.json")) and not list(tmp_path.glob("cache/*/*/work"))


def test_a_model_fullgrad_cannot_decompose_is_refused_before_training(run_roar, tmp_path):
    done = run_roar(
        "model=torchvision", "model.name=efficientnet_b0", "method=[random,fullgrad]", "logger=none",
        "hydra.run.dir=run",
    )  # fmt: skip
    line = _one_error_line(done)
    # FullGrad's own completeness check decides, and names what breaks it (efficientnet's SiLU).
    assert line.startswith("roar: error: method.fullgrad: cannot explain model efficientnet_b0 exactly: ")
    assert "SiLU (features.0.2)" in line
    assert not list(tmp_path.glob("cache/*/*/manifest.json")) and not list(tmp_path.glob("cache/*/*/work"))


def test_a_method_without_an_exactness_claim_runs_on_that_model(tmp_path):
    cfg = compose_config(
        tmp_path, "model=torchvision", "model.name=efficientnet_b0", "method=[random,gradcam]"
    )
    images, labels = torch.randn(2, 1, 8, 8), torch.tensor([0, 1])
    check_model(cfg, images, labels)


def test_fullgrad_on_a_decomposable_model_passes_and_leaves_the_random_state(tmp_path):
    methods = "method=[fullgrad,simple_fullgrad,smooth_fullgrad]"
    cfg = compose_config(tmp_path, "model=torchvision", "model.name=resnet18", methods)
    images, labels = torch.randn(2, 1, 8, 8), torch.tensor([0, 1])
    state = torch.get_rng_state()
    check_model(cfg, images, labels)
    assert torch.equal(torch.get_rng_state(), state)  # the base model's initialisation is not shifted


def test_a_model_with_the_wrong_number_of_outputs_is_refused(tmp_path):
    cfg = compose_config(tmp_path, "model.net.num_classes=3", "method=random")
    with pytest.raises(ConfigError, match=r"^model: SmallCNN gives outputs of shape \(2, 3\) for 2 images"):
        check_model(cfg, torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))
