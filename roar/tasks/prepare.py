"""`task=prepare`: the dataset store alone (roar/data/store.py), and nothing trained: the first step on a
cluster, run by as many jobs as there are to share the decoding (a SLURM array: each job writes the shards
no other job holds; docs/large-data.md). A later grid finds every shard in the cache."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from roar import report
from roar.data import TensorDataModule
from roar.stages.specs import dataset_spec
from roar.tasks.common import open_run, write_stages

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> Path:
    """Decode the dataset into the store (the shards no other job is writing), then stages.csv."""
    current = open_run(cfg)
    datamodule: TensorDataModule = instantiate(cfg.dataset.datamodule)
    datamodule.prepare(current.cache, dataset_spec(cfg), "shards")
    sizes = ", ".join(f"{name} {len(split)}" for name, split in datamodule.splits.items())
    log.info("store of dataset=%s ready: %s images", cfg.dataset.name, sizes)
    write_stages(current)
    if current.logger is not None:
        report.close_logger(current.logger)
    return current.dir
