"""What every task does around its own grid: the run directory and stage cache, then the outputs (the
CSV, the curve, stages.csv, the experiment logger, the summary)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from roar import report
from roar.cache import StageCache
from roar.summary import write_summary


@dataclass(frozen=True)
class Outputs:
    """Where a task's rows go and how they are drawn and ranked."""

    csv: str
    curve: str
    title: str
    value: str = "test_acc"
    columns: tuple[str, ...] = report.COLUMNS
    xlabel: str = "pixels removed (% of each image, most salient first)"
    ylabel: str = "test accuracy after retraining"
    lower_is_better: bool = True
    reference: float | None = 0.0  # the fraction at which every method shares the unmodified model
    chance: float | None = None
    logx: bool = False
    steps_per_unit: int = 100


@dataclass
class Run:
    dir: Path
    cache: StageCache
    logger: object | None


def open_run(cfg: DictConfig) -> Run:
    """The run directory, the stage cache, and the experiment logger (created before any compute, so
    that a logger that cannot start fails first)."""
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = instantiate(cfg.logger) if cfg.get("logger") else None
    return Run(run_dir, StageCache(Path(cfg.paths.cache_dir)), logger)


def write_outputs(cfg: DictConfig, run: Run, rows: list[dict], out: Outputs) -> None:
    """The CSV, the curve, stages.csv, the logger (if any), summary.md/.csv; prints the tables."""
    report.write_csv(rows, run.dir / out.csv, out.columns)
    curve = run.dir / out.curve
    style = {
        "value": out.value,
        "xlabel": out.xlabel,
        "ylabel": out.ylabel,
        "chance": out.chance,
        "logx": out.logx,
    }
    report.plot_curve(rows, curve, out.title, **style)
    with open(run.dir / "stages.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["stage", "key", "status"])
        writer.writeheader()
        writer.writerows(run.cache.events)
    if run.logger is not None:
        run.logger.log_hyperparams(cfg)
        report.log_results(run.logger, rows, curve, out.value, out.columns, out.steps_per_unit)
        report.close_logger(run.logger)
    summary = write_summary(rows, run.dir, out.title, out.lower_is_better, out.value, out.reference)
    print("\n" + report.summary_table(rows, out.value) + "\n\n" + summary)
