"""ROAR (Hooker et al., 2019): remove each method's top-k pixels, retrain, and record test accuracy."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from roar import report
from roar.cache import StageCache
from roar.config import method_names
from roar.data import TensorDataModule
from roar.pipeline import removal_spec, removed_datamodule, saliency_stage, train_stage
from roar.sweep import flat_config

log = logging.getLogger(__name__)


def grid(cfg: DictConfig, cache: StageCache) -> list[dict]:
    """Every (method, fraction, seed) cell of the ROAR grid, fraction 0 being the unmodified data."""
    datamodule: TensorDataModule = instantiate(cfg.dataset.datamodule)
    base = train_stage(cfg, cache, datamodule, cfg.seed)
    log.info("base model: val acc %.3f, test acc %.3f", base["val_acc"], base["test_acc"])
    methods = method_names(cfg)
    fractions = sorted({float(f) for f in cfg.roar.fractions} - {0.0})
    rows = []
    for seed in cfg.seeds:
        unmodified = base if seed == cfg.seed else train_stage(cfg, cache, datamodule, seed)
        rows += [_row(m, 0.0, seed, unmodified) for m in methods]
    for method in methods:
        maps = saliency_stage(cfg, cache, method, base, datamodule)
        for fraction in fractions:
            for seed in cfg.seeds:
                modified = removed_datamodule(datamodule, maps, fraction, seed)
                trained = train_stage(cfg, cache, modified, seed, removal_spec(cfg, method, fraction))
                rows.append(_row(method, fraction, seed, trained))
    return rows


def _row(method: str, fraction: float, seed: int, trained: dict) -> dict:
    return {"method": method, "fraction": fraction, "seed": seed,
            "test_acc": trained["test_acc"], "val_acc": trained["val_acc"]}  # fmt: skip


def run(cfg: DictConfig) -> Path:
    """The ROAR grid, then stages.csv and the report (results.csv, roar_curve.png, summary.md, logger)."""
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = StageCache(Path(cfg.paths.cache_dir))
    logger = instantiate(cfg.logger) if cfg.get("logger") else None

    rows = grid(cfg, cache)

    with open(run_dir / "stages.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["stage", "key", "status"])
        writer.writeheader()
        writer.writerows(cache.events)
    if logger is not None:
        logger.log_hyperparams(flat_config(cfg))
    report.publish(rows, run_dir, logger, title=f"ROAR on {cfg.dataset.name}")
    return run_dir
