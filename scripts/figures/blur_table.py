"""The blur control's table (scripts/figures/blur.sh): FullGrad at blur_sigma 0 and 1 beside random, one row
per map and protocol, from the runs' own summary.csv files.

    python -m scripts.figures.blur_table RUNS      # RUNS: the directory blur.sh ran into
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

METRICS = {
    "logit_change": "LeRF: lower better, MoRF: higher better, SRG: lower better",
    "probability": "LeRF: higher better, MoRF: lower better, SRG: higher better",
}


# Each row's label, the method it reads and the run's blur_sigma (random's rows from the σ = 0 runs).
ROWS = (("σ = 0", "fullgrad", 0), ("σ = 1", "fullgrad", 1), ("random", "random", 0))


def areas(summary: Path) -> dict[str, float]:
    """Each method's AUC in one summary.csv."""
    with summary.open() as file:
        return {row["method"]: float(row["auc_mean"]) for row in csv.DictReader(file)}


def accuracies(results: Path, method: str) -> dict[float, float]:
    """A method's test accuracy per removed fraction in a ROAR run's results.csv (one seed)."""
    with results.open() as file:
        return {float(row["fraction"]): float(row["test_acc"]) for row in csv.DictReader(file)
                if row["method"] == method}  # fmt: skip


def table(runs: Path) -> str:
    lines = [
        "# Blur control on digits (FullGrad's maps blurred by blur_sigma pixels; one seed)",
        "",
        "Pixel perturbation (zero fill): the area under each curve divided by the fraction range.",
        "",
        "| maps | metric | AUC LeRF deletion | AUC MoRF deletion | SRG |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for metric, direction in METRICS.items():
        for maps, method, sigma in ROWS:
            run = runs / f"perturbation_{metric}_sigma{sigma}"
            lerf, morf, srg = (areas(run / part / "summary.csv")[method] for part in ("lerf", "morf", "."))
            lines.append(f"| {maps} | `{metric}` ({direction}) | {lerf:.3f} | {morf:.3f} | {srg:.3f} |")
    road = [runs / f"roar_road_sigma{sigma}" for sigma in (0, 1)]
    fractions = sorted(accuracies(road[0] / "results.csv", "fullgrad"))
    lines += [
        "",
        "ROAR with ROAD's fill: test accuracy after retraining, and the AUC (lower is better).",
        "",
        "| maps | " + " | ".join(f"{fraction:.0%}" for fraction in fractions) + " | AUC |",
        "| --- | " + " | ".join("---:" for _ in fractions) + " | ---: |",
    ]
    for maps, method, sigma in ROWS:
        run = road[sigma]
        accuracy = accuracies(run / "results.csv", method)
        cells = " | ".join(f"{accuracy[fraction]:.3f}" for fraction in fractions)
        lines.append(f"| {maps} | {cells} | {areas(run / 'summary.csv')[method]:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table(Path(sys.argv[1])))
