"""roar as a user installs it: the wheel built from this checkout, installed into a fresh environment, runs a
tiny grid, `roar-report` and `roar.run(...)` from a directory that has nothing of the checkout in it (the
configuration groups travel inside the package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

UV = next((u for u in (REPO / ".uv" / "bin" / "uv", shutil.which("uv")) if u and Path(u).exists()), None)
GRID = ["experiment=digits", "method=[random]", "roar.fractions=[0.5]", "trainer.max_epochs=2",
        "roar.proceed_at_chance=true"]  # fmt: skip


def uv(*args: str, cwd: Path = REPO) -> str:
    done = subprocess.run([str(UV), *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """roar's wheel built from this checkout (once for the module: the fast test and the installed ones)."""
    if UV is None:
        pytest.skip("no uv (make install bootstraps it into .uv/)")
    out_dir = tmp_path_factory.mktemp("dist")
    uv("build", "--wheel", "--offline", "--out-dir", str(out_dir), "--quiet")
    (built,) = out_dir.glob("roar-*.whl")
    return built


def test_the_wheel_holds_every_config_file_and_the_hydra_plugin(wheel):
    # The fast half of this module (seconds): what the installed tests below (marked slow, about a minute
    # with their fresh environment) run from.
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {
        f"roar/conf/{p.relative_to(REPO / 'roar' / 'conf')}" for p in (REPO / "roar" / "conf").rglob("*.yaml")
    }
    assert configs and configs <= names, sorted(configs - names)
    assert "roar/conf/__init__.py" in names
    assert any(name.startswith("hydra_plugins/") for name in names)


# Building the wheel and a fresh environment for it takes about a minute: CI runs these with the slow tests.
@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheel) -> Path:
    """A fresh virtual environment holding the locked dependencies (from uv's cache, hard-linked: no
    download) and roar's wheel, not the checkout: its bin/ directory."""
    root = tmp_path_factory.mktemp("wheel")
    lock = root / "pylock.toml"
    uv(
        "export",
        "--frozen",
        "--no-dev",
        "--no-emit-project",
        "--format",
        "pylock.toml",
        "--quiet",
        "-o",
        str(lock),
    )
    venv = root / "venv"
    uv("venv", "--quiet", "--python", sys._base_executable, str(venv))
    python = str(venv / "bin" / "python")
    os.environ.setdefault("UV_LINK_MODE", "hardlink")
    uv("pip", "install", "--quiet", "--offline", "--python", python, "-r", str(lock))
    uv("pip", "install", "--quiet", "--offline", "--no-deps", "--python", python, str(wheel))
    return venv / "bin"


def run_installed(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "PATH": f"{bin_dir}:{env['PATH']}"}
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip


@pytest.mark.slow
def test_the_installed_package_is_the_wheel_with_its_configs(installed, tmp_path):
    code = "import roar; print(roar.__file__, roar.CONFIG_DIR)"
    done = run_installed(installed, "python", "-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    module, config_dir = done.stdout.split()
    assert "site-packages" in module and not Path(module).is_relative_to(REPO)
    assert (Path(config_dir) / "config.yaml").is_file() and (
        Path(config_dir) / "method" / "fullgrad.yaml"
    ).is_file()


@pytest.mark.slow
def test_roar_and_roar_report_run_from_an_unrelated_directory(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_installed(installed, "roar", *GRID, "hydra.run.dir=run", cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (elsewhere / "run" / "results.csv").is_file() and (elsewhere / "cache").is_dir()
    report = run_installed(installed, "roar-report", "run", "--out", "report", cwd=elsewhere)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "report of 1 runs" in report.stdout and (elsewhere / "report" / "summary.md").is_file()


@pytest.mark.slow
def test_roar_run_as_a_library_from_an_unrelated_directory(installed, tmp_path):
    code = (
        "import roar; r = roar.run(" + repr([*GRID, "logger=none", "hydra.run.dir=run"]) + "); "
        "print(sorted({row['method'] for row in r.rows}), r.dir.name)"
    )
    done = run_installed(installed, "python", "-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['random'] run"
