"""The stages every task is built from: base model -> saliency maps -> retrained models on modified data.

Each stage is a function of (config, upstream artifacts) returning an artifact, keyed in the cache by the
configuration values that determine it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from roar import saliency
from roar.cache import StageCache, spec_key
from roar.data import TensorDataModule
from roar.data.datamodule import SPLITS
from roar.removal import removal_mask
from roar.training import device_of, load_classifier, train_classifier

log = logging.getLogger(__name__)


def _plain(node) -> object:
    return OmegaConf.to_container(node, resolve=True)


def training_spec(cfg: DictConfig, seed: int, data: dict | None) -> dict:
    """What determines a trained model: dataset, model and optimiser, trainer, seed, and the removal
    applied to the data (None for the unmodified data)."""
    return {
        "dataset": _plain(cfg.dataset),
        "model": _plain(cfg.model),
        "trainer": _plain(cfg.trainer),
        "seed": seed,
        "data": data,
    }


def train_stage(
    cfg: DictConfig, cache: StageCache, datamodule: TensorDataModule, seed: int, data=None
) -> dict:
    spec = training_spec(cfg, seed, data)
    label = "unmodified" if data is None else f"{data['method']} {100 * data['fraction']:.0f}% removed"
    label = f"{label}, seed {seed}"
    return cache.get_or_compute(
        "train",
        spec,
        lambda workdir: train_classifier(cfg.model, cfg.trainer, datamodule, seed, workdir, label),
    )


def saliency_spec(cfg: DictConfig, method: str) -> dict:
    return {
        "base": spec_key(training_spec(cfg, cfg.seed, None)),
        "method": method,
        "params": _plain(cfg.method[method]),
    }


def compute_maps(
    method: saliency.PixelSaliency, datamodule: TensorDataModule, batch_size: int, desc: str
) -> dict:
    """Per-pixel saliency (N, H, W) of every split, for the true label of each image."""
    maps = {}
    total = sum(len(datamodule.splits[s]) for s in SPLITS)
    with tqdm(total=total, desc=desc, unit="img") as progress:
        for split in SPLITS:
            images, labels = datamodule.splits[split].images, datamodule.splits[split].labels
            chunks = []
            for start in range(0, len(labels), batch_size):
                batch = datamodule.normalize(images[start : start + batch_size].to(method.device))
                chunks.append(method.pixel_maps(batch, labels[start : start + batch_size]).cpu())
                progress.update(len(batch))
            maps[split] = torch.cat(chunks)
    return maps


def saliency_stage(cfg: DictConfig, cache: StageCache, method: str, base: dict, datamodule) -> dict:
    def compute(workdir: Path) -> dict:
        net = load_classifier(cfg.model, base).net.to(device_of(cfg.trainer))
        explainer = saliency.create(method, net, **cfg.method[method])
        return compute_maps(explainer, datamodule, cfg.roar.saliency_batch_size, desc=f"saliency: {method}")

    return cache.get_or_compute("saliency", saliency_spec(cfg, method), compute)


def removed_datamodule(
    datamodule: TensorDataModule, maps: dict, fraction: float, seed: int
) -> TensorDataModule:
    """The dataset with the top `fraction` of each image's pixels replaced by the training-set mean (the
    replacement happens per batch, on the training device)."""
    generator = torch.Generator().manual_seed(seed)
    removed = {split: removal_mask(maps[split], fraction, generator) for split in SPLITS}
    return datamodule.with_removal(removed, fill=datamodule.mean)


def removal_spec(cfg: DictConfig, method: str, fraction: float) -> dict:
    """What determines a modified dataset: the saliency maps, the fraction, and how pixels are removed."""
    return {"method": method, "saliency": spec_key(saliency_spec(cfg, method)),
            "fraction": fraction, "fill": cfg.roar.fill}  # fmt: skip
