"""The `roar` command: one Hydra application (also `python -m roar`) dispatching to the selected task."""

from __future__ import annotations

import errno
import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, InstantiationException, OverrideParseException
from hydra.utils import instantiate
from omegaconf import DictConfig

from roar.conf import CONFIG_DIR, CONFIG_MODULE
from roar.config import check_group_choices, check_writable, validate
from roar.config.resolvers import register_resolvers
from roar.errors import ConfigError
from roar.runtime import distributed
from roar.runtime.console import silence_known_warnings
from roar.runtime.interrupt import Interrupted, interrupts_raise
from roar.runtime.threads import apply_thread_policy

register_resolvers()
# Hydra names the command's job after the file holding its main (this one): the run's log is app.log.
JOB_NAME = "app"


def experiment(cfg: DictConfig) -> Path:
    """Validate the configuration, set the thread count (roar/runtime/threads.py), start the process group
    of a multi-task job (roar/runtime/distributed.py), then run its task (`task=roar` by default); returns
    the run directory."""
    silence_known_warnings()
    validate(cfg)
    apply_thread_policy()
    check_writable(cfg)
    distributed.start(cfg.trainer)
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


# Written into a run directory whose job failed: the error line, or the traceback of an unexpected error.
FAILED = "failed.txt"


def _record_failure(failed: Path, text: str) -> None:
    """Leave the reason in the run directory, where the directory can take it (it may be the problem)."""
    try:
        failed.write_text(text)
    except OSError:
        pass


@hydra.main(version_base="1.3", config_path=CONFIG_MODULE, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    failed = Path(HydraConfig.get().runtime.output_dir) / FAILED
    failed.unlink(missing_ok=True)  # left by an earlier, failed run into the same directory
    try:
        with interrupts_raise():
            run_dir = experiment(cfg)
    except ConfigError as error:
        _record_failure(failed, f"roar: error: {error}\n")
        _fail(error)
    except Interrupted as interrupt:
        _record_failure(failed, traceback.format_exc())
        _stopped(cfg, interrupt)
    except Exception as error:  # here, not in main(), so that Hydra adds no line of its own
        _record_failure(failed, traceback.format_exc())
        _fail_on_filesystem_error(error)
        raise
    print(f"\nrun directory: {run_dir}")


# Errors of the filesystem a run writes to, and what to do about them: one line, not a traceback.
_WRITABLE = "choose a writable place (hydra.run.dir=..., paths.cache_dir=...)"
_FREE_SPACE = (
    "the stages finished so far are kept in the cache: free space and rerun the same command to continue"
)
FILESYSTEM_ERRORS = {errno.EACCES: _WRITABLE, errno.EPERM: _WRITABLE, errno.EROFS: _WRITABLE,
                     errno.ENOSPC: _FREE_SPACE, errno.EDQUOT: _FREE_SPACE}  # fmt: skip


def _fail_on_filesystem_error(error: BaseException) -> None:
    """Exit with one line if an OSError of FILESYSTEM_ERRORS is behind `error` (itself, or what it was raised
    from: Python's logging reports a log file it cannot open as a ValueError from one)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in FILESYSTEM_ERRORS:
            where = f"cannot write {error.filename}" if error.filename else "cannot write"
            _fail(ConfigError(f"{where}: {error.strerror}; {FILESYSTEM_ERRORS[error.errno]}"))
        error = error.__cause__ or error.__context__


def main() -> None:
    try:
        check_group_choices([a for a in sys.argv[1:] if "=" in a], CONFIG_DIR)
    except ConfigError as error:
        _fail(error)
    # Hydra prints what it raises as a traceback with exit status 1 unless told to raise it: raised, the
    # errors of the command line and of the filesystem (a run directory Hydra cannot create) become one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        _hydra_main()
    except (ConfigCompositionException, OverrideParseException) as error:  # e.g. a key that does not exist
        _fail(ConfigError(" ".join(line.strip() for line in str(error).splitlines() if line.strip())))
    except Exception as error:  # before the job's own code runs: Hydra creating the run directory
        _fail_on_filesystem_error(error)
        raise
