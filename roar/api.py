"""roar as a library: `roar.run(overrides)` and `roar.compose(overrides)` take the command line's
overrides (`hydra.searchpath=...` included) and go through the same checks, cache and outputs."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from roar.cli.app import JOB_NAME, experiment
from roar.conf import CONFIG_DIR
from roar.config import check_group_choices, validate

# The table each task writes, in the order a run directory is searched for it (task=explain has none).
RESULT_TABLES = ("results.csv", "perturbation.csv", "leakage.csv")


@dataclass(frozen=True)
class RunResult:
    """What a run wrote: its directory, the rows of its results table (results.csv for task=roar) as dicts
    with numbers as numbers, and its summary (summary.md: the table and the ranking; "" if none)."""

    dir: Path
    rows: list[dict]
    summary: str


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_result(run_dir: Path) -> RunResult:
    """The RunResult of the run directory `run_dir`."""
    run_dir = Path(run_dir)
    rows = []
    table = next((run_dir / name for name in RESULT_TABLES if (run_dir / name).is_file()), None)
    if table is not None:
        with open(table, newline="") as f:
            rows = [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(f)]
    summary = run_dir / "summary.md"
    return RunResult(run_dir, rows, summary.read_text() if summary.is_file() else "")


def compose(overrides: list[str] = ()) -> DictConfig:
    """The configuration `roar <overrides>` would run with, checked as the command checks it (ConfigError,
    one line, on a value that cannot work). Interpolations resolve as in a run (`paths.output_dir` is the
    run directory Hydra would create)."""
    overrides = list(overrides)
    check_group_choices(overrides, CONFIG_DIR)
    with initialize_config_module("roar.conf", version_base="1.3", job_name=JOB_NAME):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    # What Hydra sets when it starts a job, so that ${hydra:...} resolves outside one.
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(Path(cfg.hydra.run.dir).resolve())
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    validate(cfg)
    return cfg


def run(overrides: list[str] = ()) -> RunResult:
    """Run roar with these overrides, as the `roar` command does (one job: no sweeps), and return what it
    wrote. A value that cannot work raises ConfigError before anything is computed."""
    overrides = list(overrides)
    check_group_choices(overrides, CONFIG_DIR)
    with initialize_config_module("roar.conf", version_base="1.3", job_name=JOB_NAME):
        # Hydra's own run: the run directory, .hydra/, app.log and the working directory as for the command;
        # the task's exception (a ConfigError included) is re-raised here.
        hydra = GlobalHydra.instance().hydra
        job = hydra.run(config_name="config", task_function=experiment, overrides=overrides)
    return read_result(job.return_value)
