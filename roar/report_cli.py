"""`roar-report DIR [DIR ...]`: one report over the jobs of one or more sweeps (or single runs).

Every run directory under the DIRs (one holding `.hydra/config.yaml`, as Hydra writes for each job)
contributes its `results.csv` rows and any saliency gallery PNG. The merged rows go through the same
`report.publish` as a single run: results.csv, roar_curve.png, summary.md, the printed table, and a run
of the jobs' own logger (W&B: same project and mode, in the sweep's group, job type `report`, and one run
per seed for the band chart, `roar.report.SeedCurves`).

A sweep's own record of its jobs (`multirun.yaml`, which Hydra writes before the first job starts) says
which jobs there should be: a report that would miss some is refused, naming them, unless `--allow-partial`
asks for one marked partial. The scanned directories are data, never code: the report's logger is built only
from the classes conf/logger/ offers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import create_config_search_path
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from roar import agreement, report
from roar.app import CONFIG_DIR
from roar.config import ConfigError, first_difference
from roar.console import silence_known_warnings
from roar.sweep import run_name, sweep_group, unique_dir
from roar.tasks.roar import outputs as roar_outputs

# Jobs of one report may differ in the grid's axes (results.csv's method, fraction and seed columns) and in
# where and how they log; any other difference means they ran different experiments, which one report
# cannot hold.
FREE_KEYS = ("method", "roar.fractions", "seed", "seeds", "logger", "paths")


def run_dirs(roots: list[Path]) -> list[Path]:
    """Every Hydra run directory under `roots` (the sweep's own directory is none: it has no .hydra/)."""
    found = set()
    for root in roots:
        if not root.is_dir():
            raise ConfigError(f"{root}: no such directory")
        found |= {config.parent.parent for config in root.rglob(".hydra/config.yaml")}
    return sorted(found, key=lambda d: (str(d.parent), len(d.name), d.name))  # job 2 before job 10


def job_config(run_dir: Path) -> DictConfig:
    return OmegaConf.load(run_dir / ".hydra" / "config.yaml")


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
    """The union of the jobs' rows; a cell several jobs hold (fraction 0, shared by every job of a method and
    seed) must agree, and the jobs must share every configuration value that decides results but the
    grid's."""
    reference, reference_dir = None, None
    cells: dict[tuple, tuple[dict, Path]] = {}
    for run_dir in dirs:
        if not (run_dir / "results.csv").exists():
            continue
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
    return [row for row, _ in cells.values()]


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
    # The config loader expands sweeps over a group's options (method=glob(*)) from roar's conf/.
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONFIG_DIR)))
    try:
        overrides = OverridesParser.create(config_loader=loader).parse_overrides(
            [*params, *record.overrides.task]
        )
    except HydraException as error:
        raise ConfigError(f"{sweep_dir}/multirun.yaml: {str(error).splitlines()[0]}") from None
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


def logger_classes() -> dict[str, type]:
    """The loggers a report may start, by their `_target_`: those conf/logger/ offers, nothing else."""
    targets = {OmegaConf.load(path).get("_target_") for path in (CONFIG_DIR / "logger").glob("*.yaml")}
    return {target: get_class(target) for target in sorted(targets - {None})}


def job_choices(run_dir: Path) -> DictConfig:
    """The config group options a job ran with (task, dataset, model, ...)."""
    return OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices


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


def report_logger(cfg: DictConfig, out_dir: Path, run_dir: Path, identity: Callable[[], dict]):
    """The jobs' logger, writing to `out_dir`; for W&B a run with the group, name and job type `identity()`
    gives.

    `cfg` comes from a scanned directory (`run_dir`): its `_target_` is looked up among `logger_classes()`
    rather than instantiated, and its other values are passed as plain data, so no `_target_` in the file,
    at the top or nested, runs anything."""
    logger_class = allowed_logger(cfg, run_dir)
    if logger_class is None:
        return None
    # Absolute: W&B's service process, started by the first run of this process, resolves a relative
    # directory against its own working directory, not the caller's current one.
    updates = {"save_dir": str(Path(out_dir).resolve())}
    if "group" in cfg.logger:
        updates |= identity()
    arguments = OmegaConf.to_container(OmegaConf.merge(cfg.logger, updates), resolve=True)
    del arguments["_target_"]
    return logger_class(**arguments)


def allowed_logger(cfg: DictConfig, run_dir: Path) -> type | None:
    """The class of the scanned configuration's logger (None for none), if it is among `logger_classes()`;
    a ConfigError if it is not."""
    if not cfg.get("logger"):
        return None
    allowed = logger_classes()
    target = cfg.logger.get("_target_")
    if target not in allowed:
        raise ConfigError(
            f"{run_dir / '.hydra' / 'config.yaml'}: logger._target_ {target!r} is not a logger roar-report "
            f"starts (only {', '.join(allowed)})"
        )
    return allowed[target]


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


def agreement_identity(
    cfg: DictConfig, run_dir: Path, out_dir: Path, comparison: agreement.Comparison
) -> dict:
    """The agreement report's W&B run: job type `agreement`, named after its protocols, in a group of its
    own (its runs each have theirs)."""
    choices = job_choices(run_dir)
    protocols = ", ".join(p.name for p in comparison.protocols)
    return {"group": f"agreement · {choices['dataset']} · {choices['model']} ({out_dir.name})",
            "name": f"agreement: {protocols}", "job_type": "agreement"}  # fmt: skip


def agreement_main(args: argparse.Namespace) -> None:
    """`roar-report --agreement DIR ...`: roar.agreement's report over the runs, sent to the first run's
    logger (W&B: the rank and τ tables and the heat map)."""
    try:
        if args.bootstrap < 1:
            raise ConfigError(f"--bootstrap: {args.bootstrap}; give at least 1 replicate")
        comparison = agreement.compare(args.dirs, args.bootstrap, args.bootstrap_seed)
        cfg = job_config(args.dirs[0])
        allowed_logger(cfg, args.dirs[0])  # refused before anything is written
    except ConfigError as error:
        print(f"roar-report: error: {error}", file=sys.stderr)
        sys.exit(2)
    out_dir = args.out or Path(unique_dir(f"outputs/agreement_{datetime.now():%Y-%m-%d_%H-%M-%S}"))
    text = agreement.write_report(comparison, out_dir)
    logger = report_logger(
        cfg, out_dir, args.dirs[0], lambda: agreement_identity(cfg, args.dirs[0], out_dir, comparison)
    )
    if logger is not None:
        names = [p.name for p in comparison.protocols]
        logger.log_hyperparams(
            {"runs": [str(p.run_dir) for p in comparison.protocols], "protocols": names,
             "methods": ",".join(comparison.methods), "dropped": comparison.dropped,
             "bootstrap": comparison.replicates, "bootstrap_seed": comparison.seed}
        )  # fmt: skip
        pairs = comparison.pairs
        if hasattr(logger, "log_table"):
            logger.log_table("agreement", columns=list(pairs[0]), data=[list(p.values()) for p in pairs])
            logger.log_table(
                "ranks",
                columns=["method", *names],
                data=[[m, *(p.ranks[m] for p in comparison.protocols)] for m in comparison.methods],
            )
        else:
            logger.log_metrics({f"tau/{p['protocol_a']} vs {p['protocol_b']}": p["tau"] for p in pairs})
        if hasattr(logger, "log_image"):
            logger.log_image("agreement", [str(out_dir / agreement.FIGURE)])
        report.close_logger(logger)
    print(f"\n{text}\nagreement report of {len(comparison.protocols)} runs: {out_dir}")
