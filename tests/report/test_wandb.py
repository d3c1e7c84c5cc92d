"""What the W&B dashboard shows, read back from the offline runs' records: a small single run, and a 2-job
sweep with its `roar-report`. The run starts with the job, every retraining logs its curves while it trains,
each cell's result goes to its seed's run as it finishes (the band chart's data), and names are readable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests import wandb_records
from tests.conftest import run_command, succeeded

EPOCHS = 2
# Two methods, two fractions, two retraining seeds: ten trainings (two of them on the unmodified data).
SINGLE = [
    "method=[fullgrad,random]",
    "roar.fractions=[0.3,0.6]",
    "seeds=[0,1]",
    f"trainer.max_epochs={EPOCHS}",
]
# The same kind of grid as two jobs, one per method, and one fraction.
SWEEP = ["method=fullgrad,random", "roar.fractions=[0.5]", "seeds=[0,1]", f"trainer.max_epochs={EPOCHS}"]
NAME = "roar · digits · small_cnn"  # task · dataset · model


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return [
            {**r, "fraction": float(r["fraction"]), "seed": int(r["seed"]), "test_acc": float(r["test_acc"]),
             "val_acc": float(r["val_acc"])}
            for r in csv.DictReader(f)
        ]  # fmt: skip


def _label(row: dict) -> str:
    """How roar labels the training of a cell (its section in the run)."""
    what = "unmodified" if row["fraction"] == 0 else f"{row['method']} {100 * row['fraction']:.0f}% removed"
    return f"{what}, seed {row['seed']}"


def _seconds(timestamp) -> float:
    return timestamp.ToNanoseconds() / 1e9


def _finished_trainings(cache: Path) -> list[float]:
    """When each training stage of the cache was stored (its manifest is written last), in order."""
    return sorted(p.stat().st_mtime for p in cache.glob("train/*/manifest.json"))


def _cell_curves(path: Path) -> dict[str, dict[str, dict[int, float]]]:
    """label -> metric (`train/loss`, `val/acc`, ...) -> epoch -> value, from a run's history."""
    curves: dict = {}
    for entry in wandb_records.history(path):
        for key, value in entry.items():
            label, _, metric = key.partition("/")
            if metric and metric != "epoch" and f"{label}/epoch" in entry:
                curves.setdefault(label, {}).setdefault(metric, {})[entry[f"{label}/epoch"]] = value
    return curves


def _seed_points(path: Path) -> dict[tuple[str, float], float]:
    """(method, % removed) -> test accuracy, as a seed run logged them."""
    points = {}
    for entry in wandb_records.history(path):
        for key, value in entry.items():
            if key.startswith("test_acc/"):
                points[key.removeprefix("test_acc/"), entry["% pixels removed"]] = value
    return points


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("single")
    succeeded(run_command("roar", *SINGLE, "hydra.run.dir=outputs/demo", cwd=root))
    return root


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    succeeded(run_command("roar", "-m", *SWEEP, "hydra.sweep.dir=sweep", cwd=root))
    succeeded(run_command("roar-report", "sweep", cwd=root))
    return root


def test_a_run_is_named_after_what_it_runs_and_starts_before_the_first_training_ends(single):
    path = wandb_records.run_file(single / "outputs" / "demo")
    info = wandb_records.run_info(path)
    assert (info.display_name, info.job_type) == (f"{NAME} · fullgrad, random", "roar")
    assert info.run_group == f"{NAME} · fullgrad, random (demo)"  # the run directory keeps experiments apart
    first_stored = _finished_trainings(single / "cache")[0]
    assert _seconds(info.start_time) < first_stored
    # ... and the first training's curve was in the run while that training ran.
    first_logged = min(
        e["_timestamp"] for e in wandb_records.history(path) if "unmodified, seed 0/epoch" in e
    )
    assert first_logged < first_stored
    assert wandb_records.config(path)["trainer.max_epochs"] == EPOCHS


def test_every_retraining_logs_its_training_and_validation_curves_in_its_own_section(single):
    run_dir = single / "outputs" / "demo"
    path = wandb_records.run_file(run_dir)
    curves = _cell_curves(path)
    rows = _rows(run_dir / "results.csv")
    assert set(curves) == {_label(r) for r in rows}  # ten trainings, each its own section
    steps = wandb_records.step_metrics(path)
    for row in rows:
        label = _label(row)
        for metric in ("train/loss", "train/acc", "val/loss", "val/acc"):
            assert sorted(curves[label][metric]) == list(range(EPOCHS)), (label, metric)
            assert steps[f"{label}/{metric}"] == f"{label}/epoch"
        # The kept checkpoint is the one of the best validation accuracy on that curve.
        assert max(curves[label]["val/acc"].values()) == pytest.approx(row["val_acc"], abs=1e-6)
        assert curves[label]["test/acc"] == {EPOCHS: pytest.approx(row["test_acc"], abs=1e-6)}


def test_each_cell_goes_to_its_seed_run_as_it_finishes_for_wandbs_band_over_seeds(single):
    run_dir = single / "outputs" / "demo"
    main = wandb_records.run_info(wandb_records.run_file(run_dir))
    rows = _rows(run_dir / "results.csv")
    seed_runs = wandb_records.seed_runs(run_dir)
    assert len(seed_runs) == 2
    last_stored = _finished_trainings(single / "cache")[-1]
    for path in seed_runs:
        info = wandb_records.run_info(path)
        seed = wandb_records.config(path)["retraining_seed"]
        # In the job's group, so that W&B aggregates the seed runs into a mean with a band.
        assert (info.run_group, info.job_type) == (main.run_group, "seed")
        assert info.display_name == f"{main.display_name} · seed {seed}"
        assert _seed_points(path) == {
            (r["method"], 100 * r["fraction"]): pytest.approx(r["test_acc"], abs=1e-6)
            for r in rows
            if r["seed"] == seed
        }
        steps = wandb_records.step_metrics(path)
        assert {steps[f"test_acc/{m}"] for m in ("fullgrad", "random")} == {"% pixels removed"}
        first = min(e["_timestamp"] for e in wandb_records.history(path))
        assert first < last_stored  # shown while the grid was still training
    # The job's own run logs no test_acc/<method>: it would enter the group's mean and band.
    job_history = wandb_records.history(wandb_records.run_file(run_dir))
    assert not any(key.startswith("test_acc/") for entry in job_history for key in entry)
    assert (run_dir / "roar_curve.png").stat().st_size > 10_000  # the PNG stays


@pytest.mark.slow
def test_a_sweeps_jobs_and_its_report_share_a_readable_group_and_the_report_holds_the_bands(sweep):
    group = f"{NAME} · sweep (sweep)"
    job_curves = {}
    for job in ("0", "1"):
        run_dir = sweep / "sweep" / job
        path = wandb_records.run_file(run_dir)
        info = wandb_records.run_info(path)
        method = "fullgrad" if job == "0" else "random"
        assert info.run_group == group
        assert info.display_name.startswith(f"{job}: {NAME} · method={method},")
        with open(run_dir / "stages.csv") as f:
            trained = [
                s["key"] for s in csv.DictReader(f) if s["stage"] == "train" and s["status"] == "computed"
            ]
        stored = min((sweep / "cache" / "train" / key / "manifest.json").stat().st_mtime for key in trained)
        assert _seconds(info.start_time) < stored  # before the first training of the job ended
        assert wandb_records.seed_runs(run_dir) == []  # the report makes them, once, from every job's rows
        config = wandb_records.config(path)
        assert config["methods"] == method and config["seeds"] == [0, 1]
        assert not any(isinstance(v, dict) for k, v in config.items() if not k.startswith("_wandb"))
        job_curves |= _cell_curves(path)
    rows = _rows(sweep / "sweep" / "results.csv")
    # Every training of the sweep (the shared base model by the job that computed it) has its curves.
    assert set(job_curves) == {_label(r) for r in rows}

    report = wandb_records.run_file(sweep / "sweep")
    info = wandb_records.run_info(report)
    assert (info.run_group, info.job_type) == (group, "report")
    assert info.display_name == f"report: {NAME} · fullgrad, random"
    seed_runs = wandb_records.seed_runs(sweep / "sweep")
    assert len(seed_runs) == 2
    for path in seed_runs:
        seed = wandb_records.config(path)["retraining_seed"]
        assert wandb_records.run_info(path).run_group == group
        assert _seed_points(path) == {
            (r["method"], 100 * r["fraction"]): pytest.approx(r["test_acc"], abs=1e-6)
            for r in rows
            if r["seed"] == seed
        }
    # The report run: the results and curve tables (mean and std over seeds), the means' chart, the PNG.
    media = report.parent / "files" / "media"
    (curve_table,) = (media / "table").glob("curve_*.table.json")
    logged = json.loads(curve_table.read_text())
    assert logged["columns"] == ["method", "fraction", "mean_test_acc", "std_test_acc", "seeds"]
    assert len(logged["data"]) == 4 and {n for *_, n in logged["data"]} == {2}
    (chart,) = (media / "table").glob("roar_curve_chart_table_*.table.json")
    assert sorted({key for _, key, _ in json.loads(chart.read_text())["data"]}) == ["fullgrad", "random"]
    assert list((media / "images").glob("roar_curve_*.png"))
