"""`roar-report DIR [DIR ...]`: one report over the jobs of one or more sweeps (or single runs).

Every run directory under the DIRs (one holding `.hydra/config.yaml`, as Hydra writes for each job)
contributes its `results.csv` rows and any saliency gallery PNG. The merged rows go through the same
`report.publish` as a single run: results.csv, roar_curve.png, summary.md, the printed table, and a run
of the jobs' own logger (W&B: same project and mode, in the sweep's group, job type `report`, and one run
per seed for the band chart, `roar.report.SeedCurves`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from roar import report
from roar.config import ConfigError
from roar.sweep import run_name, sweep_group
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


def _first_difference(a, b, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')} ({a!r} vs {b!r})"


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
                f"{reference_dir} and {run_dir} differ in {_first_difference(reference, setting)}: "
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


def job_choices(run_dir: Path) -> DictConfig:
    """The config group options a job ran with (task, dataset, model, ...)."""
    return OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices


def report_logger(cfg: DictConfig, choices: DictConfig, out_dir: Path, sweep_dir: str, methods: list[str]):
    """The jobs' logger, writing to `out_dir`; for W&B a `report` run named after the experiment, in the
    jobs' group (the one they were given with logger.group, else the one `${sweep:group}` gave them)."""
    if not cfg.get("logger"):
        return None
    updates = {"save_dir": str(out_dir)}
    if "group" in cfg.logger:
        explicit = not OmegaConf.is_interpolation(cfg.logger, "group") and cfg.logger.group
        group = cfg.logger.group if explicit else sweep_group(choices, sweep_dir)
        updates |= {"group": group, "name": f"report: {run_name(choices, methods)}", "job_type": "report"}
    return instantiate(OmegaConf.merge(cfg.logger, updates))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="roar-report",
        description="Merge the results of sweeps (Hydra multirun directories) or runs into one report.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="sweep or run directories")
    parser.add_argument("--out", type=Path, help="where to write the report (default: the first DIR)")
    args = parser.parse_args(argv)
    out_dir = args.out or args.dirs[0]
    try:
        dirs = run_dirs(args.dirs)
        if not dirs:
            raise ConfigError(f"no run directories (with .hydra/config.yaml) under {args.dirs[0]}")
        rows = merged_rows(dirs)
    except ConfigError as error:
        print(f"roar-report: error: {error}", file=sys.stderr)
        sys.exit(2)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = job_config(dirs[0])
    galleries = sorted(g for d in dirs for g in d.glob("*gallery*.png"))
    methods = sorted({r["method"] for r in rows})
    logger = report_logger(cfg, job_choices(dirs[0]), out_dir, args.dirs[0].resolve().name, methods)
    out = roar_outputs(cfg)
    seed_curves = None
    if logger is not None:
        logger.log_hyperparams(
            {"runs": [str(d) for d in dirs], "methods": ",".join(methods),
             "fractions": sorted({r["fraction"] for r in rows}), "seeds": sorted({r["seed"] for r in rows})}
        )  # fmt: skip
        if isinstance(logger, WandbLogger):  # the sweep's band chart: its jobs made no seed runs
            seed_curves = report.SeedCurves(logger, out)
    report.publish(rows, out_dir, logger, galleries=galleries, outputs=out, seed_curves=seed_curves)
    print(f"\nreport of {len(dirs)} runs: {out_dir}")
