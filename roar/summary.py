"""A run's verdict: one score per method (the area under its curve), the ranking, and how each method
compares with the random baseline; printed and written as summary.md and summary.csv."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import torch

from roar.report import curves


def area_under_curve(points: dict[float, float]) -> float:
    """Trapezoidal area under value-vs-fraction divided by the fraction range covered: the curve's mean
    height, in the value's own units (an accuracy for ROAR and KAR)."""
    fractions = sorted(points)
    if len(fractions) == 1:
        return points[fractions[0]]
    area = sum((b - a) * (points[a] + points[b]) / 2 for a, b in zip(fractions, fractions[1:]))
    return area / (fractions[-1] - fractions[0])


def scores(rows: list[dict], value: str = "test_acc") -> dict[str, tuple[float, float, int]]:
    """method -> (mean, std, number of seeds) of the area under each seed's curve."""
    by_seed: dict[str, dict[int, dict[float, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        by_seed[row["method"]][row["seed"]][row["fraction"]] = row[value]
    out = {}
    for method, seeds in by_seed.items():
        areas = torch.tensor([area_under_curve(points) for points in seeds.values()], dtype=torch.float64)
        out[method] = (areas.mean().item(), areas.std().item() if len(areas) > 1 else 0.0, len(areas))
    return out


def _ranks(values: dict[str, float], lower_is_better: bool) -> dict[str, int]:
    """1 = best; equal values share the better rank."""
    ordered = sorted(values.values(), reverse=not lower_is_better)
    return {method: ordered.index(v) + 1 for method, v in values.items()}


def summarize(
    rows: list[dict],
    lower_is_better: bool,
    value: str = "test_acc",
    reference: float | None = None,
    baseline: str = "random",
) -> list[dict]:
    """One record per method, best first: its area under the curve (mean, std over seeds), rank, the
    difference to `baseline`'s area, and its rank at every fraction but `reference` (the unmodified data,
    where all methods share one model)."""
    areas = scores(rows, value)
    overall = _ranks({m: mean for m, (mean, _, _) in areas.items()}, lower_is_better)
    table = curves(rows, value)
    fractions = sorted({f for points in table.values() for f in points} - {reference})
    per_fraction = {
        f: _ranks({m: points[f][0] for m, points in table.items() if f in points}, lower_is_better)
        for f in fractions
    }
    records = []
    for method, (mean, std, seeds) in areas.items():
        record = {"rank": overall[method], "method": method, "auc_mean": mean, "auc_std": std, "seeds": seeds}
        record[f"auc_minus_{baseline}"] = mean - areas[baseline][0] if baseline in areas else float("nan")
        record.update({f"rank_at_{100 * f:.3g}%": per_fraction[f].get(method) for f in fractions})
        records.append(record)
    return sorted(records, key=lambda r: (r["rank"], r["method"]))


def markdown(records: list[dict], heading: str) -> str:
    columns = list(records[0])
    lines = [heading, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for record in records:
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in record.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_summary(
    rows: list[dict],
    run_dir: Path,
    heading: str,
    lower_is_better: bool,
    value: str = "test_acc",
    reference: float | None = None,
) -> str:
    """summary.md and summary.csv in `run_dir`; returns the markdown, which says what is better."""
    records = summarize(rows, lower_is_better, value, reference)
    better = "lower" if lower_is_better else "higher"
    text = markdown(records, f"{heading}\n\nAUC = area under the {value}-vs-fraction curve divided by the "
                             f"fraction range; {better} is better. rank 1 = best.")  # fmt: skip
    (run_dir / "summary.md").write_text(text + "\n")
    with open(run_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return text
