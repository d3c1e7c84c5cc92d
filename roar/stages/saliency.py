"""The saliency stage: a method's maps of every image of every split, on the base model, cached."""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from roar import saliency
from roar.data import TensorDataModule
from roar.data.datamodule import SPLITS
from roar.runtime.cache import StageCache, Work
from roar.runtime.console import outcome
from roar.stages.specs import method_reduction, saliency_spec
from roar.stages.training import device_of, load_classifier

log = logging.getLogger(__name__)


def compute_maps(
    method: saliency.PixelSaliency, datamodule: TensorDataModule, batch_size: int, desc: str
) -> dict:
    """Per-pixel saliency (N, H, W), or per element (N, C, H, W), of every split, for the true label of
    each image; the dataset's ground truth, where it has one, goes along for the oracle."""
    maps = {}
    total = sum(len(datamodule.splits[s]) for s in SPLITS)
    # Drawn on a terminal only (disable=None): a log file gets the stage's one line instead.
    with tqdm(total=total, desc=desc, unit="img", disable=None) as progress:
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
    def compute(work: Work) -> dict:
        net = load_classifier(cfg.model, base).net.to(device_of(cfg.trainer))
        explainer = saliency.create(cfg.method[method], net, reduce=method_reduction(cfg, method))
        return compute_maps(explainer, datamodule, cfg.roar.saliency_batch_size, desc=f"saliency: {method}")

    about = {"name": f"{method} saliency maps", "method": method, "seed": cfg.seed}
    maps = cache.get_or_compute("saliency", saliency_spec(cfg, method), compute, about)
    log.info("%s: %s", about["name"], outcome(cache.events[-1]))
    return maps
