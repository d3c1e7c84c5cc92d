"""roar: a remove-and-retrain (ROAR) benchmark for saliency methods, built around FullGrad.

As a library: `roar.run(overrides) -> RunResult` and `roar.compose(overrides)` (roar/api.py); the
configuration groups ship inside the package (roar/conf/, `roar.CONFIG_DIR`)."""

import os

# OpenMP threads that wait for work sleep instead of spinning (libgomp spins by default, a busy-wait that
# competes for the cores with the very threads it waits for, and with every other process on a shared
# machine; docs/threads.md has the measurements). libgomp reads this when it loads, so it is set here,
# where every entry point (`roar`, `roar-report`, `python -m roar`) starts, before torch is imported.
# Subprocesses (DDP workers, SLURM tasks started from here) inherit it; a value already set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Figures are only ever written to files: matplotlib's file-only backend, chosen once here, before any
# module imports pyplot (a backend the user chose, in the environment or already loaded, is kept).
os.environ.setdefault("MPLBACKEND", "Agg")

__version__ = "0.1.0"

__all__ = ["CONFIG_DIR", "ConfigError", "RunResult", "compose", "run"]


def __getattr__(name: str):
    # The library interface imports the whole application (Hydra, Lightning, every method); importing it
    # on first use keeps `import roar.runtime.cache` (a SLURM job's lock, a test's subprocess) light.
    if name in ("RunResult", "compose", "run"):
        from roar import api

        return getattr(api, name)
    if name == "CONFIG_DIR":
        from roar.conf import CONFIG_DIR

        return CONFIG_DIR
    if name == "ConfigError":
        from roar.errors import ConfigError

        return ConfigError
    raise AttributeError(f"module 'roar' has no attribute {name!r}")
