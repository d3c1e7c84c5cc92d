"""Pixel perturbation without retraining: deletion and insertion curves, least or most salient first.

Srinivas & Fleuret (NeurIPS 2019, section 5.2) remove the k % least salient pixels of every test image
(fill: black), feed the perturbed image to the base model and measure how far the target logit moves, the
mean over images of |f(x') - f(x)| / |f(x)|: lower is better. This task generalises it:

- `order`: `lerf` acts on the least salient entries first, `morf` on the most salient first.
- `mode`: `deletion` removes round(k * D) entries of each image (D: its pixels, or its channel values with
  roar.rank_by=element) in that order; `insertion` starts from the fully removed image (every entry filled)
  and restores round(k * D) entries in that order, so that fraction 1 is the original image. The order
  applies to what is acted on: MoRF insertion restores the most salient entries first (the insertion game
  of Petsiuk et al., 2018), MoRF deletion removes them first (pixel flipping).
- `fill` (roar/removal/): what removed entries become, `zero`, `mean`, `blur` or `road`.
- `metric`: `logit_change` (the paper's |f_t(x') - f_t(x)| / |f_t(x)|; the absolute change where f_t(x) is
  exactly 0), `probability` (softmax of the target) or `accuracy` (1 where the target is the arg max), each
  per image, the CSV holding their mean.

Which direction is better follows from what a faithful map does (`lower_is_better`). LeRF deletion and MoRF
insertion should leave the model as it is on the original image (small logit change, high probability and
accuracy); MoRF deletion and LeRF insertion should take away what it uses (large logit change, low
probability and accuracy).

With both orders (`task.order=[lerf,morf]`) each order gets its full report in a subdirectory (`lerf/`,
`morf/`) and the run directory reports SRG (Bluecher et al., 2024: the area under the LeRF curve minus the
area under the MoRF curve), per fraction the LeRF value minus the MoRF value, so that its area is the SRG.

The target is the image's label, as for the saliency maps. Ranking follows roar.rank_by and roar.signed;
only the base model's seed is used (nothing is retrained), and it also breaks ranking ties and draws ROAD's
noise.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from roar import report
from roar.config import method_names
from roar.config.schema import METRICS, ORDERS, PERTURBATION_MODES
from roar.removal import FILLS, mask_of_rank, pixels_to_remove, remove, salience_rank
from roar.report import Outputs
from roar.runtime.console import GridProgress
from roar.stages import load_data, map_stage
from roar.stages.training import device_of, load_classifier
from roar.tasks.common import Run, base_model, open_run, scored_shards, write_outputs

# The quantity a metric is computed from, per image: the target's logit, its softmax, or its being the top.
SCORES = {
    "logit_change": lambda logits, targets: logits.gather(1, targets.view(-1, 1)).squeeze(1),
    "probability": lambda logits, targets: logits.softmax(1).gather(1, targets.view(-1, 1)).squeeze(1),
    "accuracy": lambda logits, targets: (logits.argmax(1) == targets).float(),
}
ORDER_NAMES = {"lerf": "LeRF", "morf": "MoRF"}
YLABELS = {
    "logit_change": "mean |Δ target logit| / |target logit|",
    "probability": "mean softmax probability of the label",
    "accuracy": "test accuracy on the perturbed images",
}
log = logging.getLogger(__name__)


@torch.no_grad()
def target_scores(
    model: nn.Module, normalize, images: torch.Tensor, targets: torch.Tensor, metric: str, batch_size: int
) -> torch.Tensor:
    """Per image, SCORES[metric] of the model's logits for raw images in [0, 1], on the model's device."""
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(images), batch_size):
        logits = model(normalize(images[start : start + batch_size].to(device)))
        chunks.append(SCORES[metric](logits, targets[start : start + batch_size].to(device)))
    return torch.cat(chunks)


def removal_curves(
    model: nn.Module,
    normalize,
    images: torch.Tensor,
    labels: torch.Tensor,
    maps: torch.Tensor,
    fractions,
    order: str = "lerf",
    mode: str = "deletion",
    fill: str = "zero",
    metric: str = "logit_change",
    fill_mean: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 256,
    ids: torch.Tensor | None = None,
    source: str = "",
) -> torch.Tensor:
    """(len(fractions), N): per image, `metric` after removing (deletion) or restoring (insertion)
    round(fraction * D) entries of each raw image (in [0, 1]) in `order` of its map (maps (N, H, W) rank
    pixels, (N, C, H, W) channel values), the others at the original image (deletion) or at `fill`
    (insertion). `fill_mean` is the per-channel mean the `mean` fill writes. Ranking ties and ROAD's noise
    are each image's own, drawn from (`seed`, `source`, its id: `ids`, default 0..N-1; roar/removal/keys.py),
    the same for every fraction. Runs on the model's device: the masks, the fill and the model, in batches
    of `batch_size` images for the model."""
    options = {"order": (order, ORDERS), "mode": (mode, PERTURBATION_MODES), "fill": (fill, FILLS),
               "metric": (metric, METRICS)}  # fmt: skip
    for name, (value, choices) in options.items():
        if value not in choices:
            raise ValueError(f"unknown {name} {value!r}; choose from {choices}")
    if fill == "mean" and fill_mean is None:
        raise ValueError("fill='mean' needs fill_mean, the per-channel mean")
    device = next(model.parameters()).device
    images, maps = images.to(device), maps.to(device)
    mean = fill_mean if fill_mean is not None else torch.zeros(images.shape[1])
    # mask_of_rank marks the most salient entries (roar) or all but them (kar): LeRF ranks the negated map.
    ranked = maps if order == "morf" else -maps
    # Deletion removes the first entries in the order; insertion restores them, removing all the others.
    kept = "roar" if mode == "deletion" else "kar"
    original = target_scores(model, normalize, images, labels, metric, batch_size)
    # The logit change is relative to |f_t(x)|; an image whose target logit is exactly 0 has no scale of its
    # own, and 0/0 would make the curve's mean NaN. It takes its absolute change instead (a denominator of
    # 1: finite, 0 where the logit does not move): the denominator only weights an image, the same for
    # every method, so the comparison between methods stays fair.
    scale = torch.where(original != 0, original.abs(), torch.ones_like(original))
    rank = salience_rank(ranked, seed, ids, source)  # one ranking for every fraction
    curves = []
    for fraction in fractions:
        perturbed = remove(images, mask_of_rank(rank, fraction, kept), fill, mean, seed, ids, source)
        scores = target_scores(model, normalize, perturbed, labels, metric, batch_size)
        curves.append((scores - original).abs() / scale if metric == "logit_change" else scores)
    return torch.stack(curves).cpu()


def lower_is_better(order: str, mode: str, metric: str) -> bool:
    """MoRF deletion and LeRF insertion should change the model's output most; the other two least. The
    logit change is the distance from the original output, the others the output itself."""
    should_change = (order == "morf") == (mode == "deletion")
    return should_change == (metric != "logit_change")


def outputs(cfg: DictConfig, order: str, mode: str, fill: str, metric: str) -> Outputs:
    """The report of one order's curves."""
    salient = "least" if order == "lerf" else "most"
    acted = "removed" if mode == "deletion" else "restored"
    start = "" if mode == "deletion" else ", into the fully filled image"
    return Outputs(
        csv="perturbation.csv",
        curve="perturbation_curve.png",
        title=f"Pixel perturbation on {cfg.dataset.name} ({ORDER_NAMES[order]} {mode}, fill: {fill}, "
        "no retraining)",
        value=metric,
        columns=("method", "fraction", "seed", metric),
        xlabel=f"pixels {acted} (% of each image, {salient} salient first{start})",
        xname=f"% pixels {acted}",
        ylabel=YLABELS[metric],
        lower_is_better=lower_is_better(order, mode, metric),
        reference=None,
        logx=True,
        steps_per_unit=1000,
    )


def srg_outputs(cfg: DictConfig, mode: str, fill: str, metric: str) -> Outputs:
    """The report of both orders: SRG, the LeRF value minus the MoRF value, whose area is the SRG. It is
    better the larger it is where LeRF's curve is (its two curves are better in opposite directions)."""
    return Outputs(
        csv="perturbation.csv",
        curve="perturbation_curve.png",
        title=f"SRG on {cfg.dataset.name} (LeRF - MoRF {mode}, fill: {fill}, no retraining)",
        value="srg",
        columns=("method", "fraction", "seed", "srg", f"{metric}_lerf", f"{metric}_morf"),
        xlabel=f"pixels {'removed' if mode == 'deletion' else 'restored'} (% of each image)",
        xname=f"% pixels {'removed' if mode == 'deletion' else 'restored'}",
        ylabel=f"{YLABELS[metric]}: LeRF minus MoRF",
        lower_is_better=lower_is_better("lerf", mode, metric),
        reference=None,
        logx=True,
        steps_per_unit=1000,
    )


def grid(
    cfg: DictConfig,
    current: Run,
    fractions: list[float],
    orders: list[str],
    mode: str,
    fill: str,
    metric: str,
) -> dict[str, list[dict]]:
    """order -> a row per method and fraction, with the per-image values."""
    datamodule = load_data(cfg, current.cache)
    base = base_model(cfg, current, datamodule, GridProgress(1))  # the one training: nothing is retrained
    model = load_classifier(cfg.model, base).net.to(device_of(cfg.trainer))
    maps = {
        method: map_stage(cfg, current.cache, method, base, datamodule, "test")
        for method in method_names(cfg)
    }
    entries = next(iter(maps.values()))[:1].numel()  # per image: H*W pixels, or C*H*W values (element)
    for fraction in fractions:
        if pixels_to_remove(entries, fraction) == 0:
            log.warning("task.fractions: %g of %d entries per image rounds to none", fraction, entries)
    rows = {order: [] for order in orders}
    for method, method_maps in maps.items():
        for order in orders:
            curves = torch.cat([
                removal_curves(
                    model, datamodule.normalize, fractions=fractions, order=order, mode=mode, fill=fill,
                    metric=metric, fill_mean=datamodule.mean, seed=cfg.seed,
                    batch_size=cfg.roar.saliency_batch_size, **shard,
                )
                for shard in scored_shards(datamodule, method_maps)
            ], dim=1)  # fmt: skip
            for fraction, values in zip(fractions, curves):
                rows[order].append({"method": method, "fraction": fraction, "seed": cfg.seed,
                                    metric: values.mean().item(), "per_image": values})  # fmt: skip
    return rows


def srg_rows(rows: dict[str, list[dict]], metric: str) -> list[dict]:
    """Per method and fraction, the LeRF value minus the MoRF value (and per image), beside both."""
    morf = {(row["method"], row["fraction"]): row for row in rows["morf"]}
    srg = []
    for lerf in rows["lerf"]:
        other = morf[(lerf["method"], lerf["fraction"])]
        srg.append({
            "method": lerf["method"], "fraction": lerf["fraction"], "seed": lerf["seed"],
            "srg": lerf[metric] - other[metric],
            f"{metric}_lerf": lerf[metric], f"{metric}_morf": other[metric],
            "per_image": lerf["per_image"] - other["per_image"],
        })  # fmt: skip
    return srg


def run(
    cfg: DictConfig,
    fractions: list[float],
    fill: str = "zero",
    order: str | list[str] = "lerf",
    mode: str = "deletion",
    metric: str = "logit_change",
) -> Path:
    """perturbation.csv, perturbation_curve.png, stages.csv, summary.md/.csv and the logger; with both
    orders, those of each order in lerf/ and morf/, and SRG's in the run directory."""
    orders = [order] if isinstance(order, str) else list(order)
    both = len(orders) == 2
    out = srg_outputs(cfg, mode, fill, metric) if both else outputs(cfg, orders[0], mode, fill, metric)
    current = open_run(cfg, out)
    rows = grid(cfg, current, sorted(float(f) for f in fractions), orders, mode, fill, metric)
    if not both:
        write_outputs(current, rows[orders[0]], out)
        return current.dir
    for each in orders:
        (current.dir / each).mkdir(exist_ok=True)
        report.publish(rows[each], current.dir / each, outputs=outputs(cfg, each, mode, fill, metric))
    write_outputs(current, srg_rows(rows, metric), out)
    return current.dir
