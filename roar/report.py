"""Results of a run: the CSV, the degradation curve, the summary table, and the experiment logger."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.loggers import WandbLogger  # noqa: E402

COLUMNS = ("method", "fraction", "seed", "test_acc", "val_acc")


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: (r["method"], r["fraction"], r["seed"])))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [
            {**row, "fraction": float(row["fraction"]), "seed": int(row["seed"]),
             "test_acc": float(row["test_acc"]), "val_acc": float(row["val_acc"])}
            for row in csv.DictReader(f)
        ]  # fmt: skip


def curves(rows: list[dict]) -> dict[str, dict[float, tuple[float, float, int]]]:
    """method -> fraction -> (mean, std, number of seeds) of the test accuracy."""
    grouped: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        grouped[row["method"]][row["fraction"]].append(row["test_acc"])
    out = {}
    for method, by_fraction in grouped.items():
        out[method] = {}
        for fraction, accs in sorted(by_fraction.items()):
            values = torch.tensor(accs, dtype=torch.float64)
            std = values.std().item() if len(accs) > 1 else 0.0
            out[method][fraction] = (values.mean().item(), std, len(accs))
    return out


def plot_curve(rows: list[dict], path: Path, title: str = "ROAR: remove and retrain") -> None:
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    for method, points in sorted(curves(rows).items()):
        fractions = [100 * f for f in points]
        means = [m for m, _, _ in points.values()]
        (line,) = ax.plot(fractions, means, marker="o", label=method)
        if any(n > 1 for _, _, n in points.values()):
            low = [m - s for m, s, _ in points.values()]
            high = [m + s for m, s, _ in points.values()]
            ax.fill_between(fractions, low, high, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("pixels removed (% of each image, most salient first)")
    ax.set_ylabel("test accuracy after retraining")
    ax.set_title(title)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary_table(rows: list[dict]) -> str:
    """Mean test accuracy (± std over seeds), a row per method, a column per fraction: a Markdown table."""
    table = curves(rows)
    fractions = sorted({f for points in table.values() for f in points})
    width = max(len("method"), *(len(m) for m in table))
    header = f"| {'method':<{width}} | " + " | ".join(f"{100 * f:>11.0f}%" for f in fractions) + " |"
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


def log_results(logger, rows: list[dict], curve_png: Path, galleries: list[Path] = ()) -> None:
    """Send the results to a Lightning logger: per-fraction mean and seed std of the accuracy (step = %
    removed), and where the logger takes them (W&B) the results and curve tables, the curve (an interactive
    chart, one line per method, and the plotted PNG with its seed bands) and the saliency galleries."""
    table = curves(rows)
    for fraction in sorted({row["fraction"] for row in rows}):
        at_fraction = {method: points[fraction] for method, points in table.items() if fraction in points}
        metrics = {f"test_acc/{method}": mean for method, (mean, _, _) in at_fraction.items()}
        metrics |= {f"test_acc_std/{method}": std for method, (_, std, _) in at_fraction.items()}
        logger.log_metrics(metrics, step=round(100 * fraction))
    if hasattr(logger, "log_table"):
        ordered = sorted(rows, key=lambda r: (r["method"], r["fraction"], r["seed"]))
        logger.log_table("results", columns=list(COLUMNS), data=[[r[c] for c in COLUMNS] for r in ordered])
        logger.log_table(
            "curve",
            columns=["method", "fraction", "mean_test_acc", "std_test_acc", "seeds"],
            data=[[m, f, *point] for m, points in sorted(table.items()) for f, point in points.items()],
        )
    if isinstance(logger, WandbLogger):
        import wandb  # already loaded by the logger; runs without W&B need not pay for it

        methods = sorted(table)
        logger.experiment.log(
            {
                "roar_curve_chart": wandb.plot.line_series(
                    xs=[[100 * f for f in table[m]] for m in methods],
                    ys=[[mean for mean, _, _ in table[m].values()] for m in methods],
                    keys=methods,
                    title="test accuracy after retraining (mean over seeds)",
                    xname="% pixels removed",
                )
            }
        )
    if hasattr(logger, "log_image"):
        logger.log_image("roar_curve", [str(curve_png)])
        if galleries:
            logger.log_image(
                "saliency_gallery", [str(g) for g in galleries], caption=[g.parent.name for g in galleries]
            )
    logger.save()


def publish(rows: list[dict], out_dir: Path, logger=None, title: str = "ROAR", galleries=()) -> None:
    """Everything a report holds, written to `out_dir` (results.csv, roar_curve.png, summary.md), sent to
    `logger` and printed; a single run and `roar-report` over a sweep both end here."""
    write_csv(rows, out_dir / "results.csv")
    plot_curve(rows, out_dir / "roar_curve.png", title=title)
    table = summary_table(rows)
    (out_dir / "summary.md").write_text(f"# {title}\n\nTest accuracy after retraining.\n\n{table}\n")
    if logger is not None:
        log_results(logger, rows, out_dir / "roar_curve.png", list(galleries))
        close_logger(logger)
    print("\n" + table)


def close_logger(logger) -> None:
    logger.finalize("success")
    if hasattr(logger, "experiment") and hasattr(logger.experiment, "finish"):  # W&B: close the run
        logger.experiment.finish()
