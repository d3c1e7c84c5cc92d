"""A run's verdict: one score per method (the area under its curve), the ranking, and how each method
compares with the random baseline (written by `roar.report.publish` into summary.md and summary.csv)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import torch

from roar.files import atomic_write


def area_under_curve(points: dict[float, float]) -> float:
    """Trapezoidal area under value-vs-fraction divided by the fraction range covered: the curve's mean
    height, in the value's own units (an accuracy for ROAR and KAR)."""
    fractions = sorted(points)
    if len(fractions) == 1:
        return points[fractions[0]]
    area = sum((b - a) * (points[a] + points[b]) / 2 for a, b in zip(fractions, fractions[1:]))
    return area / (fractions[-1] - fractions[0])


def _by_seed(rows: list[dict], value: str) -> dict[str, dict[int, dict[float, float]]]:
    """method -> seed -> fraction -> value."""
    grouped: dict[str, dict[int, dict[float, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        grouped[row["method"]][row["seed"]][row["fraction"]] = row[value]
    return grouped


def scores(rows: list[dict], value: str = "test_acc") -> dict[str, tuple[float, float, int]]:
    """method -> (mean, std, number of seeds) of the area under each seed's curve."""
    out = {}
    for method, seeds in _by_seed(rows, value).items():
        areas = torch.tensor([area_under_curve(points) for points in seeds.values()], dtype=torch.float64)
        out[method] = (areas.mean().item(), areas.std().item() if len(areas) > 1 else 0.0, len(areas))
    return out


def _ranks(values: dict[str, float], lower_is_better: bool) -> dict[str, int]:
    """1 = best; equal values share the better rank."""
    ordered = sorted(values.values(), reverse=not lower_is_better)
    return {method: ordered.index(v) + 1 for method, v in values.items()}


def _mean_at(seeds: dict[int, dict[float, float]], fraction: float) -> float | None:
    values = [points[fraction] for points in seeds.values() if fraction in points]
    return sum(values) / len(values) if values else None


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
    by_seed = _by_seed(rows, value)
    fractions = sorted({row["fraction"] for row in rows} - {reference})
    per_fraction = {}
    for f in fractions:
        means = {m: _mean_at(seeds, f) for m, seeds in by_seed.items()}
        per_fraction[f] = _ranks({m: v for m, v in means.items() if v is not None}, lower_is_better)
    records = []
    for method, (mean, std, seeds) in areas.items():
        record = {"rank": overall[method], "method": method, "auc_mean": mean, "auc_std": std, "seeds": seeds}
        record[f"auc_minus_{baseline}"] = mean - areas[baseline][0] if baseline in areas else float("nan")
        record.update({f"rank_at_{100 * f:.3g}%": per_fraction[f].get(method) for f in fractions})
        records.append(record)
    return sorted(records, key=lambda r: (r["rank"], r["method"]))


def ranking_markdown(records: list[dict], value: str, lower_is_better: bool) -> str:
    """The ranking as a Markdown section that says which direction is better."""
    better = "lower" if lower_is_better else "higher"
    columns = list(records[0])
    lines = [
        "## Ranking by area under the curve",
        "",
        f"AUC = area under the {value}-vs-fraction curve divided by the fraction range; {better} is better. "
        "rank 1 = best.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for record in records:
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in record.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_ranking(records: list[dict], path: Path) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
