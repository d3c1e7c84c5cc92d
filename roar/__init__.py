"""roar: a remove-and-retrain (ROAR) benchmark for saliency methods, built around FullGrad.

As a library: `roar.run(overrides) -> RunResult` and `roar.compose(overrides)` (roar/api.py)."""

from pathlib import Path

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
