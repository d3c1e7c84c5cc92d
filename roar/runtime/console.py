"""What a run prints: library warnings known to be harmless silenced once, here; per-training progress bars
only on a terminal; and one progress line per cell of the grid, with the cell's number of the total and an
estimate of the time left (terminal and SLURM log file alike)."""

from __future__ import annotations

import logging
import sys
import time
import warnings

log = logging.getLogger("roar.progress")

# (message pattern, why it is harmless here). Each is raised by a library on every training; none
# says anything about the run that roar does not already handle.
KNOWN_HARMLESS = (
    # Lightning's own pytree helper builds torch's deprecated LeafSpec (lightning 2.6, torch 2.10+); nothing
    # roar can change, and it is gone once Lightning updates the helper.
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated.*", FutureWarning),
    # The data are tensors in memory (on the training device): worker processes would only add copies.
    (r".*does not have many workers.*", UserWarning),
    # A fit resumed after a crash reuses its checkpoint directory, on purpose (roar/runtime/cache.py).
    (r".*exists and is not empty.*", UserWarning),
    # Lightning's hint where SLURM's srun is installed: each roar job trains in one process, which needs no
    # srun (a sweep's jobs are started by the submitit launcher).
    (r".*The `srun` command is available on your system.*", UserWarning),
)


def silence_known_warnings() -> None:
    """Ignore the warnings of KNOWN_HARMLESS; every other warning still shows, once per place that raises it
    (Python's default), which holds as long as nothing resets the warning filters per training."""
    for pattern, category in KNOWN_HARMLESS:
        warnings.filterwarnings("ignore", pattern, category)
    # Lightning's INFO lines (accelerator summary, checkpoint restores, tips) repeat for every one of the
    # many fits. Importing it first: its import sets its logger to INFO, which would undo a level set before.
    import pytorch_lightning  # noqa: F401

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)


def interactive() -> bool:
    """Whether progress bars can redraw in place: stderr (where tqdm draws) is a terminal. A SLURM log
    file or a pipe gets one line per training instead of carriage-return bars."""
    return sys.stderr.isatty()


def duration(seconds: float) -> str:
    """A time span as a person reads it in a log line: 4.2 s, 35 s, 12 min, 2.5 h."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def outcome(event: dict) -> str:
    """A stage's stages.csv record in words: `reused` (from the cache), or `computed in 4.2 s`."""
    status = event["status"]
    return status if status == "reused" else f"{status} in {duration(event['seconds'])}"


class GridProgress:
    """Counts the trainings of a grid and logs one line as each is done (computed or reused): its name, its
    number of the total, its accuracies and the time left, estimated from the time the computed cells took so
    far (saliency maps computed in between included); reused cells cost no time and do not count in it."""

    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.computed = 0
        self.computed_seconds = 0.0
        self._since = time.monotonic()

    def cell(self, name: str, event: dict, trained: dict) -> None:
        """Count the training `name` as done; `event` is its stages.csv record, `trained` its accuracies."""
        now = time.monotonic()
        self.done += 1
        status = event["status"]
        if status != "reused":
            self.computed += 1
            self.computed_seconds += now - self._since
        self._since = now
        remaining = self.total - self.done
        if remaining == 0:
            left = "grid done"
        elif self.computed:
            left = f"ETA {duration(remaining * self.computed_seconds / self.computed)}"
        else:
            left = "ETA unknown (all cells so far came from the cache)"
        log.info(
            "cell %d/%d %s: %s, val acc %.3f, test acc %.3f | %s",
            self.done, self.total, name, outcome(event), trained["val_acc"], trained["test_acc"], left,
        )  # fmt: skip
