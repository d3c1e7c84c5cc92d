"""Pixel perturbation without retraining (Srinivas & Fleuret, NeurIPS 2019, section 5.2).

Remove the k % least salient pixels of every test image (fill: black by default), feed the perturbed
image to the base model, and measure how far the target logit moves: the mean over images of
|f(x') - f(x)| / |f(x)|. A map whose lowest values sit on pixels the model does not use changes the output
least, so lower is better. The target is the image's label, as for the saliency maps. Ranking follows
roar.rank_by and roar.signed; only the base model's seed is used (nothing is retrained).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from roar.config import method_names
from roar.console import GridProgress
from roar.data.datamodule import unit_range
from roar.pipeline import load_data, saliency_stage
from roar.removal import pixels_to_remove, removal_mask, remove
from roar.report import Outputs
from roar.tasks.common import Run, base_model, open_run, write_outputs
from roar.training import device_of, load_classifier

COLUMNS = ("method", "fraction", "seed", "logit_change")
log = logging.getLogger(__name__)


@torch.no_grad()
def target_logits(model: nn.Module, normalize, images: torch.Tensor, targets: torch.Tensor, batch_size: int):
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(images), batch_size):
        logits = model(normalize(images[start : start + batch_size].to(device)))
        chunks.append(logits.gather(1, targets[start : start + batch_size].view(-1, 1).to(device)).squeeze(1))
    return torch.cat(chunks).cpu()


def logit_change(
    model: nn.Module,
    normalize,
    images: torch.Tensor,
    perturbed: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int = 256,
) -> torch.Tensor:
    """|f_t(x') - f_t(x)| / |f_t(x)| per image, for raw images x and their perturbed versions x'."""
    original = target_logits(model, normalize, images, targets, batch_size)
    changed = target_logits(model, normalize, perturbed, targets, batch_size)
    return (changed - original).abs() / original.abs()


def least_salient_mask(maps: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """True at the round(fraction * D) least salient entries of each image (ties in random order)."""
    return removal_mask(-maps, fraction, generator)


def grid(cfg: DictConfig, current: Run, fractions: list[float], fill: str) -> list[dict]:
    cache = current.cache
    datamodule = load_data(cfg)
    base = base_model(cfg, current, datamodule, GridProgress(1))  # the one training: nothing is retrained
    model = load_classifier(cfg.model, base).net.to(device_of(cfg.trainer))
    test = datamodule.splits["test"]
    images = unit_range(test.images)  # the fills work in [0, 1]; stored images may be uint8
    maps = {
        method: saliency_stage(cfg, cache, method, base, datamodule)["test"] for method in method_names(cfg)
    }
    entries = next(iter(maps.values()))[0].numel()  # per image: H*W pixels, or C*H*W values (element)
    for fraction in fractions:
        if pixels_to_remove(entries, fraction) == 0:
            log.warning(
                "task.fractions: %g of %d entries per image rounds to none removed", fraction, entries
            )
    rows = []
    for method, method_maps in maps.items():
        for fraction in sorted(fractions):
            generator = torch.Generator().manual_seed(cfg.seed)
            mask = least_salient_mask(method_maps, fraction, generator)
            perturbed = remove(images, mask, fill, datamodule.mean, generator)
            change = logit_change(model, datamodule.normalize, images, perturbed, test.labels,
                                  cfg.roar.saliency_batch_size)  # fmt: skip
            rows.append({"method": method, "fraction": fraction, "seed": cfg.seed,
                         "logit_change": change.mean().item(), "per_image": change})  # fmt: skip
    return rows


def run(cfg: DictConfig, fractions: list[float], fill: str = "zero") -> Path:
    """perturbation.csv, perturbation_curve.png, stages.csv, summary.md/.csv and the logger."""
    out = Outputs(
        csv="perturbation.csv",
        curve="perturbation_curve.png",
        title=f"Pixel perturbation on {cfg.dataset.name} (fill: {fill}, no retraining)",
        value="logit_change",
        columns=COLUMNS,
        xlabel="pixels removed (% of each image, least salient first)",
        ylabel="mean |Δ target logit| / |target logit|",
        reference=None,
        logx=True,
        steps_per_unit=1000,
    )
    current = open_run(cfg, out)
    rows = grid(cfg, current, [float(f) for f in fractions], fill)
    write_outputs(current, rows, out)
    return current.dir
