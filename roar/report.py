"""Results of a run: the CSV, the degradation curve, the summary table, and the experiment logger."""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.loggers import WandbLogger  # noqa: E402
from pytorch_lightning.utilities import rank_zero_only  # noqa: E402

from roar.files import atomic_write  # noqa: E402
from roar.summary import ranking_markdown, seed_counts, seeds_note, summarize, write_ranking  # noqa: E402

COLUMNS = ("method", "fraction", "seed", "test_acc", "val_acc")


class RoarWandbLogger(WandbLogger):
    """Lightning's W&B logger (conf/logger/wandb.yaml), less the `anonymous=None` it always hands to
    `wandb.init`: wandb 0.19+ answers any value of that retired setting with a warning on every run."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._wandb_init.pop("anonymous", None)  # None: a Lightning that no longer sets it


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
    with atomic_write(path) as tmp:
        torch.save({"value": value, "rows": entries}, tmp)


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


def plot_curve(rows: list[dict], path: Path, title: str = "ROAR: remove and retrain", **style) -> None:
    """Draw the curves (see `curve_figure` for `style`) into the image file `path`."""
    fig = curve_figure(rows, title, **style)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:])  # the temporary file's name has no image suffix
    plt.close(fig)


def curve_figure(
    rows: list[dict],
    title: str = "ROAR: remove and retrain",
    value: str = "test_acc",
    xlabel: str = "pixels removed (% of each image, most salient first)",
    ylabel: str = "test accuracy after retraining",
    baseline: str = "random",
    chance: float | None = None,
    logx: bool = False,
) -> plt.Figure:
    """One line per method with a mean ± std band over seeds. The `baseline` method is drawn behind the
    others as a grey band (at least a line's width wide, even for one seed), so that a reader sees at once
    which methods leave it; `chance`, if given, is a dashed line. The title's second line says over how
    many seeds (n=1 as such); where methods have different numbers, each legend entry has its own."""
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    counts = seed_counts(rows)
    mixed = len(set(counts.values())) > 1
    for method, points in sorted(curves(rows, value).items()):
        label = f"{method} (n={counts[method]})" if mixed else method
        fractions = [100 * f for f in points]
        means = [m for m, _, _ in points.values()]
        low = [m - s for m, s, _ in points.values()]
        high = [m + s for m, s, _ in points.values()]
        if method == baseline:
            ax.fill_between(fractions, low, high, color="0.6", alpha=0.45, lw=0, zorder=1)
            ax.plot(fractions, means, color="0.45", lw=5, alpha=0.5, zorder=1, label=f"{label} (baseline)")
            continue
        (line,) = ax.plot(fractions, means, marker="o", label=label, zorder=3)
        if any(n > 1 for _, _, n in points.values()):
            ax.fill_between(fractions, low, high, color=line.get_color(), alpha=0.2, zorder=2)
    if chance is not None:
        ax.axhline(chance, color="k", ls="--", lw=1, label=f"chance ({chance:.2f})", zorder=2)
    if logx:  # ticks at the measured fractions, written plainly
        ticks = sorted({100 * row["fraction"] for row in rows})
        ax.set_xscale("log")
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{seeds_note(counts)}", fontsize=9)
    if value.endswith("acc"):
        ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


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


class CellCurves(WandbLogger):
    """The Lightning logger of one fit (one cell of the grid): its epoch-wise metrics (`train/loss`,
    `val/acc`, ...) go to the job's W&B run while it trains, under `<label>/` and against `<label>/epoch`.
    W&B makes a panel section of each key prefix, so every retraining gets its own section of training and
    validation curves in the one run of the job (rather than a run per cell, which would bury a sweep's
    job runs among hundreds of cell runs)."""

    def __init__(self, run, label: str):
        super().__init__(experiment=run)
        self.label = label
        self._defined: set[str] = set()

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        """Nothing: the job's configuration went to the run, flat, when the job started."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        epoch = f"{self.label}/epoch"
        logged = {f"{self.label}/{key}": value for key, value in metrics.items() if key != "epoch"}
        for key in logged.keys() - self._defined:  # exact names: they take precedence over Lightning's "*"
            self.experiment.define_metric(key, step_metric=epoch)
            self._defined.add(key)
        # Lightning adds the epoch to every metrics dict logged without a `step` metric (roar logs none).
        self.experiment.log({**logged, epoch: metrics["epoch"]})


def fit_logger(logger, label: str) -> CellCurves | None:
    """The logger a fit labelled `label` sends its curves to: W&B's run of the job, if that is the logger."""
    return CellCurves(logger.experiment, label) if isinstance(logger, WandbLogger) else None


class SeedCurves:
    """The degradation curve as W&B draws it natively with its seed bands: one W&B run per retraining seed,
    in the job's group (job type `seed`), each holding that seed's `<value>/<method>` against the x-axis
    `out.xname` (the % of pixels removed). W&B groups a project's runs by their group, and a line plot of a
    grouped key draws the mean over the group's runs with a band (set to ± std in the panel's grouping
    settings): the mean ± std over seeds. The job runs and the report run log no `<value>/<method>` keys,
    so only the seed runs enter that mean. A cell is added as it finishes (`add`); `complete` adds what was
    not, and closes the runs."""

    def __init__(self, logger: WandbLogger, out: Outputs):
        self.main, self.save_dir, self.out = logger.experiment, logger.save_dir, out
        self.runs: dict[int, object] = {}  # seed -> its W&B run
        self.defined: set[tuple[int, str]] = set()  # (seed, key) given the x-axis
        self.added: set[tuple] = set()  # (method, fraction, seed) logged

    def add(self, row: dict) -> None:
        run = self.runs.get(row["seed"]) or self._start(row["seed"])
        key = f"{self.out.value}/{row['method']}"
        if (row["seed"], key) not in self.defined:
            run.define_metric(key, step_metric=self.out.xname)
            self.defined.add((row["seed"], key))
        run.log({self.out.xname: 100 * row["fraction"], key: row[self.out.value]})
        self.added.add((row["method"], row["fraction"], row["seed"]))

    def complete(self, rows: list[dict]) -> None:
        for row in sorted(rows, key=lambda r: (r["method"], r["fraction"], r["seed"])):
            if (row["method"], row["fraction"], row["seed"]) not in self.added:
                self.add(row)
        for run in self.runs.values():
            run.finish()

    def _start(self, seed: int):
        import wandb  # already loaded by the logger

        self.runs[seed] = wandb.init(
            project=self.main.project,
            group=self.main.group,
            job_type="seed",
            name=f"{self.main.name} · seed {seed}",
            dir=self.save_dir,
            mode=self.main.settings.mode,
            config={**dict(self.main.config), "retraining_seed": seed},
            reinit="create_new",  # beside the job's run, which stays open
        )
        return self.runs[seed]


def log_results(
    logger, rows: list[dict], curve_png: Path, galleries: list[Path] = (), out: Outputs = Outputs()
) -> None:
    """Send the results to a Lightning logger: where it takes them (W&B) the results and curve tables (mean
    and seed std of `out.value` per method and fraction), the curve (an interactive chart of the means, one
    line per method, and the plotted PNG with its seed bands) and the saliency galleries. Other loggers get
    the per-fraction mean and std as metrics (step = % removed by default); a W&B run does not, as its
    `<value>/<method>` keys belong to the seed runs (`SeedCurves`), whose band the run would distort."""
    value = out.value
    table = curves(rows, value)
    if not isinstance(logger, WandbLogger):
        for fraction in sorted({row["fraction"] for row in rows}):
            at_fraction = {method: points[fraction] for method, points in table.items() if fraction in points}
            metrics = {f"{value}/{method}": mean for method, (mean, _, _) in at_fraction.items()}
            metrics |= {f"{value}_std/{method}": std for method, (_, std, _) in at_fraction.items()}
            logger.log_metrics(metrics, step=round(out.steps_per_unit * fraction))
    if hasattr(logger, "log_table"):
        ordered = sorted(rows, key=lambda r: (r["method"], r["fraction"], r["seed"]))
        logger.log_table(
            "results", columns=list(out.columns), data=[[r[c] for c in out.columns] for r in ordered]
        )
        logger.log_table(
            "curve",
            columns=["method", "fraction", f"mean_{value}", f"std_{value}", "seeds"],
            data=[[m, f, *point] for m, points in sorted(table.items()) for f, point in points.items()],
        )
    if isinstance(logger, WandbLogger):
        import wandb  # already loaded by the logger; runs without W&B need not pay for it

        methods = sorted(table)
        logger.experiment.log(
            {
                f"{curve_png.stem}_chart": wandb.plot.line_series(
                    xs=[[100 * f for f in table[m]] for m in methods],
                    ys=[[mean for mean, _, _ in table[m].values()] for m in methods],
                    keys=methods,
                    title=f"{out.ylabel} (mean over seeds)",
                    xname=out.xname,
                )
            }
        )
    if hasattr(logger, "log_image"):
        logger.log_image(curve_png.stem, [str(curve_png)])
        if galleries:
            logger.log_image(
                "saliency_gallery", [str(g) for g in galleries], caption=[g.parent.name for g in galleries]
            )
    logger.save()


def publish(
    rows: list[dict],
    out_dir: Path,
    logger=None,
    galleries=(),
    outputs: Outputs = Outputs(),
    seed_curves: SeedCurves | None = None,
) -> None:
    """Everything a report holds, written to `out_dir` (`outputs.csv`, `outputs.curve`, summary.md with the
    table and the ranking by area under the curve, summary.csv with the ranking, per_image.pt with the rows'
    per-image values), sent to `logger`, with the rows `seed_curves` has not shown yet, and printed; every
    task, and `roar-report` over a sweep, ends here. The per-image values go to per_image.pt only: the CSV,
    the logger and the summary hold each row's `outputs.value`."""
    write_csv(rows, out_dir / outputs.csv, outputs.columns)
    write_per_image(rows, out_dir / PER_IMAGE, outputs.value)
    plot_curve(rows, out_dir / outputs.curve, outputs.title, value=outputs.value, xlabel=outputs.xlabel,
               ylabel=outputs.ylabel, chance=outputs.chance, logx=outputs.logx)  # fmt: skip
    table = summary_table(rows, outputs.value)
    ranking = summarize(rows, outputs.lower_is_better, outputs.value, outputs.reference)
    ranked = ranking_markdown(ranking, outputs.value, outputs.lower_is_better)
    caption = f"{outputs.ylabel[0].upper()}{outputs.ylabel[1:]}, {seeds_note(seed_counts(rows))}."
    with atomic_write(out_dir / "summary.md") as tmp:
        tmp.write_text(f"# {outputs.title}\n\n{caption}\n\n{table}\n\n{ranked}\n")
    write_ranking(ranking, out_dir / "summary.csv")
    if seed_curves is not None:
        seed_curves.complete(rows)
    if logger is not None:
        log_results(logger, rows, out_dir / outputs.curve, list(galleries), outputs)
        close_logger(logger)
    print(f"\n{caption}\n\n{table}\n\n{ranked}")


def close_logger(logger) -> None:
    logger.finalize("success")
    if hasattr(logger, "experiment") and hasattr(logger.experiment, "finish"):  # W&B: close the run
        logger.experiment.finish()
