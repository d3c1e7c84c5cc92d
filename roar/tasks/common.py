"""What every task does around its own grid: the run directory, stage cache and logger first, then
stages.csv and the report (`roar.report.publish`)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import WandbLogger

from roar import report
from roar.cache import StageCache
from roar.sweep import flat_config, in_multirun


@dataclass
class Run:
    dir: Path
    cache: StageCache
    logger: object | None
    # W&B: the seed runs each finished cell is shown in; none for a multirun's jobs (roar-report's run over
    # the sweep makes them, once, from all the jobs' rows).
    seed_curves: report.SeedCurves | None = None

    def record(self, row: dict) -> None:
        """A finished cell of the grid, shown in the dashboard now rather than when the grid is done."""
        if self.seed_curves is not None:
            self.seed_curves.add(row)


def open_run(cfg: DictConfig, out: report.Outputs | None = None) -> Run:
    """The run directory, the stage cache, and the experiment logger with the configuration (started before
    any compute: a logger that cannot start fails first, and a W&B run is in the dashboard while the grid
    trains). `out` describes the task's results, for the W&B seed runs of its curve."""
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = instantiate(cfg.logger) if cfg.get("logger") else None
    seed_curves = None
    if logger is not None:
        logger.log_hyperparams(flat_config(cfg))  # W&B: creates the run
        if isinstance(logger, WandbLogger) and out is not None and not in_multirun():
            seed_curves = report.SeedCurves(logger, out)
    return Run(run_dir, StageCache(Path(cfg.paths.cache_dir)), logger, seed_curves)


def write_outputs(run: Run, rows: list[dict], out: report.Outputs) -> None:
    """stages.csv, then the report `out` describes."""
    with open(run.dir / "stages.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["stage", "key", "status"])
        writer.writeheader()
        writer.writerows(run.cache.events)
    report.publish(rows, run.dir, run.logger, outputs=out, seed_curves=run.seed_curves)
