"""ROAR (Hooker et al., 2019): remove each method's top-k pixels, retrain, and record test accuracy.

With `roar.mode=kar` (keep and retrain) the top-k are kept and the rest removed; the unmodified model
then sits at fraction 1 (everything kept) instead of 0.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from omegaconf import DictConfig

from roar.config import method_names
from roar.report import Outputs
from roar.runtime.console import GridProgress
from roar.stages import code_stage, load_data, removal_spec, removed_datamodule, train_stage
from roar.stages.training import device_of
from roar.tasks.common import Run, base_model, open_run, write_outputs

log = logging.getLogger(__name__)


def unmodified_fraction(mode: str) -> float:
    """Where the unmodified data sits on the curve: nothing removed (ROAR) or everything kept (KAR)."""
    return 0.0 if mode == "roar" else 1.0


def grid(cfg: DictConfig, current: Run) -> list[dict]:
    """Every (method, fraction, seed) cell of the ROAR grid, plus the unmodified data at
    `unmodified_fraction`; each cell is recorded in `current` as it finishes."""
    cache, logger = current.cache, current.logger
    methods = method_names(cfg)
    reference = unmodified_fraction(cfg.roar.mode)
    fractions = sorted({float(f) for f in cfg.roar.fractions} - {reference})
    unmodified_seeds = [seed for seed in cfg.seeds if seed != cfg.seed]  # the base model serves `seed`
    cells = len(methods) * len(fractions) * len(cfg.seeds)
    progress = GridProgress(1 + len(unmodified_seeds) + cells)
    log.info(
        "%s grid: %d methods x %d fractions x %d seed(s) + %d unmodified = %d trainings",
        cfg.roar.mode.upper(), len(methods), len(fractions), len(cfg.seeds), 1 + len(unmodified_seeds),
        progress.total,
    )  # fmt: skip
    datamodule = load_data(cfg, cache)
    base = base_model(cfg, current, datamodule, progress)
    rows = []
    for seed in cfg.seeds:
        unmodified = (
            base
            if seed == cfg.seed
            else train_stage(cfg, cache, datamodule, seed, progress=progress, logger=logger)
        )
        for method in methods:
            rows.append(cell_row(method, reference, seed, unmodified))
            current.record(rows[-1])
    device = device_of(cfg.trainer)
    for method in methods:
        codes = code_stage(cfg, cache, method, base, datamodule)
        for fraction in fractions:
            for seed in cfg.seeds:
                # Built only if the cell is trained here (a cached cell needs no fill), in its scratch
                # directory (`work_dir`, given by train_stage).
                modified = partial(removed_datamodule, datamodule, codes, fraction, seed, cfg.roar.mode,
                                   cfg.roar.fill, device=device)  # fmt: skip
                data = removal_spec(cfg, method, fraction)
                trained = train_stage(cfg, cache, modified, seed, data, progress=progress, logger=logger)
                rows.append(cell_row(method, fraction, seed, trained))
                current.record(rows[-1])
    return rows


def cell_row(method: str, fraction: float, seed: int, trained: dict) -> dict:
    """A cell's result row: its accuracies and, per test image, 1.0/0.0 for correct/wrong (`per_image`),
    where the trained model's artifact has them (one cached before roar recorded them has not)."""
    row = {"method": method, "fraction": fraction, "seed": seed,
           "test_acc": trained["test_acc"], "val_acc": trained["val_acc"]}  # fmt: skip
    if "test_correct" in trained:
        row["per_image"] = trained["test_correct"].float()
    return row


def outputs(cfg: DictConfig) -> Outputs:
    """The report of a ROAR (or KAR) grid: results.csv, roar_curve.png, the summary."""
    mode, fill = cfg.roar.mode, cfg.roar.fill
    kar = mode == "kar"
    return Outputs(
        csv="results.csv",
        curve="roar_curve.png",
        title=f"{mode.upper()} on {cfg.dataset.name} (fill: {fill}, ranked by {cfg.roar.rank_by})",
        xlabel=f"pixels {'kept' if kar else 'removed'} (% of each image, most salient first)",
        xname=f"% pixels {'kept' if kar else 'removed'}",
        # ROAR: removals that hurt most are best; KAR: keeping what sustains accuracy is best.
        lower_is_better=not kar,
        reference=unmodified_fraction(mode),
    )


def run(cfg: DictConfig) -> Path:
    """The ROAR grid, then stages.csv and the report (results.csv, roar_curve.png, summary, logger)."""
    out = outputs(cfg)
    current = open_run(cfg, out)
    rows = grid(cfg, current)
    write_outputs(current, rows, out)
    return current.dir
