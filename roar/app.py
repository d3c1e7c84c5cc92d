"""The `roar` command: one Hydra application over the pipeline (also `python -m roar`)."""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from roar import pipeline, report
from roar.cache import StageCache
from roar.config import ConfigError, check_group_choices, validate

log = logging.getLogger("roar")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


def experiment(cfg: DictConfig) -> Path:
    """Run the configured ROAR experiment; returns the run directory holding its results."""
    validate(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = StageCache(Path(cfg.paths.cache_dir))
    logger = instantiate(cfg.logger) if cfg.get("logger") else None

    rows = pipeline.run(cfg, cache)

    report.write_csv(rows, run_dir / "results.csv")
    report.plot_curve(rows, run_dir / "roar_curve.png", title=f"ROAR on {cfg.dataset.name}")
    with open(run_dir / "stages.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["stage", "key", "status"])
        writer.writeheader()
        writer.writerows(cache.events)
    if logger is not None:
        logger.log_hyperparams(cfg)
        report.log_results(logger, rows, run_dir / "roar_curve.png")
        logger.finalize("success")
        if hasattr(logger, "experiment") and hasattr(logger.experiment, "finish"):
            logger.experiment.finish()
    print("\n" + report.summary_table(rows))
    return run_dir


def _fail(error: ConfigError) -> None:
    print(f"roar: error: {error}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run_dir = experiment(cfg)
    except ConfigError as error:
        _fail(error)
    print(f"\nrun directory: {run_dir}")


def main() -> None:
    try:
        check_group_choices([a for a in sys.argv[1:] if "=" in a], CONFIG_DIR)
    except ConfigError as error:
        _fail(error)
    _hydra_main()
