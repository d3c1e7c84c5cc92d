"""Mask leakage (Rong et al., ICML 2022): how much of the label can be read from the removal mask alone?

For every method, fraction and seed, a fresh classifier (the configured model) is trained on the binary
masks ROAR would apply, 1 where a pixel is removed, with no image content at all, and tested on the test
split's masks. At chance accuracy the masks carry no label information; above it, ROAR's retrained models
can learn the label from where pixels were removed instead of from what is left, and a method's ROAR curve
then understates what it found. The masks are exactly those of the ROAR cells (same removal codes and mode),
whatever the fill; the fill decides how visible they are in the images, which this
diagnostic does not measure (compare the ROAR curves with roar.fill=road for that).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from pathlib import Path

from omegaconf import DictConfig

from roar.config import method_names
from roar.data import TensorDataModule
from roar.report import Outputs
from roar.runtime.console import GridProgress
from roar.stages import code_stage, load_data, mask_spec, train_stage
from roar.tasks.common import Run, base_model, majority_share, open_run, write_outputs
from roar.tasks.roar import cell_row, unmodified_fraction

log = logging.getLogger(__name__)


def grid(cfg: DictConfig, current: Run) -> tuple[list[dict], float]:
    cache = current.cache
    fractions = sorted({float(f) for f in cfg.roar.fractions} - {unmodified_fraction(cfg.roar.mode)})
    methods = method_names(cfg)
    progress = GridProgress(1 + len(methods) * len(fractions) * len(cfg.seeds))
    log.info(
        "leakage grid: %d methods x %d fractions x %d seed(s) + the base model = %d trainings",
        len(methods), len(fractions), len(cfg.seeds), progress.total,
    )  # fmt: skip
    datamodule = load_data(cfg, cache)
    base = base_model(cfg, current, datamodule, progress)

    def masks_only(codes: dict, fraction: float, work_dir) -> TensorDataModule:
        return datamodule.with_mask_inputs(codes, fraction, cfg.roar.mode)

    rows = []
    for method in methods:
        codes = code_stage(cfg, cache, method, base, datamodule)
        for fraction in fractions:
            for seed in cfg.seeds:
                # Revision 2: since fast_cifar's stem takes the masks' identical channels (see
                # roar.models.fast_cifar); a cache's earlier fits on masks, many collapsed, are not reused.
                spec = {**mask_spec(cfg, method, fraction), "input": "removal mask", "revision": 2}
                # Built only if the stage is computed: a cache hit needs no mask statistics.
                masks = partial(masks_only, codes, fraction)
                trained = train_stage(cfg, cache, masks, seed, spec, progress, logger=current.logger)
                rows.append(cell_row(method, fraction, seed, trained))
                current.record(rows[-1])
    return rows, majority_share(datamodule.splits["test"].labels)


def run(cfg: DictConfig) -> Path:
    """leakage.csv, leakage_curve.png (with the chance level), stages.csv, summary.md/.csv, the logger."""
    kept = "kept" if cfg.roar.mode == "kar" else "removed"
    out = Outputs(
        csv="leakage.csv",
        curve="leakage_curve.png",
        title=f"Mask leakage on {cfg.dataset.name} ({cfg.roar.mode.upper()} masks)",
        xlabel=f"pixels {kept} (% of each image, most salient first)",
        xname=f"% pixels {kept}",
        ylabel="test accuracy from the removal mask alone",
        reference=None,
    )
    current = open_run(cfg, out)
    rows, chance = grid(cfg, current)
    write_outputs(current, rows, replace(out, chance=chance))
    return current.dir
