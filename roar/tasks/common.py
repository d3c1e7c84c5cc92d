"""What every task does around its own grid: the run directory, stage cache and logger first, the base
model (checked to have learned something), then stages.csv and the report (`roar.report.publish`)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import WandbLogger

from roar import report
from roar.data import TensorDataModule
from roar.data.arrays import shard_bounds, shard_rows
from roar.data.datamodule import unit_range
from roar.errors import ConfigError
from roar.report.naming import flat_config, in_multirun
from roar.runtime.cache import StageCache
from roar.runtime.console import GridProgress
from roar.runtime.distributed import job_ranks
from roar.runtime.files import atomic_write
from roar.stages import check_methods, train_stage

log = logging.getLogger(__name__)

# stages.csv: what each stage is (name, method, fraction, seed, fill; blank where one does not apply), then
# its cache key, whether it was computed, resumed or reused, and how long it took.
STAGE_COLUMNS = ("stage", "name", "method", "fraction", "seed", "fill", "status", "seconds", "key")
# A base model whose test accuracy is below chance + this share of the way from chance to 1 learned
# (next to) nothing: 0.19 on ten balanced classes.
NEAR_CHANCE = 0.1


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


def open_run(cfg: DictConfig, out: report.Outputs | None = None, cache: StageCache | None = None) -> Run:
    """The run directory, the stage cache, and the experiment logger with the configuration (started before
    any compute: a logger that cannot start fails first, and a W&B run is in the dashboard while the grid
    trains). `out` describes the task's results, for the W&B seed runs of its curve. In a multi-task job
    only rank 0 has the logger (roar/runtime/distributed.py)."""
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ranks = job_ranks()
    logger = instantiate(cfg.logger) if cfg.get("logger") and ranks.main else None
    seed_curves = None
    if logger is not None:
        logger.log_hyperparams(flat_config(cfg))  # W&B: creates the run
        if isinstance(logger, WandbLogger) and out is not None and not in_multirun():
            seed_curves = report.SeedCurves(logger, out)
    return Run(run_dir, cache or StageCache(Path(cfg.paths.cache_dir), ranks=ranks), logger, seed_curves)


def majority_share(labels: torch.Tensor) -> float:
    """The accuracy of always answering the most frequent class: what no information gets."""
    return torch.bincount(labels).max().item() / len(labels)


def base_model(
    cfg: DictConfig,
    run: Run,
    datamodule: TensorDataModule,
    progress: GridProgress | None = None,
    reused_maps: bool = True,
) -> dict:
    """The model trained on the unmodified data with `seed` (cached), whose saliency maps every method's
    cells are built from. One at or near chance accuracy stops the run (a ConfigError: one line), unless
    `roar.proceed_at_chance`: ranking the pixels a model that learned nothing uses measures nothing. Then
    every selected method is tried on one batch of it (`check_methods`), but for methods whose removal codes
    the cache already holds, when the task will reuse them (`reused_maps`)."""
    base = train_stage(cfg, run.cache, datamodule, cfg.seed, progress=progress, logger=run.logger)
    log.info("base model: val acc %.3f, test acc %.3f", base["val_acc"], base["test_acc"])
    chance = majority_share(datamodule.splits["test"].labels)
    if base["test_acc"] < chance + NEAR_CHANCE * (1 - chance):
        message = (
            f"the unmodified model's test accuracy {base['test_acc']:.3f} is at or near chance "
            f"({chance:.3f}, the most frequent class): it learned nothing for the saliency methods to find; "
            f"train it longer (trainer.max_epochs={cfg.trainer.max_epochs}) or check the data, or run anyway "
            "with roar.proceed_at_chance=true"
        )
        if not cfg.roar.proceed_at_chance:
            raise ConfigError(message)
        log.warning("%s (proceeding: roar.proceed_at_chance=true)", message.split(":")[0])
    check_methods(cfg, base, datamodule, run.cache if reused_maps else None)
    return base


def scored_shards(datamodule: TensorDataModule, maps) -> Iterator[dict]:
    """The test split a shard at a time, each image with its map, as the scoring functions of the tasks
    that do not retrain take them (removal_curves, fidelity_curves): raw images in [0, 1], labels, maps, ids
    and source. An image's scores depend on its own map alone, so a split on disk is never read whole."""
    test = datamodule.splits["test"]
    for start, stop in shard_bounds(len(test), shard_rows(test.images[:1].numel())):
        rows = slice(start, stop)
        yield {
            "images": unit_range(test.images[rows]),
            "labels": test.labels[rows],
            "maps": maps[rows],
            "ids": test.images.ids[rows],
            "source": test.images.source,
        }


def write_stages(run: Run) -> None:
    """stages.csv: every stage the run needed, computed or reused (rank 0's, in a multi-task job)."""
    if not run.cache.ranks.main:
        return
    with atomic_write(run.dir / "stages.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=STAGE_COLUMNS)
        writer.writeheader()
        writer.writerows(run.cache.events)


def write_outputs(run: Run, rows: list[dict], out: report.Outputs) -> None:
    """stages.csv, then the report `out` describes: by rank 0 alone in a multi-task job."""
    write_stages(run)
    if not run.cache.ranks.main:
        return
    report.publish(rows, run.dir, run.logger, outputs=out, seed_curves=run.seed_curves)
