"""Crashes, interrupts and corrupted files, through the real `roar` command: nothing lost, nothing trusted
that should not be."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from roar.cli.app import experiment
from roar.data.datamodule import SPLITS
from roar.runtime.cache import MANIFEST, StageCache, spec_key
from roar.stages import removal_spec, training_spec
from roar.stages.saliency import split_spec
from tests.conftest import compose_config, succeeded

# A small grid: the base model, one method's maps, one retrained cell.
SMALL = ["method=random", "roar.fractions=[0.5]", "trainer.max_epochs=1", "logger=none"]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
ROAR = str(Path(sys.executable).parent / "roar")


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _stages(run_dir: Path, cfg) -> dict[str, str]:
    """Each stage's status in the run's stages.csv, by a readable name (`codes train`: the method's removal
    codes of the training images)."""
    names = {
        spec_key(training_spec(cfg, 0, None)): "base",
        **{spec_key(split_spec(cfg, "random", split, "codes")): f"codes {split}" for split in SPLITS},
        spec_key(training_spec(cfg, 0, removal_spec(cfg, "random", 0.5))): "cell",
    }
    return {names[s["key"]]: s["status"] for s in _rows(run_dir / "stages.csv")}


def _shard_dir(cache: StageCache, cfg, split: str) -> Path:
    """The directory of the first shard of the random method's removal codes of `split`."""
    (manifest,) = [m for m in (cache.root / "saliency").glob(f"*/{MANIFEST}")
                   if json.loads(m.read_text())["spec"] | {"rows": 0, "shard": 0}
                   == {**split_spec(cfg, "random", split, "codes"), "rows": 0, "shard": 0}]  # fmt: skip
    return manifest.parent


# Starts `roar` with Hydra's clock stopped at one second, as for two runs started in the same second.
SAME_SECOND = """
import datetime, sys
import hydra.core.utils

class Stopped(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2026, 1, 2, 3, 4, 5)

hydra.core.utils.datetime = Stopped
from roar.cli.app import main
sys.argv = ["roar", *sys.argv[1:]]
main()
"""


def test_two_runs_started_in_the_same_second_get_their_own_run_directories(tmp_path):
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", SAME_SECOND, *SMALL, f"method={method}"],
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for method in ("random", "sobel")
    ]
    outcomes = [job.communicate(timeout=900) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], [err[-2000:] for _, err in outcomes]
    run_dirs = sorted((tmp_path / "outputs").iterdir())
    assert [d.name for d in run_dirs] == ["2026-01-02_03-04-05", "2026-01-02_03-04-05_1"]
    printed = {out.strip().splitlines()[-1].removeprefix("run directory: ") for out, _ in outcomes}
    assert printed == {str(d) for d in run_dirs}
    methods = [{row["method"] for row in _rows(d / "results.csv")} for d in run_dirs]
    assert sorted(map(sorted, methods)) == [["random"], ["sobel"]]  # each run's rows are its own


def test_a_corrupted_or_swapped_cache_is_recomputed_to_the_same_results_with_one_warning_each(
    tmp_path, caplog
):
    overrides = [*SMALL, "roar.fractions=[0.3,0.6]"]
    first = experiment(compose_config(tmp_path, *overrides, f"paths.output_dir={tmp_path}/first"))
    cfg = compose_config(tmp_path, *overrides, f"paths.output_dir={tmp_path}/second")
    cache = StageCache(tmp_path / "cache")
    base = cache.directory("train", spec_key(training_spec(cfg, 0, None)))
    maps = _shard_dir(cache, cfg, "train")
    cell_30, cell_60 = (
        cache.directory("train", spec_key(training_spec(cfg, 0, removal_spec(cfg, "random", fraction))))
        for fraction in (0.3, 0.6)
    )
    (base / MANIFEST).write_bytes(os.urandom(300))
    (maps / MANIFEST).write_text("[]")
    for name in ("artifact.pt", MANIFEST):  # the 30 % cell's model and numbers, under the 60 % cell's key
        shutil.copy(cell_30 / name, cell_60 / name)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="roar.runtime.cache"):
        second = experiment(cfg)
    assert (second / "results.csv").read_bytes() == (first / "results.csv").read_bytes()
    statuses = {s["key"]: s["status"] for s in _rows(second / "stages.csv")}
    assert {statuses[d.name] for d in (base, cell_60)} == {"computed"}
    assert statuses[cell_30.name] == "reused"
    # The codes were recomputed where their manifest was garbled: the training images' (the base model
    # was retrained, so every split's codes have the key they had: only that one shard was missing).
    assert statuses[spec_key(split_spec(cfg, "random", "train", "codes"))] == "computed"
    warnings = [r.getMessage() for r in caplog.records if r.name == "roar.runtime.cache"]
    assert len(warnings) == 3, warnings
    for directory in (base, maps, cell_60):
        (warning,) = [w for w in warnings if directory.name in w]
        assert warning.endswith("; recomputing")
    assert "another configuration" in next(w for w in warnings if cell_60.name in w)


def test_stages_csv_says_computed_when_no_last_ckpt_was_there_to_resume_from(tmp_path):
    cfg = compose_config(tmp_path, *SMALL)
    base = StageCache(tmp_path / "cache").directory("train", spec_key(training_spec(cfg, 0, None)))
    # What a job killed between the best checkpoint's write and the first last.ckpt could leave.
    (base / "work" / "checkpoints").mkdir(parents=True)
    (base / "work" / "checkpoints" / "epoch=0-step=12.ckpt").write_bytes(b"not resumable")
    run_dir = experiment(cfg)
    codes = {f"codes {split}": "computed" for split in SPLITS}
    assert _stages(run_dir, cfg) == {"base": "computed", **codes, "cell": "computed"}


def test_ctrl_c_mid_fit_says_what_was_kept_and_the_rerun_resumes_from_the_last_epoch(tmp_path, caplog):
    # A learning rate too small to change any prediction: validation accuracy never improves after the
    # first epoch, so last.ckpt must be written for every epoch, not only at a new best.
    overrides = [*SMALL, "trainer.max_epochs=6", "model.optimizer.lr=1e-12", "roar.proceed_at_chance=true"]
    cfg = compose_config(tmp_path, *overrides)
    last = (
        StageCache(tmp_path / "cache").directory("train", spec_key(training_spec(cfg, 0, None)))
        / "work" / "checkpoints" / "last.ckpt"
    )  # fmt: skip
    job = subprocess.Popen(
        [ROAR, *overrides, "hydra.run.dir=interrupted"],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 600
    while not (last.exists() and torch.load(last, weights_only=True)["epoch"] >= 2):
        assert job.poll() is None and time.time() < deadline, "the fit ended before it could be interrupted"
        time.sleep(0.05)
    job.send_signal(signal.SIGINT)
    _, stderr = job.communicate(timeout=120)

    assert job.returncode == 130
    assert "Traceback" not in stderr
    (message,) = [line for line in stderr.splitlines() if line.startswith("roar: interrupted")]
    epochs = torch.load(last, weights_only=True)["epoch"] + 1
    assert epochs >= 3  # the epochs finished before Ctrl-C, all kept
    assert f"unmodified, seed 0: {last} holds epoch {epochs} of 6" in message
    assert str(tmp_path / "cache") in message and "Run the same command again to resume" in message

    with caplog.at_level(logging.INFO, logger="roar.stages.training"):
        resumed = experiment(cfg)
    assert f"resuming from {last}" in caplog.text
    codes = {f"codes {split}": "computed" for split in SPLITS}
    assert _stages(resumed, cfg) == {"base": "resumed", **codes, "cell": "computed"}


# The chaos run: two methods (one of them FullGrad), one fraction, three epochs; every stage kind is in it.
CHAOS = ["method=[fullgrad,random]", "roar.fractions=[0.5]", "trainer.max_epochs=3", "logger=none"]
KILLS = 10


def _computing_since(cache: Path, pid: int) -> bool:
    """Whether process `pid` holds a stage's lock, i.e. has got past its start-up into computing."""
    for owner in cache.glob("*/*/owner.json"):
        try:
            if json.loads(owner.read_text())["pid"] == pid:
                return True
        except (FileNotFoundError, ValueError):  # just released
            continue
    return False


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[bytes, float]:
    """results.csv of the chaos grid run without interruption, and how long its computing took."""
    root = tmp_path_factory.mktemp("uninterrupted")
    job = subprocess.Popen([ROAR, *CHAOS, "hydra.run.dir=run"], cwd=root, env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    while not _computing_since(root / "cache", job.pid):
        assert job.poll() is None, "the uninterrupted run ended before computing anything"
        time.sleep(0.02)
    started = time.time()
    assert job.wait(timeout=900) == 0
    return (root / "run" / "results.csv").read_bytes(), time.time() - started


@pytest.fixture
def tmpfs(tmp_path):
    """A fresh tmpfs mount: a filesystem other than $TMPDIR's."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def _every_file_in_the_cache_is_whole(cache: Path) -> None:
    """What a kill may leave: no checkpoint that does not load, no stored artifact that is not valid."""
    for checkpoint in cache.glob("train/*/work/checkpoints/*.ckpt"):
        torch.load(checkpoint, map_location="cpu", weights_only=True)  # raises if cut short
    stages = StageCache(cache)
    for manifest in cache.glob("*/*/" + MANIFEST):
        stage, key = manifest.parent.parent.name, manifest.parent.name
        # A directory of files (shards: the store, removal codes) records a checksum per file.
        load = stages.load_files if "files" in json.loads(manifest.read_text()) else stages.load
        assert load(stage, key) is not None, manifest


@pytest.mark.slow
@pytest.mark.parametrize("cache_on", ["the filesystem of $TMPDIR", "a tmpfs"])
def test_a_run_killed_at_10_points_and_rerun_each_time_ends_with_the_uninterrupted_results(
    cache_on, uninterrupted, tmp_path, request
):
    reference, computing_time = uninterrupted
    cache = (request.getfixturevalue("tmpfs") if cache_on == "a tmpfs" else tmp_path) / "cache"
    tmpdir = tmp_path / "tmpdir"  # $TMPDIR of every attempt, to see what it leaves there
    tmpdir.mkdir()
    env = {**ENV, "TMPDIR": str(tmpdir)}
    command = [ROAR, *CHAOS, f"paths.cache_dir={cache}"]
    # Each attempt computes for about 1/11 of the run, then is killed: the kills fall at 10 points spread
    # over the run (each attempt resumes where the previous one was killed). On a machine whose load
    # changes, an attempt can get further than 1/11 and finish the run before its kill: that attempt must
    # have ended well, and the run counts the kills it got, at least half of them.
    kills = 0
    for attempt in range(KILLS):
        job = subprocess.Popen([*command, f"hydra.run.dir=attempt-{attempt}"], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            # Generous: on a machine shared with a dozen busy processes, a start-up took over 10 minutes.
            deadline = time.time() + 1800
            while not _computing_since(cache, job.pid) and job.poll() is None:
                assert time.time() < deadline, f"attempt {attempt} did not start computing within 30 minutes"
                time.sleep(0.02)
            if job.poll() is None:
                time.sleep(computing_time / (KILLS + 1))
            finished = job.poll() is not None
            assert not finished or job.returncode == 0, f"attempt {attempt} failed: exit {job.returncode}"
        finally:  # the kill, also where an assertion failed: no attempt outlives the test
            job.send_signal(signal.SIGKILL)
            job.wait()
        assert not list(tmpdir.iterdir()), f"attempt {attempt} left files in $TMPDIR"
        _every_file_in_the_cache_is_whole(cache)
        if finished:
            break
        kills += 1
    assert kills >= KILLS // 2, f"only {kills} attempts were killed before the run finished"

    succeeded(subprocess.run([*command, "hydra.run.dir=final"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=1800))  # fmt: skip
    assert (tmp_path / "final" / "results.csv").read_bytes() == reference
    assert not list(cache.rglob("*.tmp")) and not list(cache.glob("*/*/work"))
    assert not list(tmpdir.iterdir())
