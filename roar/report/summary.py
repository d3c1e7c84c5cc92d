"""A run's verdict: one score per method (the area under its curve), the ranking, and how each method
compares with the random baseline (written by `roar.report.publish` into summary.md and summary.csv)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import torch

from roar.runtime.files import atomic_write


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


def scores(rows: list[dict], value: str = "test_acc") -> dict[str, tuple[float, float | None, int]]:
    """method -> (mean, std, number of seeds) of the area under each seed's curve; std is None for one
    seed, which has no spread to measure (0 would claim there is none)."""
    out = {}
    for method, seeds in _by_seed(rows, value).items():
        areas = torch.tensor([area_under_curve(points) for points in seeds.values()], dtype=torch.float64)
        out[method] = (areas.mean().item(), areas.std().item() if len(areas) > 1 else None, len(areas))
    return out


def seed_counts(rows: list[dict]) -> dict[str, int]:
    """method -> how many seeds its curve is averaged over."""
    seeds: dict[str, set] = defaultdict(set)
    for row in rows:
        seeds[row["method"]].add(row["seed"])
    return {method: len(s) for method, s in seeds.items()}


def seeds_note(counts: dict[str, int]) -> str:
    """How many seeds the figures and tables average over, in words: n=1 says so."""
    n = sorted(set(counts.values()))
    if n == [1]:
        return "n=1 seed, so no spread over seeds is shown"
    if len(n) == 1:
        return f"mean ± std over n={n[0]} seeds"
    return f"mean ± std over n={n[0]}–{n[-1]} seeds per method"


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
        if baseline in areas:  # else no column: ranking_markdown says which comparison is missing
            record[f"auc_minus_{baseline}"] = mean - areas[baseline][0]
        record.update({f"rank_at_{100 * f:.3g}%": per_fraction[f].get(method) for f in fractions})
        records.append(record)
    return sorted(records, key=lambda r: (r["rank"], r["method"]))


def ranking_markdown(records: list[dict], value: str, lower_is_better: bool, baseline: str = "random") -> str:
    """The ranking as a Markdown section that says which direction is better, over how many seeds, and
    which comparison is missing when `baseline` was not run."""
    better = "lower" if lower_is_better else "higher"
    columns = list(records[0])
    lines = [
        "## Ranking by area under the curve",
        "",
        f"AUC = area under the {value}-vs-fraction curve divided by the fraction range; {better} is better. "
        f"rank 1 = best; {seeds_note({r['method']: r['seeds'] for r in records})}.",
    ]
    if f"auc_minus_{baseline}" not in columns:
        lines.append(
            f"No `{baseline}` among the methods: nothing says whether a method beats {baseline} removal "
            f"(add method={baseline} for the auc_minus_{baseline} column)."
        )
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for record in records:
        cells = [_cell(v) for v in record.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:  # a std over one seed, or no rank at a fraction the method was not run at
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_ranking(records: list[dict], path: Path) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
