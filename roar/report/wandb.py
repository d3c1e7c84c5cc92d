"""The experiment logger's side of a run: W&B's run of the job, one panel section per fit while it trains
(`CellCurves`), one run per retraining seed for the band chart (`SeedCurves`), and the results at the end
(`log_results`)."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from roar.report.results import Outputs, curves


class RoarWandbLogger(WandbLogger):
    """Lightning's W&B logger (roar/conf/logger/wandb.yaml), less the `anonymous=None` it always hands to
    `wandb.init`: wandb 0.19+ answers any value of that retired setting with a warning on every run."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._wandb_init.pop("anonymous", None)  # None: a Lightning that no longer sets it


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


def close_logger(logger) -> None:
    logger.finalize("success")
    if hasattr(logger, "experiment") and hasattr(logger.experiment, "finish"):  # W&B: close the run
        logger.experiment.finish()
