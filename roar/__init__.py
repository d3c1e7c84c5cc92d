"""roar: a remove-and-retrain (ROAR) benchmark for saliency methods, built around FullGrad."""

from pathlib import Path

__version__ = "0.1.0"

# Hydra's primary config directory (conf/ at the repository root, beside this package).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"

from roar.api import RunResult, compose, run  # noqa: E402  (the library interface needs CONFIG_DIR)

__all__ = ["CONFIG_DIR", "RunResult", "compose", "run"]
