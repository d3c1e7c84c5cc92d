"""The run directories a report reads: which there are, what each job ran with, and the logger a report may
start from a scanned job's configuration (only the classes roar/conf/logger/ offers: the scanned
directories are data, never code)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from roar.conf import CONFIG_DIR
from roar.errors import ConfigError


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


def job_choices(run_dir: Path) -> DictConfig:
    """The config group options a job ran with (task, dataset, model, ...)."""
    return OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices


def logger_classes() -> dict[str, type]:
    """The loggers a report may start, by their `_target_`: those roar/conf/logger/ offers, nothing else."""
    targets = {OmegaConf.load(path).get("_target_") for path in (CONFIG_DIR / "logger").glob("*.yaml")}
    return {target: get_class(target) for target in sorted(targets - {None})}


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
