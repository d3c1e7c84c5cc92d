"""The rows of a report and what is computed from them alone: results.csv, the per-image values, the mean ±
std over seeds per method and fraction, and their Markdown table."""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from roar.errors import ConfigError, first_line
from roar.runtime.files import UNREADABLE_TORCH_FILE, atomic_write, save_torch

COLUMNS = ("method", "fraction", "seed", "test_acc", "val_acc")


@dataclass(frozen=True)
class Outputs:
    """What a report holds and how it is drawn and ranked; the defaults are ROAR's."""

    csv: str = "results.csv"
    curve: str = "roar_curve.png"
    title: str = "ROAR"
    value: str = "test_acc"
    columns: tuple[str, ...] = COLUMNS
    xlabel: str = "pixels removed (% of each image, most salient first)"
    xname: str = "% pixels removed"  # the x-axis of W&B's chart
    ylabel: str = "test accuracy after retraining"
    lower_is_better: bool = True
    reference: float | None = 0.0  # the fraction at which every method shares the unmodified model
    chance: float | None = None
    logx: bool = False
    steps_per_unit: int = 100  # W&B step = fraction * steps_per_unit (ROAR: the % removed)


def write_csv(rows: list[dict], path: Path, columns: tuple[str, ...] = COLUMNS) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: (r["method"], r["fraction"], r["seed"])))


PER_IMAGE = "per_image.pt"


def write_per_image(rows: list[dict], path: Path, value: str) -> None:
    """The per-image values of the rows that carry them (`per_image`: one float per test image, whose mean
    is the row's `value`), as `{"value": value, "rows": [{"method", "fraction", "seed", "values"}]}`: what
    `roar-report --agreement` resamples test images from. Nothing is written when no row has them."""
    measured = [row for row in rows if "per_image" in row]
    if not measured:
        return
    entries = [{"method": r["method"], "fraction": r["fraction"], "seed": r["seed"],
                "values": r["per_image"].detach().float().cpu()}
               for r in sorted(measured, key=lambda r: (r["method"], r["fraction"], r["seed"]))]  # fmt: skip
    save_torch({"value": value, "rows": entries}, path)


def read_per_image(path: Path) -> dict:
    """per_image.pt (`write_per_image`) as tensors and plain values only: `weights_only` refuses anything
    else in the pickle (code that would run on loading, say) rather than run it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE_TORCH_FILE as error:
        raise ConfigError(f"{path}: not a per-image values file roar wrote ({first_line(error)})") from None


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [
            {**row, "fraction": float(row["fraction"]), "seed": int(row["seed"]),
             "test_acc": float(row["test_acc"]), "val_acc": float(row["val_acc"])}
            for row in csv.DictReader(f)
        ]  # fmt: skip


def curves(rows: list[dict], value: str = "test_acc") -> dict[str, dict[float, tuple[float, float, int]]]:
    """method -> fraction -> (mean, std, number of seeds) of `value` (the test accuracy by default)."""
    grouped: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        grouped[row["method"]][row["fraction"]].append(row[value])
    out = {}
    for method, by_fraction in grouped.items():
        out[method] = {}
        for fraction, accs in sorted(by_fraction.items()):
            values = torch.tensor(accs, dtype=torch.float64)
            std = values.std().item() if len(accs) > 1 else 0.0
            out[method][fraction] = (values.mean().item(), std, len(accs))
    return out


def summary_table(rows: list[dict], value: str = "test_acc") -> str:
    """Mean `value` (± std over seeds), a row per method, a column per fraction: a Markdown table."""
    table = curves(rows, value)
    fractions = sorted({f for points in table.values() for f in points})
    width = max(len("method"), *(len(m) for m in table))
    header = f"| {'method':<{width}} | " + " | ".join(f"{100 * f:>11.3g}%" for f in fractions) + " |"
    lines = [header, f"| {'-' * width} | " + " | ".join(f"{'-' * 11}:" for _ in fractions) + " |"]
    for method, points in sorted(table.items()):
        cells = []
        for f in fractions:
            if f not in points:
                cells.append(f"{'':>12}")
                continue
            mean, std, n = points[f]
            cells.append(f"{mean:>6.3f}±{std:.3f}" if n > 1 else f"{mean:>12.3f}")
        lines.append(f"| {method:<{width}} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
