"""Files that a kill, a full disk or a power cut never leaves half-written, and what reading a torch file
that was cut short raises.

Every file roar writes (stage artifacts and manifests, training checkpoints, a run's results) goes through
`atomic_write`: the bytes go to a temporary file beside the target, on the target's own filesystem, are
fsynced, and the temporary file is then renamed over the target. A rename within one filesystem is atomic,
so a reader sees the old file or the new one, never a stub. (Lightning's own checkpoint writer stages the
file in $TMPDIR and *copies* it across where that is another filesystem: a kill mid-copy left a stub, and
the temporary file leaked.)
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

# What `torch.load` raises for a file cut short or garbled: loading a checkpoint cut at every 4 KiB boundary
# gave RuntimeError (zip directory not found), EOFError, and OSError EINVAL; garbage gives UnpicklingError
# or ValueError.
UNREADABLE_TORCH_FILE = (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError)


def temporary_name(path: Path) -> Path:
    """Where `atomic_write` stages `path`: a hidden file beside it, named after the writing process. A
    stage's lock holder removes the ones a killed writer left (`StageCache`)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yields the temporary path to write; once the block ends, its bytes replace `path` atomically and
    durably. If the block raises, `path` is untouched and the temporary file removed."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The rename itself is durable once the directory is synced. Some filesystems cannot fsync a
    # directory (EINVAL); the rename is still atomic there.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        with suppress(OSError):
            os.fsync(directory)
    finally:
        os.close(directory)


def save_torch(obj, path: Path) -> None:
    """`torch.save` through `atomic_write`, into a Python file object: torch's own writer, given a path,
    reports a full disk as a RuntimeError ("unexpected pos"), a Python file's write() as the OSError
    (ENOSPC) that the entry point turns into one line."""
    import torch  # here: roar.runtime.files is imported by code that does not need torch loaded

    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
