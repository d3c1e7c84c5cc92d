"""`roar-report --agreement`: Kendall's τ and its bootstrap interval on hand-made per-image values with a
known answer, the refusal of runs on different base models, scanned files that would run code, and the
report over tiny real runs of three protocols end to end."""

from __future__ import annotations

import csv
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from roar.cli.app import experiment
from roar.cli.report import main
from roar.report import PER_IMAGE, Outputs, agreement, publish
from tests import wandb_records
from tests.conftest import WritesAFile, compose_config

METHODS = ["fullgrad", "input_gradient", "integrated_gradients", "random"]
IMAGES = 400


def correctness(accuracy: float, generator: torch.Generator) -> torch.Tensor:
    """1.0/0.0 per test image, correct with probability `accuracy`."""
    return (torch.rand(IMAGES, generator=generator) < accuracy).float()


def write_run(
    run_dir: Path, accuracies: dict[str, float], *overrides: str, seeds=(0, 1), draw_seed=0
) -> Path:
    """A finished run on digits as the task would leave it (its configuration as Hydra saves it, results,
    summary, per_image.pt), whose cells at 50 % have per-image correctness drawn with each method's
    accuracy; the unmodified data (fraction 0) has one draw every method shares."""
    cfg = compose_config(run_dir.parent, f"method=[{','.join(accuracies)}]", "logger=none", *overrides)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    choices = {"task": "roar", "dataset": "digits", "model": "small_cnn"}
    (run_dir / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}})
    )
    generator = torch.Generator().manual_seed(draw_seed)
    rows = []
    for seed in seeds:
        unmodified = correctness(0.95, generator)
        for method, expected in accuracies.items():
            for fraction, values in ((0.0, unmodified), (0.5, correctness(expected, generator))):
                accuracy = values.mean().item()
                rows.append({"method": method, "fraction": fraction, "seed": seed, "test_acc": accuracy,
                             "val_acc": accuracy, "per_image": values})  # fmt: skip
    kar = "roar.mode=kar" in overrides
    publish(rows, run_dir, outputs=Outputs(lower_is_better=not kar, reference=0.0))
    return run_dir


SPREAD = dict(zip(METHODS, (0.2, 0.4, 0.6, 0.8)))


def test_identical_protocols_agree_with_tau_1_and_a_tight_interval(tmp_path):
    mean = write_run(tmp_path / "mean", SPREAD)
    road = write_run(tmp_path / "road", SPREAD, "roar.fill=road")
    comparison = agreement.compare([mean, road], replicates=200)
    assert [p.name for p in comparison.protocols] == ["ROAR mean", "ROAR road"]
    ((pair),) = comparison.pairs
    assert (pair["tau"], pair["low"], pair["high"], pair["replicates"]) == (1.0, 1.0, 1.0, 200)


def test_a_protocol_ranking_the_other_way_round_gives_tau_minus_1(tmp_path):
    # KAR ranks the highest accuracy first: on the same values it reverses ROAR's order.
    roar = write_run(tmp_path / "roar", SPREAD)
    kar = write_run(tmp_path / "kar", SPREAD, "roar.mode=kar")
    ((pair),) = agreement.compare([roar, kar], replicates=200).pairs
    assert (pair["protocol_b"], pair["tau"], pair["low"], pair["high"]) == ("KAR mean", -1.0, -1.0, -1.0)


def test_methods_that_differ_only_by_chance_get_an_interval_around_0(tmp_path):
    same = dict.fromkeys(METHODS, 0.5)
    a = write_run(tmp_path / "a", same, draw_seed=1)
    b = write_run(tmp_path / "b", same, "roar.fill=road", draw_seed=2)
    ((pair),) = agreement.compare([a, b], replicates=300, seed=3).pairs
    assert pair["low"] < 0 < pair["high"] and pair["high"] - pair["low"] > 1
    # The same draws give the same interval; other draws another.
    assert agreement.compare([a, b], replicates=300, seed=3).pairs == [pair]
    assert agreement.compare([a, b], replicates=300, seed=4).pairs != [pair]


def agreement_report(*args: str, capsys) -> tuple[int, str, str]:
    """Run `roar-report --agreement ARGS` in-process: (exit status, stdout, stderr)."""
    try:
        main(["--agreement", *args])
        status = 0
    except SystemExit as exit:
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize(
    ("override", "difference"),
    [("seed=1", "seed (0 vs 1)"), ("trainer.max_epochs=3", "trainer.max_epochs (15 vs 3)"),
     ("method.fullgrad.rescale=none", "method.fullgrad.rescale")],
)  # fmt: skip
def test_runs_on_different_base_models_are_refused_in_one_line(tmp_path, capsys, override, difference):
    a = write_run(tmp_path / "a", SPREAD)
    b = write_run(tmp_path / "b", SPREAD, "roar.fill=road", override)
    status, out, err = agreement_report(str(a), str(b), "--out", str(tmp_path / "report"), capsys=capsys)
    assert status == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("roar-report: error: ") and difference in line, line
    assert not (tmp_path / "report").exists()


def test_runs_without_per_image_values_are_resampled_over_seeds_and_the_report_says_so(tmp_path, capsys):
    a = write_run(tmp_path / "a", SPREAD)
    b = write_run(tmp_path / "b", SPREAD, "roar.fill=road")
    (b / PER_IMAGE).unlink()  # as a run whose models were all cached before roar recorded them
    status, out, _ = agreement_report(str(a), str(b), "--out", str(tmp_path / "report"), "--bootstrap", "50",
                                      capsys=capsys)  # fmt: skip
    assert status == 0
    text = (tmp_path / "report" / "agreement.md").read_text()
    assert "ROAR road: 16 of 16 cells have no per-image values" in text and "seeds only" in text
    assert "per-image values for no test images" in text and "per-image values for 400 test images" in text
    with open(tmp_path / "report" / "agreement.csv") as f:
        (pair,) = csv.DictReader(f)
    assert float(pair["tau"]) == 1.0 and int(pair["replicates"]) == 50


def test_nothing_in_the_scanned_runs_is_run(tmp_path, capsys):
    marker = tmp_path / "code-was-run"
    a = write_run(tmp_path / "a", SPREAD)
    b = write_run(tmp_path / "b", SPREAD, "roar.fill=road")
    # A _target_ anywhere in the configuration is data: the report instantiates nothing from it.
    for run in (a, b):
        config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        config["dataset"]["hook"] = {"_target_": "pathlib.Path.touch", "self": str(marker)}
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    status, _, _ = agreement_report(str(a), str(b), "--out", str(tmp_path / "ok"), "--bootstrap", "20",
                                    capsys=capsys)  # fmt: skip
    assert status == 0 and not marker.exists()

    # per_image.pt is loaded with weights_only: a pickle that would run code is refused.
    (b / PER_IMAGE).write_bytes(pickle.dumps(WritesAFile(marker)))
    status, _, err = agreement_report(str(a), str(b), "--out", str(tmp_path / "report"), capsys=capsys)
    assert status == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"roar-report: error: {b / PER_IMAGE}: not a per-image values file"), line
    assert not marker.exists() and not (tmp_path / "report").exists()

    # The report's logger is only one roar/conf/logger/ offers.
    shutil.copy(a / PER_IMAGE, b / PER_IMAGE)
    config = yaml.safe_load((a / ".hydra" / "config.yaml").read_text())
    config["logger"] = {"_target_": "pathlib.Path.touch", "self": str(marker)}
    (a / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    status, _, err = agreement_report(str(a), str(b), "--out", str(tmp_path / "report"), capsys=capsys)
    assert status == 2 and "is not a logger roar-report starts" in err
    assert not marker.exists() and not (tmp_path / "report").exists()


def test_the_report_logs_its_tables_and_heat_map_to_a_wandb_run_of_its_own(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    a = write_run(tmp_path / "a", SPREAD, "logger=wandb")
    b = write_run(tmp_path / "b", SPREAD, "logger=wandb", "roar.mode=kar")
    report = tmp_path / "report"
    status, _, _ = agreement_report(str(a), str(b), "--out", str(report), "--bootstrap", "20", capsys=capsys)
    assert status == 0
    path = wandb_records.run_file(report)
    info = wandb_records.run_info(path)
    assert info.job_type == "agreement" and info.display_name == "agreement: ROAR mean, KAR mean"
    assert info.run_group == "agreement · digits · small_cnn (report)"
    assert wandb_records.config(path)["protocols"] == ["ROAR mean", "KAR mean"]
    media = path.parent / "files" / "media"
    assert {t.name.split("_")[0] for t in (media / "table").glob("*.table.json")} == {"agreement", "ranks"}
    assert list((media / "images").glob("agreement_*.png"))


@pytest.mark.parametrize(
    "task,name",
    [
        ({"order": "morf", "mode": "insertion", "fill": "blur", "metric": "probability"},
         "perturbation morf insertion blur probability"),
        ({"order": ["lerf", "morf"], "mode": "deletion", "fill": "zero", "metric": "logit_change"},
         "perturbation SRG deletion zero logit_change"),
    ],
)  # fmt: skip
def test_a_perturbation_protocol_is_named_by_its_options_and_both_orders_by_srg(task, name):
    cfg = OmegaConf.create({"task": {"_target_": "roar.tasks.perturbation.run", **task}})
    assert agreement.protocol_name(cfg) == name


def test_the_report_over_tiny_real_runs_of_three_protocols(tmp_path, capsys):
    tiny = ["trainer.max_epochs=1", "roar.fractions=[0.5]", "method=[fullgrad,random,input_gradient]",
            "logger=none", "roar.proceed_at_chance=true"]  # fmt: skip
    runs = []
    for name, overrides in [("roar", []), ("leakage", ["task=leakage"]),
                            ("perturbation", ["task=perturbation", "task.fractions=[0.1,0.5]"])]:  # fmt: skip
        cfg = compose_config(tmp_path, *tiny, *overrides, f"paths.output_dir={tmp_path}/{name}")
        runs.append(experiment(cfg))
        (runs[-1] / ".hydra").mkdir()
        OmegaConf.save(cfg, runs[-1] / ".hydra" / "config.yaml")  # as Hydra does for a run
    # Every cell's per-image correctness averages to its test accuracy.
    stored = torch.load(runs[0] / PER_IMAGE, weights_only=True)
    with open(runs[0] / "results.csv") as f:
        accuracies = {(r["method"], float(r["fraction"])): float(r["test_acc"]) for r in csv.DictReader(f)}
    assert stored["value"] == "test_acc" and len(stored["rows"]) == len(accuracies) == 6
    for row in stored["rows"]:
        assert row["values"].mean().item() == pytest.approx(
            accuracies[row["method"], row["fraction"]], abs=1e-6
        )
    perturbation = torch.load(runs[2] / PER_IMAGE, weights_only=True)
    assert perturbation["value"] == "logit_change" and len(perturbation["rows"][0]["values"]) == 360

    status, out, err = agreement_report(*map(str, runs), "--out", str(tmp_path / "report"), capsys=capsys)
    assert status == 0, err
    assert "agreement report of 3 runs" in out
    text = (tmp_path / "report" / "agreement.md").read_text()
    assert all(f"| {m} |" in text for m in ("fullgrad", "random", "input_gradient"))
    with open(tmp_path / "report" / "agreement.csv") as f:
        pairs = list(csv.DictReader(f))
    assert [(p["protocol_a"], p["protocol_b"]) for p in pairs] == [
        ("ROAR mean", "leakage"),
        ("ROAR mean", "perturbation lerf deletion zero logit_change"),
        ("leakage", "perturbation lerf deletion zero logit_change"),
    ]
    for pair in pairs:
        assert -1 <= float(pair["low"]) <= float(pair["high"]) <= 1 and int(pair["replicates"]) > 0
    assert (tmp_path / "report" / "agreement.png").stat().st_size > 20_000


def test_a_fidelity_protocol_is_named_by_its_fill_and_metric_the_fill_following_roar_fill(tmp_path):
    cfg = compose_config(tmp_path, "task=fidelity", "roar.fill=road")
    assert agreement.protocol_name(cfg) == "fidelity road accuracy"
    cfg = compose_config(tmp_path, "task=fidelity", "task.fill=zero", "task.metric=probability")
    assert agreement.protocol_name(cfg) == "fidelity zero probability"
