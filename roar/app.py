"""The `roar` command: one Hydra application (also `python -m roar`) dispatching to the selected task."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from roar.config import ConfigError, check_group_choices, validate
from roar.console import silence_known_warnings
from roar.sweep import register_resolvers

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
register_resolvers()


def experiment(cfg: DictConfig) -> Path:
    """Validate the configuration, then run its task (`task=roar` by default); returns the run directory."""
    silence_known_warnings()
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


# Written into a run directory whose job failed: the error line, or the traceback of an unexpected error.
FAILED = "failed.txt"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    failed = Path(HydraConfig.get().runtime.output_dir) / FAILED
    failed.unlink(missing_ok=True)  # left by an earlier, failed run into the same directory
    try:
        run_dir = experiment(cfg)
    except ConfigError as error:
        failed.write_text(f"roar: error: {error}\n")
        _fail(error)
    except BaseException:  # a crash, or an interrupt: the directory says so, then it goes on as before
        failed.write_text(traceback.format_exc())
        raise
    print(f"\nrun directory: {run_dir}")


def main() -> None:
    try:
        check_group_choices([a for a in sys.argv[1:] if "=" in a], CONFIG_DIR)
    except ConfigError as error:
        _fail(error)
    _hydra_main()
