"""roar: a remove-and-retrain (ROAR) benchmark for saliency methods, built around FullGrad."""

import os

# OpenMP threads that wait for work sleep instead of spinning (libgomp spins by default, a busy-wait that
# competes for the cores with the very threads it waits for, and with every other process on a shared
# machine; docs/threads.md has the measurements). libgomp reads this when it loads, so it is set here,
# where every entry point (`roar`, `roar-report`, `python -m roar`) starts, before torch is imported.
# Subprocesses (DDP workers, SLURM tasks started from here) inherit it; a value already set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
