"""The training stage: one model trained from scratch on (possibly modified) data, cached."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from roar.data import TensorDataModule
from roar.report.wandb import fit_logger
from roar.runtime.cache import StageCache
from roar.runtime.console import GridProgress
from roar.stages.specs import training_about, training_spec
from roar.stages.training import train_classifier


def train_stage(
    cfg: DictConfig,
    cache: StageCache,
    datamodule: TensorDataModule | Callable[[Path], TensorDataModule],
    seed: int,
    data=None,
    progress: GridProgress | None = None,
    logger=None,
    init: dict | None = None,
) -> dict:
    """The trained model's record (cached). `datamodule` may be a function that builds it (given a scratch
    directory for what it writes, which a resumed training finds again): it is then built only if the stage
    is computed, so a cache hit skips work such as ROAD's imputation. `progress`
    counts it as a cell of the grid and logs its line. A fit sends its curves to the job's `logger` (W&B)
    as it trains, labelled with what it trains. `init`: the trained model record a fine-tuning starts
    from (`data` then names it)."""
    about = training_about(seed, data)
    # A fit in spawned worker processes (trainer=ddp) would reach the W&B run through wandb's attach; with
    # wandb 0.31 such a fit never returned from its workers here. Its curves stay in its CSV log only.
    spawned = "spawn" in str(cfg.trainer.get("strategy", ""))
    trained = cache.get_or_compute(
        "train",
        training_spec(cfg, seed, data),
        lambda work: train_classifier(
            cfg.model,
            cfg.trainer,
            datamodule if isinstance(datamodule, TensorDataModule) else datamodule(work.dir / "data"),
            seed,
            work,
            about["name"],
            None if spawned else fit_logger(logger, about["name"]),
            None if init is None else init["state_dict"],
        ),
        about,
        together=True,  # a fit spans every task of a multi-task job (DDP)
    )
    if progress is not None:
        progress.cell(about["name"], cache.events[-1], trained)
    return trained
