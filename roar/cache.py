"""A content-addressed cache of pipeline artifacts, safe to share between concurrent jobs.

Each artifact is keyed by the configuration values that determine it. It is written to a temporary file
and renamed into place, guarded by a file lock (concurrent jobs needing the same stage compute it once;
the others wait, then load it), and recorded with its SHA-256 in a manifest written last: an artifact
without a manifest, or whose bytes do not match it, is treated as missing and recomputed. Artifacts are
loaded with `torch.load(weights_only=True)`, which cannot run code.

The lock is an OS lock (`fcntl.flock`) on `<stage>/<key>.lock`: the kernel releases it when its holder dies,
even by `kill -9` or preemption, so no stale lock can block a later job. A computation's scratch directory
(`<stage>/<key>/work`) survives such a death, so the next job to take the lock resumes from what the dead
one left there (a training stage keeps its last checkpoint there); it is removed once the artifact is stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

ARTIFACT, MANIFEST, WORKDIR, OWNER = "artifact.pt", "manifest.json", "work", "owner.json"
# Bump when a stage's computation changes in a way its configuration does not show.
FORMAT_VERSION = 1


def spec_key(spec: dict[str, Any]) -> str:
    canonical = json.dumps({"format": FORMAT_VERSION, **spec}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class StageCache:
    root: Path
    events: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self):
        self.root = Path(self.root)

    def directory(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def load(self, stage: str, key: str) -> dict | None:
        """The artifact, or None where it is missing, incomplete or corrupted."""
        directory = self.directory(stage, key)
        try:
            manifest = json.loads((directory / MANIFEST).read_text())
            if _sha256(directory / ARTIFACT) != manifest["sha256"]:
                log.warning("cache: %s/%s does not match its checksum; recomputing", stage, key)
                return None
            return torch.load(directory / ARTIFACT, map_location="cpu", weights_only=True)
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return None
        except (RuntimeError, EOFError, pickle.UnpicklingError) as error:  # unreadable despite its checksum
            log.warning("cache: %s/%s cannot be loaded (%s); recomputing", stage, key, error)
            return None

    def get_or_compute(
        self, stage: str, spec: dict[str, Any], compute: Callable[[Path], dict], about: dict | None = None
    ) -> dict:
        """The artifact of `stage` for `spec`; `compute(workdir)` runs only if no valid one exists.

        `workdir` is the computation's scratch directory. It persists until the artifact is stored, so a
        computation killed mid-way finds there what it had written when it is run again.

        The stage is recorded in `events` (stages.csv) with `about` (what a person reads the stage by:
        method, fraction, seed, fill), its key, whether it was computed, resumed or reused, and the seconds
        it took, waiting for another job included.
        """
        started = time.monotonic()
        key = spec_key(spec)
        directory = self.directory(stage, key)
        status = "reused"
        artifact = self.load(stage, key)
        if artifact is None:
            directory.mkdir(parents=True, exist_ok=True)
            with self._lock(stage, key):
                artifact = self.load(stage, key)  # another job may have finished it while we waited
                if artifact is None:
                    workdir = directory / WORKDIR
                    status = "resumed" if workdir.is_dir() and any(workdir.iterdir()) else "computed"
                    if status == "resumed":
                        log.info("cache: %s/%s resumes from the work a stopped job left", stage, key)
                    artifact = self._compute(stage, spec, directory, compute)
        if status == "reused":  # the stage's own line (roar.console.GridProgress) says so, with its name
            log.debug("cache: reusing %s/%s", stage, key)
        seconds = round(time.monotonic() - started, 2)
        self.events.append(
            {"stage": stage, **(about or {}), "key": key, "status": status, "seconds": seconds}
        )
        return artifact

    @contextmanager
    def _lock(self, stage: str, key: str) -> Iterator[None]:
        """Hold the stage's lock; while waiting for it, say who holds it (host, pid, since when)."""
        directory = self.directory(stage, key)
        lock = FileLock(str(directory) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            try:
                owner = json.loads((directory / OWNER).read_text())
                holder = f"pid {owner['pid']} on {owner['host']} since {owner['since']}"
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                holder = "another job"
            log.info("cache: waiting for %s/%s, being computed by %s", stage, key, holder)
            lock.acquire()
        try:
            owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%F %T %Z")}
            _write_atomically(directory / OWNER, lambda tmp: tmp.write_text(json.dumps(owner)))
            yield
        finally:
            (directory / OWNER).unlink(missing_ok=True)
            lock.release()

    def _compute(self, stage: str, spec: dict, directory: Path, compute: Callable[[Path], dict]) -> dict:
        (directory / MANIFEST).unlink(missing_ok=True)
        # Temporary files of a writer that died before its rename: only the lock holder writes here.
        for stale in directory.glob(".*.tmp"):
            stale.unlink()
        workdir = directory / WORKDIR
        workdir.mkdir(exist_ok=True)
        artifact = compute(workdir)
        _write_atomically(directory / ARTIFACT, lambda tmp: torch.save(artifact, tmp))
        manifest = {
            "stage": stage,
            "spec": spec,
            "sha256": _sha256(directory / ARTIFACT),
            "format": FORMAT_VERSION,
        }
        _write_atomically(
            directory / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2, default=str))
        )
        shutil.rmtree(workdir, ignore_errors=True)
        return artifact
