"""The `roar` command: one Hydra application (also `python -m roar`) dispatching to the selected task."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from roar.config import ConfigError, check_group_choices, validate
from roar.interrupt import Interrupted, interrupts_raise
from roar.sweep import register_resolvers

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
register_resolvers()


def experiment(cfg: DictConfig) -> Path:
    """Validate the configuration, then run its task (`task=roar` by default); returns the run directory."""
    validate(cfg)
    task = instantiate(cfg.task)
    try:
        return task(cfg)
    except InstantiationException as error:
        # A ConfigError raised while building something from the config (a dataset that is not where it was
        # expected, an unknown model name) is reported as such, not as Hydra's wrapped traceback.
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        raise


def _fail(error: ConfigError) -> None:
    print(f"roar: error: {error}", file=sys.stderr)
    sys.exit(2)


def _stopped(cfg: DictConfig, interrupt: Interrupted) -> None:
    """Say what an interrupted run kept and how to resume; exit as a process ended by SIGINT does."""
    kept = "".join(f"; {note}" for note in interrupt.kept)
    print(
        f"\nroar: interrupted. Kept: every stage finished so far, in {cfg.paths.cache_dir}{kept}. "
        "Run the same command again to resume: finished stages are reused and an interrupted training "
        "continues from its last.ckpt.",
        file=sys.stderr,
    )
    sys.exit(130)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        with interrupts_raise():
            run_dir = experiment(cfg)
    except ConfigError as error:
        _fail(error)
    except Interrupted as interrupt:
        _stopped(cfg, interrupt)
    print(f"\nrun directory: {run_dir}")


def main() -> None:
    try:
        check_group_choices([a for a in sys.argv[1:] if "=" in a], CONFIG_DIR)
    except ConfigError as error:
        _fail(error)
    _hydra_main()
