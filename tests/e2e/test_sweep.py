"""Sweeps: Hydra multirun jobs over one shared stage cache, `roar-report` over them, W&B, crash and rerun."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from tests import wandb_records
from tests.conftest import run_command, succeeded

# 2 methods x 2 fractions x 2 retraining seeds: 8 jobs, over one base model.
GRID = ["method=fullgrad,random", "roar.fractions=[0.3],[0.6]", "seeds=[0],[1]"]
# The same grid as one run.
SINGLE = ["method=[fullgrad,random]", "roar.fractions=[0.3,0.6]", "seeds=[0,1]"]
# Three epochs: a fit killed after its first still has two to resume.
COMMON = ["trainer.max_epochs=3"]


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """The grid as a multirun, logged to W&B, then `roar-report` over its directory."""
    root = tmp_path_factory.mktemp("sweep")
    succeeded(run_command("roar", "-m", *GRID, *COMMON, "hydra.sweep.dir=sweep", cwd=root))
    succeeded(run_command("roar-report", "sweep", cwd=root))
    return root / "sweep"


def test_every_job_gets_its_own_run_dir_over_one_shared_cache(sweep):
    jobs = sorted(sweep.glob("[0-9]*"), key=lambda d: int(d.name))
    assert len(jobs) == 8
    cells = set()
    for job in jobs:
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        rows = [(r["method"], float(r["fraction"]), int(r["seed"])) for r in _rows(job / "results.csv")]
        (method,) = {m for m, _, _ in rows}
        assert f"method={method}" in overrides
        assert {f for _, f, _ in rows} - {0.0} == {0.3 if "[0.3]" in overrides else 0.6}
        cells |= set(rows)
    assert cells == {(m, f, s) for m in ("fullgrad", "random") for f in (0.0, 0.3, 0.6) for s in (0, 1)}
    # One cache, beside the sweep: the base model was trained by the first job and reused by the others.
    assert sorted(p.name for p in sweep.parent.iterdir()) == ["cache", "sweep"]
    stages = [s for job in jobs for s in _rows(job / "stages.csv")]
    base = stages[0]["key"]
    assert [s["status"] for s in stages if s["key"] == base] == ["computed"] + ["reused"] * 7


def test_roar_report_over_a_multirun_equals_a_single_run_of_the_same_grid(sweep, tmp_path):
    # The single run computes everything afresh in its own cache: equal rows mean equal computations.
    succeeded(run_command("roar", *SINGLE, *COMMON, "logger=none", "hydra.run.dir=single", cwd=tmp_path))
    single = tmp_path / "single"
    assert (sweep / "results.csv").read_text() == (single / "results.csv").read_text()
    assert len(_rows(sweep / "results.csv")) == 12
    assert (sweep / "summary.md").read_text() == (single / "summary.md").read_text()
    assert (sweep / "roar_curve.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_sweep_killed_mid_way_and_rerun_finishes_only_the_missing_cells_with_the_same_csv(sweep, tmp_path):
    command = [str(Path(sys.executable).parent / "roar"), "-m", *GRID, *COMMON, "logger=none",
               "hydra.sweep.dir=killed"]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline"}
    job = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    cache = tmp_path / "cache"
    deadline = time.time() + 600
    # Once the first job is done, kill the sweep while a later job is mid-fit (it has a last.ckpt).
    while not (
        (tmp_path / "killed" / "0" / "results.csv").exists()
        and list(cache.glob("train/*/work/checkpoints/last.ckpt"))
    ):
        assert job.poll() is None and time.time() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.02)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    finished = {p.parent.name for p in cache.glob("train/*/manifest.json")}
    (interrupted,) = {p.parents[2].name for p in cache.glob("train/*/work/checkpoints/last.ckpt")}
    assert interrupted not in finished

    rerun = succeeded(
        subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    )
    assert "resuming from" in rerun.stdout + rerun.stderr
    stages = [s for job_dir in (tmp_path / "killed").glob("[0-9]*") for s in _rows(job_dir / "stages.csv")]
    assert {s["status"] for s in stages if s["key"] in finished} == {"reused"}  # nothing done twice
    resumed = [s["status"] for s in stages if s["key"] == interrupted]  # by its job, reused by later ones
    assert resumed.count("resumed") == 1 and set(resumed) <= {"resumed", "reused"}
    succeeded(run_command("roar-report", "killed", cwd=tmp_path))
    assert (tmp_path / "killed" / "results.csv").read_text() == (sweep / "results.csv").read_text()


def test_roar_report_refuses_jobs_of_different_configurations_in_one_line(sweep, tmp_path):
    shutil.copytree(sweep / "0", tmp_path / "other" / "0")
    config = tmp_path / "other" / "0" / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("max_epochs: 3", "max_epochs: 5"))
    done = run_command("roar-report", str(sweep), str(tmp_path / "other"), "--out", "report", cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("roar-report: error: ") and "differ in trainer.max_epochs (3 vs 5)" in line
    assert not (tmp_path / "report").exists()


def test_roar_report_logs_the_saliency_galleries_it_finds(sweep, tmp_path):
    for job in sweep.glob("[0-9]*"):  # the jobs, without the report made over them
        shutil.copytree(job, tmp_path / "sweep" / job.name, ignore=shutil.ignore_patterns("wandb"))
    figure, axes = plt.subplots(1, 2, figsize=(3, 2))  # stands for task=explain's gallery of maps
    for ax, image in zip(axes, (np.eye(8), np.tri(8))):
        ax.imshow(image)
    figure.savefig(tmp_path / "sweep" / "3" / "gallery.png")
    succeeded(run_command("roar-report", "sweep", cwd=tmp_path))
    media = wandb_records.run_file(tmp_path / "sweep").parent / "files" / "media" / "images"
    (logged,) = media.glob("saliency_gallery_*.png")
    assert logged.read_bytes() == (tmp_path / "sweep" / "3" / "gallery.png").read_bytes()
    assert (tmp_path / "sweep" / "results.csv").read_text() == (sweep / "results.csv").read_text()


def test_a_slurm_time_limit_that_cannot_outlast_the_requeue_signal_is_refused_before_submitting(tmp_path):
    done = run_command(
        "roar",
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=120",
        "method=random,fullgrad",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("roar: error: hydra.launcher.timeout_min: 2 min does not outlast")
    assert not (tmp_path / "cache").exists() and not list(tmp_path.glob("multirun/*/.submitit"))
