"""`roar-report DIR [DIR ...]`: one report over the jobs of one or more sweeps (or single runs).

Every run directory under the DIRs (one holding `.hydra/config.yaml`, as Hydra writes for each job)
contributes its `results.csv` rows, their per-image values (`per_image.pt`) and any saliency gallery PNG.
The merged rows go through the same `report.publish` as a single run: results.csv, roar_curve.png,
summary.md with its intervals, per_image.pt, the printed table, and a run of the jobs' own logger (W&B:
same project and mode, in the sweep's group, job type `report`, and one run per seed for the band chart,
`roar.report.SeedCurves`).

A sweep's own record of its jobs (`multirun.yaml`, which Hydra writes before the first job starts) says
which jobs there should be: a report that would miss some is refused, naming them, unless `--allow-partial`
asks for one marked partial. The scanned directories are data, never code: the report's logger is built only
from the classes roar/conf/logger/ offers.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import create_config_search_path
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from roar import report
from roar.cli.agreement import agreement_main
from roar.cli.jobs import job_choices, job_config, report_logger, run_dirs
from roar.conf import CONFIG_DIR
from roar.config import first_difference
from roar.errors import ConfigError, first_line
from roar.report.naming import run_name, sweep_group
from roar.runtime.console import silence_known_warnings
from roar.tasks.roar import outputs as roar_outputs

# Jobs of one report may differ in the grid's axes (results.csv's method, fraction and seed columns) and in
# where and how they log; any other difference means they ran different experiments, which one report
# cannot hold.
FREE_KEYS = ("method", "roar.fractions", "seed", "seeds", "logger", "paths")


def _experiment(cfg: DictConfig) -> dict:
    """The configuration values that decide the results, but for the grid's axes."""
    cfg = cfg.copy()
    for key in FREE_KEYS:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if node is not None and leaf in node:
            del node[leaf]
    return OmegaConf.to_container(cfg, resolve=False)


def merged_rows(dirs: list[Path]) -> list[dict]:
    """The union of the jobs' rows, each with its per-image values where the job's per_image.pt has them (as
    a single run's rows: the summary's intervals over test images need them); a cell several jobs hold
    (fraction 0, shared by every job of a method and seed) must agree, and the jobs must share every
    configuration value that decides results but the grid's."""
    reference, reference_dir = None, None
    cells: dict[tuple, tuple[dict, Path]] = {}
    per_image: dict[tuple, object] = {}  # cell -> its per-image values (a tensor)
    for run_dir in dirs:
        if not (run_dir / "results.csv").exists():
            continue
        if (run_dir / report.PER_IMAGE).is_file():
            for entry in report.read_per_image(run_dir / report.PER_IMAGE)["rows"]:
                per_image.setdefault((entry["method"], entry["fraction"], entry["seed"]), entry["values"])
        setting = _experiment(job_config(run_dir))
        if reference is None:
            reference, reference_dir = setting, run_dir
        elif setting != reference:
            raise ConfigError(
                f"{reference_dir} and {run_dir} differ in {first_difference(reference, setting)}: "
                "one report covers one configuration; report them separately"
            )
        for row in report.read_csv(run_dir / "results.csv"):
            cell = (row["method"], row["fraction"], row["seed"])
            if cell in cells and cells[cell][0] != row:
                raise ConfigError(
                    f"{cells[cell][1]} and {run_dir} disagree on {row['method']} at "
                    f"{100 * row['fraction']:g}% removed, seed {row['seed']} (the grid has two base models "
                    "per seed, e.g. a sweep over seed with seeds=[...] fixed); report them separately"
                )
            cells[cell] = (row, run_dir)
    if not cells:
        raise ConfigError(
            f"no results.csv in any run directory under {', '.join(map(str, dirs))} "
            "(roar-report merges task=roar runs)"
        )
    return [
        {**row, "per_image": per_image[cell]} if cell in per_image else row
        for cell, (row, _) in cells.items()
    ]


def sweep_jobs(sweep_dir: Path) -> list[list[str]]:
    """The overrides of every job the multirun in `sweep_dir` launched, in job-number order, from its
    own record: the command line's overrides in `multirun.yaml`, expanded as Hydra's basic sweeper does."""
    record = OmegaConf.load(sweep_dir / "multirun.yaml").hydra
    sweeper = record.sweeper.get("_target_", "")
    if get_class(sweeper) is not BasicSweeper:
        raise ConfigError(
            f"{sweep_dir}: a sweep by {sweeper}; roar-report reads the jobs of Hydra's basic sweeper"
        )
    params = [f"{key}={value}" for key, value in (record.sweeper.get("params") or {}).items()]
    # The config loader expands sweeps over a group's options (method=glob(*)) from roar's roar/conf/.
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONFIG_DIR)))
    try:
        overrides = OverridesParser.create(config_loader=loader).parse_overrides(
            [*params, *record.overrides.task]
        )
    except HydraException as error:
        raise ConfigError(f"{sweep_dir}/multirun.yaml: {first_line(error)}") from None
    batches = BasicSweeper.split_arguments(overrides, record.sweeper.get("max_batch_size"))
    return [job for batch in batches for job in batch]


def missing_jobs(roots: list[Path], dirs: list[Path]) -> list[str]:
    """Each job of every sweep under `roots` whose run directory holds no results.csv (it failed, was
    killed, or never started), as `<sweep dir> job <n> (<overrides>)`."""
    missing = []
    for root in roots:
        for record in sorted(root.rglob("multirun.yaml")):
            sweep_dir = record.parent
            # A job's run directory records the job's overrides (wherever hydra.sweep.subdir put it).
            finished = {
                tuple(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
                for run_dir in dirs
                if run_dir.is_relative_to(sweep_dir) and (run_dir / "results.csv").exists()
            }
            jobs = sweep_jobs(sweep_dir)
            shared = set.intersection(*(set(job) for job in jobs))  # a job is named by what it sweeps
            missing += [
                f"{sweep_dir} job {number} ({','.join(o for o in job if o not in shared) or ','.join(job)})"
                for number, job in enumerate(jobs)
                if tuple(job) not in finished
            ]
    return missing


def _listed(items: list[str], most: int = 5) -> str:
    shown = "; ".join(items[:most])
    return shown if len(items) <= most else f"{shown}; and {len(items) - most} more"


def report_identity(cfg: DictConfig, sweep_dir: str, run_dir: Path, methods: list[str]) -> dict:
    """A sweep report's W&B run: named after the experiment, job type `report`, in the jobs' group (the one
    they were given with logger.group, else the one `${sweep:group}` gave them)."""
    explicit = not OmegaConf.is_interpolation(cfg.logger, "group") and cfg.logger.group
    group = cfg.logger.group if explicit else sweep_group(job_choices(run_dir), sweep_dir)
    return {
        "group": group,
        "name": f"report: {run_name(job_choices(run_dir), methods)}",
        "job_type": "report",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="roar-report",
        description="Merge the results of sweeps (Hydra multirun directories) or runs into one report.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="sweep or run directories")
    parser.add_argument(
        "--out",
        type=Path,
        help="where to write the report (default: the first DIR; with --agreement a new outputs/agreement_*)",
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="report a sweep some of whose jobs have no results, marked partial (refused otherwise)",
    )
    parser.add_argument(
        "--agreement",
        action="store_true",
        help="each DIR is one run of a protocol on the same base model: compare their method rankings "
        "(agreement.md, agreement.csv, agreement.png; docs/evaluation.md)",
    )
    parser.add_argument(
        "--bootstrap", type=int, default=1000, metavar="B", help="--agreement: bootstrap replicates (1000)"
    )
    parser.add_argument("--bootstrap-seed", type=int, default=0, help="--agreement: seed of the draws (0)")
    args = parser.parse_args(argv)
    silence_known_warnings()
    if args.agreement:
        agreement_main(args)
        return
    out_dir = args.out or args.dirs[0]
    try:
        dirs = run_dirs(args.dirs)
        if not dirs:
            raise ConfigError(f"no run directories (with .hydra/config.yaml) under {args.dirs[0]}")
        missing = missing_jobs(args.dirs, dirs)
        if missing and not args.allow_partial:
            raise ConfigError(
                f"{len(missing)} jobs have no results.csv: {_listed(missing)}; rerun the sweep with the "
                "same overrides to finish them (finished stages are reused), or report the rest with "
                "--allow-partial"
            )
        rows = merged_rows(dirs)
        cfg = job_config(dirs[0])
        methods = sorted({r["method"] for r in rows})
        sweep_dir = args.dirs[0].resolve().name
        logger = report_logger(
            cfg, out_dir, dirs[0], lambda: report_identity(cfg, sweep_dir, dirs[0], methods)
        )
    except ConfigError as error:
        print(f"roar-report: error: {error}", file=sys.stderr)
        sys.exit(2)
    out_dir.mkdir(parents=True, exist_ok=True)
    galleries = sorted(g for d in dirs for g in d.glob("*gallery*.png"))
    outputs = roar_outputs(cfg)
    if missing:  # --allow-partial: the title of summary.md, of the curve and of the W&B run's chart says so
        outputs = replace(outputs, title=f"{outputs.title} (partial: {len(missing)} jobs missing)")
    seed_curves = None
    if logger is not None:
        logger.log_hyperparams(
            {"runs": [str(d) for d in dirs], "methods": ",".join(methods),
             "fractions": sorted({r["fraction"] for r in rows}), "seeds": sorted({r["seed"] for r in rows}),
             "partial": bool(missing), "missing_jobs": missing}
        )  # fmt: skip
        if isinstance(logger, WandbLogger):  # the sweep's band chart: its jobs made no seed runs
            seed_curves = report.SeedCurves(logger, outputs)
    report.publish(rows, out_dir, logger, galleries=galleries, outputs=outputs, seed_curves=seed_curves)
    if missing:
        print(f"\npartial report, {len(missing)} jobs missing: {_listed(missing)}", file=sys.stderr)
    print(f"\n{'partial ' if missing else ''}report of {len(dirs)} runs: {out_dir}")
