"""The `roar` command: one Hydra application (also `python -m roar`) dispatching to the selected task."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from roar import CONFIG_DIR
from roar.config import ConfigError, check_group_choices, validate
from roar.data.vision import image_folder
from roar.sweep import register_resolvers

register_resolvers()
OmegaConf.register_new_resolver("image_folder", image_folder, replace=True)
# Hydra names the command's job after the file holding its main (this one): the run's log is app.log.
JOB_NAME = "app"


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


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run_dir = experiment(cfg)
    except ConfigError as error:
        _fail(error)
    print(f"\nrun directory: {run_dir}")


def main() -> None:
    try:
        check_group_choices([a for a in sys.argv[1:] if "=" in a], CONFIG_DIR)
    except ConfigError as error:
        _fail(error)
    _hydra_main()
