"""`roar-report` over what it is given: a sweep killed before all its jobs finished (it reads the sweep's own
record of its jobs), and a scanned configuration whose logger is not one roar starts."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import WritesAFile, run_command, succeeded

# Two jobs: the sweep is killed once the first has written its results, while the second runs (or before
# it starts).
SWEEP = ["-m", "method=random", "roar.fractions=[0.3],[0.6]", "trainer.max_epochs=2", "logger=csv",
         "hydra.sweep.dir=sweep"]  # fmt: skip
# A job is named by what the sweep varies.
MISSING_JOB = "sweep job 1 (roar.fractions=[0.6])"


@pytest.fixture(scope="module")
def killed_sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("killed")
    env = {**os.environ, "WANDB_MODE": "offline"}
    sweep = subprocess.Popen(
        [str(Path(sys.executable).parent / "roar"), *SWEEP],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 600
    while not (root / "sweep" / "0" / "results.csv").exists():
        assert sweep.poll() is None and time.time() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.02)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    assert not (root / "sweep" / "1" / "results.csv").exists()
    return root


def test_a_partial_sweep_is_refused_naming_the_missing_job(killed_sweep, tmp_path):
    shutil.copytree(killed_sweep / "sweep", tmp_path / "sweep")
    done = run_command("roar-report", "sweep", cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("roar-report: error: 1 jobs have no results.csv: ") and MISSING_JOB in line, line
    assert "--allow-partial" in line
    assert not (tmp_path / "sweep" / "results.csv").exists()


def test_allow_partial_reports_the_finished_jobs_marked_partial(killed_sweep, tmp_path):
    shutil.copytree(killed_sweep / "sweep", tmp_path / "sweep")
    done = succeeded(run_command("roar-report", "sweep", "--allow-partial", cwd=tmp_path))
    assert MISSING_JOB in done.stderr and "partial report of" in done.stdout
    report = tmp_path / "sweep"
    assert (report / "summary.md").read_text().splitlines()[0].endswith("(partial: 1 jobs missing)")
    assert (report / "results.csv").read_text() == (report / "0" / "results.csv").read_text()
    (logged,) = report.glob("csv/*/hparams.yaml")  # the report's own logger run says so too
    hyperparameters = yaml.safe_load(logged.read_text())
    assert hyperparameters["partial"] is True and MISSING_JOB in hyperparameters["missing_jobs"][0]


@pytest.mark.slow
def test_the_sweep_rerun_to_completion_is_reported_whole(killed_sweep, tmp_path):
    shutil.copytree(killed_sweep, tmp_path, dirs_exist_ok=True)
    succeeded(run_command("roar", *SWEEP, cwd=tmp_path))
    done = succeeded(run_command("roar-report", "sweep", cwd=tmp_path))
    assert "report of 2 runs" in done.stdout and "partial" not in done.stdout + done.stderr
    assert "partial" not in (tmp_path / "sweep" / "summary.md").read_text()


def test_a_scanned_logger_target_that_is_not_a_logger_is_refused_and_never_run(killed_sweep, tmp_path):
    job = tmp_path / "received" / "0"
    shutil.copytree(killed_sweep / "sweep" / "0", job)
    payload, marker = tmp_path / "payload.pt", tmp_path / "code-was-run"
    payload.write_bytes(pickle.dumps(WritesAFile(marker)))
    config_file = job / ".hydra" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["logger"] = {"_target_": "torch.load", "f": str(payload), "weights_only": False}
    config_file.write_text(yaml.safe_dump(config))

    done = run_command("roar-report", "received", cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    expected = (
        "roar-report: error: received/0/.hydra/config.yaml: logger._target_ 'torch.load' is not a logger"
    )
    assert line.startswith(expected), line
    assert "pytorch_lightning.loggers.CSVLogger" in line and "roar.report.RoarWandbLogger" in line
    assert not marker.exists() and not (tmp_path / "received" / "results.csv").exists()
    # The payload is live: loading it as the file asked would have run it.
    pickle.loads(payload.read_bytes())
    assert marker.exists()


def test_a_scanned_per_image_file_that_would_run_code_is_refused_and_never_run(killed_sweep, tmp_path):
    job = tmp_path / "received" / "0"
    shutil.copytree(killed_sweep / "sweep" / "0", job)
    marker = tmp_path / "code-was-run"
    # Protocol 2, as torch.save writes: torch warns of any other before refusing it.
    (job / "per_image.pt").write_bytes(pickle.dumps(WritesAFile(marker), protocol=2))

    done = run_command("roar-report", "received", cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("roar-report: error: received/0/per_image.pt: not a per-image values file"), line
    assert not marker.exists() and not (tmp_path / "received" / "results.csv").exists()
    pickle.loads((job / "per_image.pt").read_bytes())  # live: loading it unchecked would have run it
    assert marker.exists()
