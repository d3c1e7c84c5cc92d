"""The stages every task is built from: base model -> saliency maps -> retrained models on modified data.

Each stage is a function of (config, upstream artifacts) returning an artifact, keyed in the cache by the
configuration values that determine it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from roar import saliency
from roar.cache import StageCache, spec_key
from roar.data import TensorDataModule
from roar.data.datamodule import SPLITS, unit_range
from roar.removal import fill_value, ranking_reduction, removal_mask, remove
from roar.report import fit_logger
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
    cfg: DictConfig,
    cache: StageCache,
    datamodule: TensorDataModule | Callable[[], TensorDataModule],
    seed: int,
    data=None,
    logger=None,
) -> dict:
    """The trained model's record (cached). `datamodule` may be a function that builds it: it is then
    built only if the stage is computed, so a cache hit skips work such as ROAD's imputation. A fit
    sends its curves to the job's `logger` (W&B) as it trains, labelled with what it trains."""
    spec = training_spec(cfg, seed, data)
    label = "unmodified" if data is None else f"{data['method']} {100 * data['fraction']:.0f}% removed"
    label = f"{label}, seed {seed}"
    # A fit in spawned worker processes (trainer=ddp) would reach the W&B run through wandb's attach; with
    # wandb 0.31 such a fit never returned from its workers here. Its curves stay in its CSV log only.
    spawned = "spawn" in str(cfg.trainer.get("strategy", ""))
    return cache.get_or_compute(
        "train",
        spec,
        lambda workdir: train_classifier(
            cfg.model,
            cfg.trainer,
            datamodule if isinstance(datamodule, TensorDataModule) else datamodule(),
            seed,
            workdir,
            label,
            None if spawned else fit_logger(logger, label),
        ),
    )


def saliency_spec(cfg: DictConfig, method: str) -> dict:
    params = _plain(cfg.method[method])
    spec = {
        "base": spec_key(training_spec(cfg, cfg.seed, None)),
        "method": method,
        "params": params,
        "reduce": method_reduction(cfg, method),
    }
    if "seed" in params:  # a seeded method draws its noise batch by batch: the batching shapes its maps
        spec["batch_size"] = cfg.roar.saliency_batch_size
    return spec


def method_reduction(cfg: DictConfig, method: str) -> str:
    return ranking_reduction(cfg.roar.rank_by, cfg.roar.signed, cfg.method[method].get("reduce", "abs_sum"))


def compute_maps(
    method: saliency.PixelSaliency, datamodule: TensorDataModule, batch_size: int, desc: str
) -> dict:
    """Per-pixel saliency (N, H, W), or per element (N, C, H, W), of every split, for the true label of
    each image; the dataset's ground truth, where it has one, goes along for the oracle."""
    maps = {}
    total = sum(len(datamodule.splits[s]) for s in SPLITS)
    with tqdm(total=total, desc=desc, unit="img") as progress:
        for split in SPLITS:
            images, labels = datamodule.splits[split].images, datamodule.splits[split].labels
            truth = datamodule.ground_truth[split] if datamodule.ground_truth else None
            chunks = []
            for start in range(0, len(labels), batch_size):
                part = slice(start, start + batch_size)
                batch = datamodule.normalize(images[part].to(method.device))
                known = truth[part] if truth is not None else None
                chunks.append(method.pixel_maps(batch, labels[part], known).cpu())
                progress.update(len(batch))
            maps[split] = torch.cat(chunks)
    return maps


def saliency_stage(cfg: DictConfig, cache: StageCache, method: str, base: dict, datamodule) -> dict:
    def compute(workdir: Path) -> dict:
        net = load_classifier(cfg.model, base).net.to(device_of(cfg.trainer))
        params = {k: v for k, v in cfg.method[method].items() if k != "reduce"}
        explainer = saliency.create(method, net, reduce=method_reduction(cfg, method), **params)
        return compute_maps(explainer, datamodule, cfg.roar.saliency_batch_size, desc=f"saliency: {method}")

    return cache.get_or_compute("saliency", saliency_spec(cfg, method), compute)


def removal_masks(maps: dict, fraction: float, generator: torch.Generator, mode: str = "roar") -> dict:
    """Per split, the entries to remove (roar/removal.py), ties broken by `generator`."""
    return {split: removal_mask(maps[split], fraction, generator, mode) for split in SPLITS}


def removed_datamodule(
    datamodule: TensorDataModule,
    maps: dict,
    fraction: float,
    seed: int,
    mode: str = "roar",
    fill: str = "mean",
) -> TensorDataModule:
    """The dataset with the top `fraction` of each image's pixels removed (`mode=roar`) or all but them
    (`kar`), filled with `fill` (roar/removal.py); `seed` breaks ranking ties and draws ROAD's noise.
    Mean and zero fills are applied per batch on the training device; ROAD's imputation once, here."""
    generator = torch.Generator().manual_seed(seed)
    # Every mask is drawn before any noise: the masks are the same whatever the fill.
    masks = removal_masks(maps, fraction, generator, mode)
    if fill == "road":
        images = {
            split: remove(
                unit_range(datamodule.splits[split].images), masks[split], fill, datamodule.mean, generator
            )
            for split in SPLITS
        }
        return datamodule.with_images(images)
    return datamodule.with_removal(masks, fill=fill_value(fill, datamodule.mean))


def mask_spec(cfg: DictConfig, method: str, fraction: float) -> dict:
    """What determines the removal masks: the saliency maps (ranked as roar.rank_by/signed say), the
    fraction and the mode."""
    return {"method": method, "saliency": spec_key(saliency_spec(cfg, method)),
            "fraction": fraction, "mode": cfg.roar.mode}  # fmt: skip


def removal_spec(cfg: DictConfig, method: str, fraction: float) -> dict:
    """What determines a modified dataset: the masks and how the removed pixels are filled."""
    return {**mask_spec(cfg, method, fraction), "fill": cfg.roar.fill}
