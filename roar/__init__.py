"""roar: a remove-and-retrain (ROAR) benchmark for saliency methods, built around FullGrad.

As a library: `roar.run(overrides) -> RunResult` and `roar.compose(overrides)` (roar/api.py)."""

import os
from pathlib import Path

# OpenMP threads that wait for work sleep instead of spinning (libgomp spins by default, a busy-wait that
# competes for the cores with the very threads it waits for, and with every other process on a shared
# machine; docs/threads.md has the measurements). libgomp reads this when it loads, so it is set here,
# where every entry point (`roar`, `roar-report`, `python -m roar`) starts, before torch is imported.
# Subprocesses (DDP workers, SLURM tasks started from here) inherit it; a value already set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# Hydra's primary config directory (conf/ at the repository root, beside this package).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"

__all__ = ["CONFIG_DIR", "RunResult", "compose", "run"]


def __getattr__(name: str):
    # The library interface imports the whole application (Hydra, Lightning, every method); importing it
    # on first use keeps `import roar.cache` (a SLURM job's lock, a test's subprocess) as light as it was.
    if name in ("RunResult", "compose", "run"):
        from roar import api

        return getattr(api, name)
    raise AttributeError(f"module 'roar' has no attribute {name!r}")
