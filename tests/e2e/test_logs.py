"""What a run leaves for a person to read: its log in a file (as SLURM writes it), stages.csv, and the
reason it stopped."""

import csv
import logging
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from roar.data.datamodule import SPLITS
from roar.runtime.console import KNOWN_HARMLESS, GridProgress
from tests.conftest import run_command

ROAR = Path(sys.executable).parent / "roar"


def _stages(run_dir: Path) -> list[dict]:
    with open(run_dir / "stages.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_the_demo_grid_logged_to_a_file_is_small_has_no_repeated_warning_and_shows_progress(tmp_path):
    # SLURM's srun on the PATH makes Lightning warn at every Trainer (tests/e2e/test_slurm.py brings up a real
    # cluster; an executable of that name is all Lightning looks for).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    env = {**os.environ, "WANDB_MODE": "offline", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("WANDB_SILENT", None)  # W&B's own lines belong to a real log
    log_file = tmp_path / "slurm-1234.out"
    with open(log_file, "w") as out:  # stdout and stderr into one file, as sbatch does: no terminal
        done = subprocess.run(
            [str(ROAR), "experiment=digits", "trainer.max_epochs=2", "hydra.run.dir=run"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=1800,
        )  # fmt: skip
    text = log_file.read_text()
    assert done.returncode == 0, text[-3000:]

    assert len(text.encode()) < 50_000
    assert "\r" not in text  # no progress bars redrawn in place
    lines = text.splitlines()
    warned = Counter(line for line in lines if re.search("warn", line, re.IGNORECASE))
    assert all(n == 1 for n in warned.values()), warned
    for pattern, _ in KNOWN_HARMLESS:
        assert not any(re.match(pattern, line) for line in lines), pattern
    assert "anonymous setting" not in text
    assert "GPU available" not in text  # Lightning's per-fit INFO lines

    # One progress line per training: 6 methods x 5 fractions + the unmodified model, with the time left.
    progress = [line for line in lines if "[roar.progress]" in line]
    assert len(progress) == 31
    assert re.search(
        r"cell 1/31 unmodified, seed 0: computed in [\d.]+ s, val acc 0\.\d+, test acc", progress[0]
    )
    assert re.search(r"cell 12/31 \w+ \d+% removed, seed 0: computed in .*\| ETA \d", progress[11])
    assert progress[-1].endswith("| grid done")

    stages = _stages(tmp_path / "run")
    assert [s["stage"] for s in stages].count("train") == 31
    cell = next(s for s in stages if s["name"] == "fullgrad 30% removed, seed 0")
    assert (cell["method"], float(cell["fraction"]), cell["seed"], cell["fill"]) == (
        "fullgrad",
        0.3,
        "0",
        "mean",
    )
    assert cell["status"] == "computed" and float(cell["seconds"]) > 0
    # The saliency stage: one line per split, for all the shards of its removal codes.
    codes = [s for s in stages if s["stage"] == "saliency" and s["method"] == "integrated_gradients"]
    assert [s["name"] for s in codes] == [
        f"integrated_gradients removal codes ({split}) (1 shard, 1 computed here)" for split in SPLITS
    ]
    assert all(s["status"] == "computed" and float(s["seconds"]) > 0 for s in codes)


def test_a_base_model_at_chance_stops_the_run_with_one_line_unless_asked_to_proceed(tmp_path):
    # Learning rate 1e-12 (the schema refuses 0): the trained model is its random initialisation.
    overrides = ["model.optimizer.lr=1e-12", "trainer.max_epochs=1", "method=random", "roar.fractions=[0.5]",
                 "logger=none", "hydra.run.dir=run"]  # fmt: skip
    done = run_command("roar", *overrides, cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert re.fullmatch(
        r"roar: error: the unmodified model's test accuracy 0\.\d+ is at or near chance \(0\.\d+, the most "
        r"frequent class\): .* roar\.proceed_at_chance=true",
        line,
    )
    # The failed run's directory says why; no grid was run beyond the base model.
    run_dir = tmp_path / "run"
    assert (run_dir / "failed.txt").read_text() == line + "\n"
    assert not (run_dir / "results.csv").exists()
    assert len(list((tmp_path / "cache" / "train").glob("*/manifest.json"))) == 1

    done = run_command("roar", *overrides, "roar.proceed_at_chance=true", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "at or near chance" in done.stdout and "proceeding" in done.stdout
    assert not (run_dir / "failed.txt").exists()
    assert [s["status"] for s in _stages(run_dir) if s["stage"] == "train"] == ["reused", "computed"]


def test_a_run_that_crashes_leaves_the_traceback_in_its_directory(tmp_path):
    # A value no check before the run knows to refuse: AdamW raises when the first fit builds it.
    done = run_command(
        "roar", "+model.optimizer.betas=[2.0,0.999]", "logger=none", "hydra.run.dir=run", cwd=tmp_path
    )
    assert done.returncode != 0
    failed = (tmp_path / "run" / "failed.txt").read_text()
    assert failed.startswith("Traceback") and "Invalid beta parameter at index 0: 2.0" in failed


def test_the_time_left_counts_only_the_cells_that_were_computed(caplog):
    progress = GridProgress(4)
    accuracies = {"val_acc": 0.9, "test_acc": 0.8}
    with caplog.at_level(logging.INFO, logger="roar.progress"):
        progress.cell("a", {"status": "reused", "seconds": 0.0}, accuracies)
        time.sleep(0.5)  # a computed cell: 0.5 s since the last one
        progress.cell("b", {"status": "computed", "seconds": 0.5}, accuracies)
        progress.cell("c", {"status": "reused", "seconds": 0.0}, accuracies)
        progress.cell("d", {"status": "resumed", "seconds": 0.0}, accuracies)
    first, second, third, last = caplog.messages
    assert first.startswith("cell 1/4 a: reused, val acc 0.900, test acc 0.800 | ETA unknown")
    # Two cells left at the mean time of the one computed cell; the reused one did not lower it.
    assert re.fullmatch(r"cell 2/4 b: computed in 0\.5 s, .* \| ETA (\d\.\d) s", second)
    assert 1.0 <= float(re.search(r"ETA (\d\.\d) s", second)[1]) < 1.5
    assert 0.5 <= float(re.search(r"ETA (\d\.\d) s", third)[1]) < 0.75
    assert last.endswith("| grid done")
