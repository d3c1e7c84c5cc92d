"""Input that only the model, the methods or the filesystem can refuse: one `roar: error:` line, before any
training (issue 15, cases 7 and 11)."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from roar.cli.app import experiment
from roar.errors import ConfigError
from roar.stages import check_model
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


class GeluInForward(nn.Module):
    """A network that calls a non-linear function in its own forward(), outside any module: FullGrad has no
    unit to give that call's implicit bias to, so it cannot decompose it exactly."""

    def __init__(self, in_channels: int, num_classes: int, **_):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(F.gelu(self.conv(x)).mean((2, 3)))


def test_a_model_fullgrad_cannot_decompose_is_refused_before_training(tmp_path):
    cfg = compose_config(
        tmp_path, "model.net._target_=tests.config.test_input_checks.GeluInForward",
        "method=[random,fullgrad]", "logger=none",
    )  # fmt: skip
    with pytest.raises(ConfigError) as refused:
        experiment(cfg)
    # FullGrad's own completeness check decides, and names where it breaks.
    message = str(refused.value)
    assert message.startswith("method.fullgrad: cannot explain model GeluInForward exactly: ")
    assert "\n" not in message and "GeluInForward" in message.split("exactly: ", 1)[1]
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


# A tiny run: the base model, one method's maps, one retrained cell.
TINY_RUN = ["method=random", "roar.fractions=[0.5]", "trainer.max_epochs=1", "logger=none"]


@pytest.fixture
def tmpfs(tmp_path):
    """A function mounting a tmpfs at tmp_path/<name> with mount options (root only; skipped otherwise),
    unmounted after the test."""
    mounted = []

    def mount(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (root in a container allowed to mount is needed): "
                        f"{done.stderr.strip()}")  # fmt: skip
        mounted.append(point)
        return point

    if os.geteuid() != 0:
        pytest.skip("mounting a read-only or full filesystem needs root")
    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", str(point)], check=True)


def test_a_read_only_cache_is_refused_before_any_data_loads(run_roar, tmp_path, tmpfs):
    cache = tmpfs("cache", "ro,size=1m")
    line = _one_error_line(run_roar(*TINY_RUN, f"paths.cache_dir={cache}", "hydra.run.dir=run"))
    assert line == f"roar: error: paths.cache_dir: cannot write to {cache}: Read-only file system"
    assert not (tmp_path / "run" / "stages.csv").exists()


def test_a_read_only_run_directory_is_one_line(run_roar, tmp_path, tmpfs):
    read_only = tmpfs("outputs", "ro,size=1m")
    line = _one_error_line(run_roar(*TINY_RUN, f"hydra.run.dir={read_only}/run"))
    assert line.startswith(f"roar: error: cannot write {read_only}/run") and "Read-only file system" in line
    assert not (tmp_path / "cache").exists()


def test_a_disk_full_after_the_compute_keeps_the_results_for_the_rerun(run_roar, tmp_path, tmpfs):
    # Room for .hydra/, app.log, stages.csv and results.csv (a 4 KiB page each), not for the curve.
    run_dir = tmpfs("small", "size=28k") / "run"
    done = run_roar(*TINY_RUN, f"hydra.run.dir={run_dir}")
    # After the compute its progress bars are on stderr too; the failure is its last line, not a traceback.
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("roar: error: cannot write") and "No space left on device" in line
    assert "free space and rerun the same command" in line
    assert not (run_dir / "roar_curve.png").exists() or (run_dir / "roar_curve.png").stat().st_size < 30_000
    subprocess.run(["mount", "-o", "remount,size=10m", str(run_dir.parent)], check=True)  # space freed
    done = run_roar(*TINY_RUN, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    with open(run_dir / "stages.csv") as f:  # every result computed before the disk filled was kept
        assert {row["status"] for row in csv.DictReader(f)} == {"reused"}
    assert (run_dir / "roar_curve.png").stat().st_size > 10_000
