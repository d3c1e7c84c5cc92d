"""End to end: the real Hydra app, Lightning training, saliency, removal, retraining and reports."""

import csv
import json
from pathlib import Path

import torch

from roar.cli.app import experiment
from roar.data.datamodule import SPLITS
from roar.tasks import roar as roar_task
from tests import wandb_records
from tests.conftest import TINY, compose_config


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "results.csv") as f:
        return list(csv.DictReader(f))


def _stages(run_dir: Path) -> list[dict]:
    with open(run_dir / "stages.csv") as f:
        return list(csv.DictReader(f))


def test_cli_runs_the_whole_grid_and_writes_every_cell(run_roar, tmp_path):
    done = run_roar(*TINY, "hydra.run.dir=run", "logger=wandb")
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "run"
    assert f"run directory: {run_dir}" in done.stdout
    rows = _rows(run_dir)
    cells = {(r["method"], float(r["fraction"]), int(r["seed"])) for r in rows}
    assert cells == {(m, f, 0) for m in ("fullgrad", "random") for f in (0.0, 0.3, 0.6)}
    assert len(rows) == len(cells)
    assert all(0 <= float(r["test_acc"]) <= 1 for r in rows)
    unmodified = [float(r["test_acc"]) for r in rows if float(r["fraction"]) == 0]
    assert min(unmodified) > 0.5  # chance is 0.1
    assert (run_dir / "roar_curve.png").stat().st_size > 10_000
    # The offline W&B run holds the per-cell table and the curve.
    wandb_run = wandb_records.run_file(run_dir).parent
    (table,) = (wandb_run / "files" / "media" / "table").glob("results_*.table.json")
    logged = json.loads(table.read_text())
    assert logged["columns"][:4] == ["method", "fraction", "seed", "test_acc"]
    assert sorted((r[0], r[1]) for r in logged["data"]) == sorted((m, f) for m, f, _ in cells)
    assert list((wandb_run / "files" / "media" / "images").glob("roar_curve_*.png"))


def test_second_run_reuses_the_base_model_and_maps_and_a_changed_value_recomputes(tmp_path, monkeypatch):
    overrides = (*TINY, "logger=none", "roar.fractions=[0.5]")
    first = experiment(compose_config(tmp_path, *overrides, "paths.output_dir=" + str(tmp_path / "a")))
    assert {s["status"] for s in _stages(first)} == {"computed"}

    # A reused cell does not even build its modified dataset (ROAD's imputation is costly).
    built = []
    monkeypatch.setattr(roar_task, "removed_datamodule", lambda *args: built.append(args))
    second = experiment(compose_config(tmp_path, *overrides, "paths.output_dir=" + str(tmp_path / "b")))
    assert {s["status"] for s in _stages(second)} == {"reused"}
    assert _rows(first) == _rows(second)
    assert built == []
    monkeypatch.undo()

    changed = experiment(
        compose_config(
            tmp_path, *overrides, "trainer.max_epochs=3", "paths.output_dir=" + str(tmp_path / "c")
        )
    )
    assert {s["status"] for s in _stages(changed)} == {"computed"}


def test_removal_codes_cover_every_image_of_every_split_one_byte_per_pixel(tmp_path):
    from roar.runtime.cache import StageCache
    from roar.stages import code_stage, load_data

    cfg = compose_config(tmp_path, *TINY, "logger=none", "roar.fractions=[0.5]", "method=fullgrad")
    experiment(cfg)
    cache = StageCache(cfg.paths.cache_dir)
    datamodule = load_data(cfg, cache)
    codes = code_stage(cfg, cache, "fullgrad", None, datamodule)  # every shard stored: no model needed
    assert {e["status"] for e in cache.events} == {"reused"}
    assert set(codes) == set(SPLITS) and sum(len(c) for c in codes.values()) == 1797
    for split, split_codes in codes.items():
        values = split_codes[:]
        assert values.dtype == torch.uint8 and values.shape == (len(datamodule.splits[split]), 8, 8)
        assert values.min() >= 1 and values.max() <= 100
