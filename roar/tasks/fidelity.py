"""F-Fidelity (Zheng et al., ICLR 2025): a removal test without retraining per method, on a model fine-tuned
once on randomly removed pixels.

ROAR retrains one model per method and fraction, so that removals are in the training distribution, and
its retrained models can read the label off the shape of the removal (mask leakage). F-Fidelity instead
fine-tunes the base model once, on images from which random pixels were removed — a random share of each
image, up to `beta`, drawn anew for every batch (roar.data.datamodule.RandomRemoval): no explanation takes
part, so none can leak into the model. Then every method is scored on that one model with a stochastic
removal that stays within what the fine-tuning saw: for an explanation size alpha (each fraction), S is an
image's round(alpha * D) most salient entries; FFid+ removes a random `beta` share of S, FFid- a random
`beta` share of the other entries, `samples` times, and each is the score of the original image minus the
mean score after removal (score: `metric`, the label's softmax probability or whether it is the top class).
A faithful map has a high FFid+ (its salient pixels matter) and a low FFid- (the others do not).

roar's version: entries are pixels (or channel values, roar.rank_by=element), removed pixels take
`fill` (roar/removal/fills.py), the random shares are drawn from each image's own counter-based hash
(roar/removal/keys.py; one stream per draw), so a shard of test images is scored alone and the same in any
order. The fine-tuning runs the model's own optimiser and schedule over `epochs` epochs from the base
model's weights, and is cached like any training (its key names the base model, beta and the fill: no
method). docs/evaluation.md#f-fidelity says which settings follow the paper and which are roar's.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict
from torch import nn

from roar import report
from roar.config import method_names
from roar.removal import pixels_to_remove, random_members, remove, salience_rank
from roar.removal.keys import entry_hashes, image_states
from roar.report import Outputs
from roar.runtime.cache import spec_key
from roar.runtime.console import GridProgress
from roar.stages import load_data, map_stage, train_stage, training_spec
from roar.stages.training import device_of, load_classifier
from roar.tasks.common import Run, base_model, open_run, scored_shards, write_outputs
from roar.tasks.perturbation import target_scores

log = logging.getLogger(__name__)
SIGNS = ("plus", "minus")


@torch.no_grad()
def fidelity_curves(
    model: nn.Module,
    normalize,
    images: torch.Tensor,
    labels: torch.Tensor,
    maps: torch.Tensor,
    fractions,
    beta: float,
    samples: int,
    fill: str = "mean",
    metric: str = "accuracy",
    fill_mean: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 256,
    ids: torch.Tensor | None = None,
    source: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(FFid+, FFid-), each (len(fractions), N): per image, `metric` of the original raw image (in [0, 1])
    minus its mean over `samples` removals of a random round(beta * |S|) entries of S, S the image's
    round(fraction * D) most salient entries (+) or all its others (-). Ranking ties, the random shares and
    ROAD's noise are each image's own, from (`seed`, `source`, its id: `ids`, default 0..N-1)."""
    device = next(model.parameters()).device
    images, maps = images.to(device), maps.to(device)
    ids = (torch.arange(len(images)) if ids is None else ids).to(device)
    mean = fill_mean if fill_mean is not None else torch.zeros(images.shape[1])
    original = target_scores(model, normalize, images, labels, metric, batch_size)
    rank = salience_rank(maps, seed, ids, source)  # one ranking for every fraction
    entries = rank[0].numel()
    curves = {sign: [] for sign in SIGNS}
    for fraction in fractions:
        top = rank < pixels_to_remove(entries, fraction)
        for sign, members in zip(SIGNS, (top, ~top)):
            # Every image has the same number of members: round(fraction * D), or the rest.
            counts = torch.full((len(images),), round(beta * int(members[0].sum())), device=device)
            total = torch.zeros(len(images), device=device)
            for draw in range(samples):
                priorities = entry_hashes(image_states(seed, f"{source}#fidelity{draw}", ids), entries)
                mask = random_members(members, counts, priorities)
                perturbed = remove(images, mask, fill, mean, seed, ids, source)
                total += target_scores(model, normalize, perturbed, labels, metric, batch_size)
            curves[sign].append(original - total / samples)
    return torch.stack(curves["plus"]).cpu(), torch.stack(curves["minus"]).cpu()


def fine_tuning_data(cfg: DictConfig, beta: float, fill: str) -> dict:
    """What the fine-tuning's cache key holds beside the configuration: the base model it starts from and
    the random removal it trains on — no method, no map."""
    return {"fine_tune_of": spec_key(training_spec(cfg, cfg.seed, None)),
            "random_removal": {"max_fraction": beta, "fill": fill}}  # fmt: skip


def fine_tune(
    cfg: DictConfig, current: Run, datamodule, base: dict, beta: float, fill: str, epochs: int, progress
) -> dict:
    """The base model fine-tuned for `epochs` epochs on randomly removed pixels (cached)."""
    tuning = copy.deepcopy(cfg)
    with open_dict(tuning):
        tuning.trainer.max_epochs = epochs
    return train_stage(
        tuning, current.cache, datamodule.with_random_removal(beta, fill), cfg.seed,
        fine_tuning_data(cfg, beta, fill), progress, current.logger, init=base,
    )  # fmt: skip


def outputs(cfg: DictConfig, sign: str, beta: float, fill: str, metric: str) -> Outputs:
    """The report of FFid+ (the run directory) or FFid- (its minus/)."""
    plus = sign == "plus"
    value = f"ffid_{sign}"
    removed = "explanation" if plus else "other pixels"
    return Outputs(
        csv="fidelity.csv",
        curve="fidelity_curve.png",
        title=f"F-Fidelity on {cfg.dataset.name} (FFid{'+' if plus else '-'}, beta {beta:g}, fill: {fill}, "
        "one fine-tuning)",
        value=value,
        columns=("method", "fraction", "seed", value),
        xlabel="explanation size (% of each image, most salient first)",
        xname="% explanation size",
        ylabel=f"{metric}: original minus after removing {beta:g} of the {removed}",
        lower_is_better=not plus,
        reference=None,
    )


def grid(
    cfg: DictConfig, current: Run, fractions: list[float], beta: float, samples: int, epochs: int, fill: str,
    metric: str,
) -> dict[str, list[dict]]:  # fmt: skip
    """sign -> a row per method and fraction, with the per-image values."""
    datamodule = load_data(cfg, current.cache)
    progress = GridProgress(2)  # the base model and its fine-tuning: the only trainings
    base = base_model(cfg, current, datamodule, progress)
    tuned = fine_tune(cfg, current, datamodule, base, beta, fill, epochs, progress)
    model = load_classifier(cfg.model, tuned).net.to(device_of(cfg.trainer))
    rows = {sign: [] for sign in SIGNS}
    for method in method_names(cfg):
        maps = map_stage(cfg, current.cache, method, base, datamodule, "test")
        started = time.monotonic()
        parts = [
            fidelity_curves(
                model, datamodule.normalize, fractions=fractions, beta=beta, samples=samples, fill=fill,
                metric=metric, fill_mean=datamodule.mean, seed=cfg.seed,
                batch_size=cfg.roar.saliency_batch_size, **shard,
            )
            for shard in scored_shards(datamodule, maps)
        ]  # fmt: skip
        log.info("fidelity: %s scored in %.1f s", method, time.monotonic() - started)
        # parts: (FFid+, FFid-) per shard; each sign's images joined in the split's order.
        for sign, curves in zip(SIGNS, (torch.cat(part, dim=1) for part in zip(*parts))):
            for fraction, values in zip(fractions, curves):
                rows[sign].append({"method": method, "fraction": fraction, "seed": cfg.seed,
                                   f"ffid_{sign}": values.mean().item(), "per_image": values})  # fmt: skip
        for row in rows["plus"][-len(fractions) :]:
            current.record(row)
    return rows


def run(
    cfg: DictConfig,
    fractions: list[float],
    beta: float = 0.1,
    samples: int = 10,
    epochs: int = 2,
    fill: str = "mean",
    metric: str = "accuracy",
) -> Path:
    """fidelity.csv, fidelity_curve.png, summary.md/.csv (FFid+) and the logger in the run directory; the
    same of FFid- in minus/; stages.csv."""
    out = outputs(cfg, "plus", beta, fill, metric)
    current = open_run(cfg, out)
    rows = grid(cfg, current, sorted(float(f) for f in fractions), beta, samples, epochs, fill, metric)
    (current.dir / "minus").mkdir(exist_ok=True)
    report.publish(rows["minus"], current.dir / "minus", outputs=outputs(cfg, "minus", beta, fill, metric))
    write_outputs(current, rows["plus"], out)
    return current.dir
