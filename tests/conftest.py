"""Shared helpers: compose the real configuration in-process, and run the real `roar` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Tests train tiny models: one thread each is the fastest, and several test processes sharing the cores do
# not spin against each other (set before torch is first imported; subprocesses inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from roar.conf import CONFIG_DIR
from roar.config.resolvers import register_resolvers
from roar.runtime.console import silence_known_warnings

REPO = Path(__file__).resolve().parent.parent
# A small, fast grid used by the end-to-end tests.
TINY = ["roar.fractions=[0.3,0.6]", "trainer.max_epochs=4", "method=[fullgrad,random]"]


def compose_config(tmp_path: Path, *overrides: str) -> DictConfig:
    """The configuration `roar` would run with, its outputs and cache under tmp_path."""
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/run", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def run_command(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run an installed console script (`roar`, `roar-report`) with W&B offline; returns its outcome."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    executable = Path(sys.executable).parent / command
    return subprocess.run(
        [str(executable), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def succeeded(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(autouse=True)
def _known_warnings_silenced():
    """As a run has them (roar.runtime.console): pytest restores its own warning filters around every test."""
    silence_known_warnings()


@pytest.fixture
def run_roar(tmp_path):
    """Run the installed `roar` command; returns the CompletedProcess."""

    def run(*overrides: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess:
        return run_command("roar", *overrides, cwd=cwd)

    return run


class WritesAFile:
    """A pickle that, when loaded without weights_only, creates the file `marker`: code run by loading (what
    the tests of roar-report's scanned files check is never run)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


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


@pytest.fixture
def one_thread():
    """torch on one thread for the test (tests that compute on tiny tensors, where a second thread only
    adds synchronisation), restored after."""
    import torch  # here: the module sets OMP_NUM_THREADS before anything imports torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
