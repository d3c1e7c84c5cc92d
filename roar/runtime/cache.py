"""A content-addressed cache of pipeline artifacts, safe to share between concurrent jobs.

Each artifact is keyed by the configuration values that determine it. It is written atomically
(`roar.runtime.files.atomic_write`), guarded by a file lock (concurrent jobs needing the same stage compute it
once; the others wait, then load it), and recorded with its stage, spec and SHA-256 in a manifest written
last. An artifact is used only if its manifest is readable, names this stage and a spec whose key is the
directory's own (an artifact copied under another key is not), and its bytes match the checksum; anything else
is logged once and recomputed. Artifacts are loaded with `torch.load(weights_only=True)`, which cannot run
code.

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

from roar.runtime.files import UNREADABLE_TORCH_FILE, atomic_write, save_torch

log = logging.getLogger(__name__)

ARTIFACT, MANIFEST, WORKDIR, OWNER = "artifact.pt", "manifest.json", "work", "owner.json"
# Bump when a stage's computation changes in a way its configuration does not show.
FORMAT_VERSION = 1


def spec_key(spec: dict[str, Any]) -> str:
    """The key of `spec`: a hash of its canonical JSON. The spec goes through JSON once first, so that the
    spec a manifest records gives back the same key (integer and string dict keys, a tuple and a list, a
    value JSON writes as its string: each pair hashes alike)."""
    plain = json.loads(json.dumps(spec, default=str))
    canonical = json.dumps({"format": FORMAT_VERSION, **plain}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Work:
    """What a computation gets from the cache: its scratch directory `dir`, which outlives a killed job
    until the artifact is stored, and `resumed`, which the computation sets when it really continued from
    what a stopped job left there (stages.csv then says `resumed`, not `computed`)."""

    dir: Path
    resumed: bool = False


@dataclass
class StageCache:
    root: Path
    events: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self):
        self.root = Path(self.root)

    def directory(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def load(self, stage: str, key: str) -> dict | None:
        """The artifact, or None where there is none; one that is there but cannot be used (see the module's
        description) is logged as such, and None returned."""
        artifact, problem = self._read(stage, key)
        if problem is not None:
            log.warning("cache: %s/%s %s; recomputing", stage, key, problem)
        return artifact

    def _read(self, stage: str, key: str) -> tuple[dict | None, str | None]:
        """(the artifact, None), (None, None) where it is absent or not yet complete, or (None, what is
        wrong with it)."""
        directory = self.directory(stage, key)
        try:
            manifest = json.loads((directory / MANIFEST).read_bytes())
        except FileNotFoundError:  # never computed, or being computed (the manifest is written last)
            return None, None
        except ValueError:  # not JSON, or not even text
            return None, "has an unreadable manifest"
        if not (
            isinstance(manifest, dict)
            and manifest.get("stage") == stage
            and isinstance(manifest.get("spec"), dict)
            and isinstance(manifest.get("sha256"), str)
        ):
            return None, "has a manifest that is not one of this cache's"
        if spec_key(manifest["spec"]) != key:
            return None, "holds the artifact of another configuration (its manifest's spec has another key)"
        try:
            if _sha256(directory / ARTIFACT) != manifest["sha256"]:
                return None, "does not match its checksum"
            return torch.load(directory / ARTIFACT, map_location="cpu", weights_only=True), None
        except FileNotFoundError:
            return None, "has a manifest but no artifact"
        except UNREADABLE_TORCH_FILE as error:  # unreadable despite its checksum
            return None, f"cannot be loaded ({error})"

    def has(self, stage: str, spec: dict[str, Any]) -> bool:
        """Whether `stage` has an artifact for `spec` (its manifest is written last, so it is complete)."""
        return (self.directory(stage, spec_key(spec)) / MANIFEST).is_file()

    def get_or_compute(
        self, stage: str, spec: dict[str, Any], compute: Callable[[Work], dict], about: dict | None = None
    ) -> dict:
        """The artifact of `stage` for `spec`; `compute(work)` runs only if no valid one exists.

        `work.dir` is the computation's scratch directory. It persists until the artifact is stored, so a
        computation killed mid-way finds there what it had written when it is run again.

        The stage is recorded in `events` (stages.csv) with `about` (what a person reads the stage by:
        method, fraction, seed, fill), its key, whether it was computed, resumed (the computation says so:
        `work.resumed`) or reused, and the seconds it took, waiting for another job included.
        """
        started = time.monotonic()
        key = spec_key(spec)
        directory = self.directory(stage, key)
        status = "reused"
        # Without the lock, another job may be rewriting this artifact: a problem seen now is not reported
        # (the check under the lock, which decides, does that once).
        artifact, _ = self._read(stage, key)
        if artifact is None:
            directory.mkdir(parents=True, exist_ok=True)
            with self._lock(stage, key):
                artifact = self.load(stage, key)  # another job may have finished it while we waited
                if artifact is None:
                    work = Work(directory / WORKDIR)
                    artifact = self._compute(stage, spec, directory, work, compute)
                    status = "resumed" if work.resumed else "computed"
        if status == "reused":  # the stage's own line (roar.runtime.console.GridProgress) says so, by name
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
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                holder = "another job"
            log.info("cache: waiting for %s/%s, being computed by %s", stage, key, holder)
            lock.acquire()
        try:
            owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%F %T %Z")}
            with atomic_write(directory / OWNER) as tmp:
                tmp.write_text(json.dumps(owner))
            yield
        finally:
            (directory / OWNER).unlink(missing_ok=True)
            lock.release()

    def _compute(
        self, stage: str, spec: dict, directory: Path, work: Work, compute: Callable[[Work], dict]
    ) -> dict:
        (directory / MANIFEST).unlink(missing_ok=True)
        # Temporary files of writers that died before their rename (here or in the work directory's
        # checkpoints): only the lock holder writes under this directory.
        for stale in directory.rglob(".*.tmp"):
            stale.unlink()
        work.dir.mkdir(exist_ok=True)
        artifact = compute(work)
        save_torch(artifact, directory / ARTIFACT)
        manifest = {
            "stage": stage,
            "spec": spec,
            "sha256": _sha256(directory / ARTIFACT),
            "format": FORMAT_VERSION,
        }
        with atomic_write(directory / MANIFEST) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2, default=str))
        shutil.rmtree(work.dir, ignore_errors=True)
        return artifact
