"""What every task does around its own grid: the run directory, stage cache and logger first, then
stages.csv and the report (`roar.report.publish`)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from roar import report
from roar.cache import StageCache
from roar.files import atomic_write
from roar.sweep import flat_config


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


def write_outputs(cfg: DictConfig, run: Run, rows: list[dict], out: report.Outputs) -> None:
    """stages.csv, the configuration to the logger, then the report `out` describes."""
    with atomic_write(run.dir / "stages.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["stage", "key", "status"])
        writer.writeheader()
        writer.writerows(run.cache.events)
    if run.logger is not None:
        run.logger.log_hyperparams(flat_config(cfg))
    report.publish(rows, run.dir, run.logger, outputs=out)
