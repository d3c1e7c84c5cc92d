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

Two kinds of artifact: a dict of tensors (`get_or_compute`: one `artifact.pt`, read once — checksummed from
the bytes it is loaded from), and directories of files a computation writes itself (`fill`: the shards of
the dataset store and of removal codes, `.npy` files read by memory map; each file has its checksum in the
manifest, verified once per process, as it is opened). `fill` writes many such artifacts together with any
other job that needs them: each job takes the ones no other job holds, then waits for the rest.

The tasks of one multi-task job (roar/runtime/distributed.py, `ranks`) compute a training together: rank 0
takes the lock and decides, every rank runs the fit, rank 0 stores it and the others load it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from roar.runtime.distributed import Ranks
from roar.runtime.files import UNREADABLE_TORCH_FILE, atomic_write, save_torch

log = logging.getLogger(__name__)

ARTIFACT, MANIFEST, WORKDIR, OWNER = "artifact.pt", "manifest.json", "work", "owner.json"
# Bump when a stage's computation changes in a way its configuration does not show. 2: ties broken per image
# (roar/removal/keys.py), removal codes, statistics from per-image sums, image fills stored in the images'
# dtype (docs/cache.md says what moved).
FORMAT_VERSION = 2


def spec_key(spec: dict[str, Any]) -> str:
    """The key of `spec`: a hash of its canonical JSON. The spec goes through JSON once first, so that the
    spec a manifest records gives back the same key (integer and string dict keys, a tuple and a list, a
    value JSON writes as its string: each pair hashes alike)."""
    plain = json.loads(json.dumps(spec, default=str))
    canonical = json.dumps({"format": FORMAT_VERSION, **plain}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def _sha256(path: Path, sync: bool = False) -> str:
    """The file's SHA-256; with `sync`, the file is also made durable (fsync) while it is open."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
        if sync:
            os.fsync(f.fileno())
    return digest.hexdigest()


# Files of file artifacts whose checksum this process has verified, by (path, size, mtime): a shard is read
# many times by a job (every epoch) but checked once; a file replaced since gets another stat, so is checked
# again.
_VERIFIED: set[tuple[str, int, int]] = set()


def _identity(path: Path) -> tuple[str, int, int]:
    status = path.stat()
    return (str(path), status.st_size, status.st_mtime_ns)


@dataclass(frozen=True)
class FileArtifact:
    """A stored directory of files (`fill`): where they are, and the metadata their writer
    returned (sizes, counts, statistics: whatever a reader needs before opening them)."""

    dir: Path
    meta: dict


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
    # The tasks of this job (one, but for a multi-task SLURM job): who computes a stage `together`.
    ranks: Ranks = field(default_factory=Ranks)

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

    def load_files(self, stage: str, key: str) -> FileArtifact | None:
        """As `load`, for a directory artifact (`fill`): None where there is none or it cannot be used."""
        artifact, problem = self._read_files(stage, key)
        if problem is not None:
            log.warning("cache: %s/%s %s; recomputing", stage, key, problem)
        return artifact

    def _manifest(self, stage: str, key: str, kind: str) -> tuple[dict | None, str | None]:
        """(the manifest, None), (None, None) where there is none yet, or (None, what is wrong with it).
        `kind` is the manifest's checksum entry: "sha256" (one artifact.pt) or "files" (a directory)."""
        try:
            manifest = json.loads((self.directory(stage, key) / MANIFEST).read_bytes())
        except FileNotFoundError:  # never computed, or being computed (the manifest is written last)
            return None, None
        except ValueError:  # not JSON, or not even text
            return None, "has an unreadable manifest"
        expected = str if kind == "sha256" else dict
        if not (
            isinstance(manifest, dict)
            and manifest.get("stage") == stage
            and isinstance(manifest.get("spec"), dict)
            and isinstance(manifest.get(kind), expected)
        ):
            return None, "has a manifest that is not one of this cache's"
        if spec_key(manifest["spec"]) != key:
            return None, "holds the artifact of another configuration (its manifest's spec has another key)"
        return manifest, None

    def _read(self, stage: str, key: str) -> tuple[dict | None, str | None]:
        """(the artifact, None), (None, None) where it is absent or not yet complete, or (None, what is
        wrong with it)."""
        manifest, problem = self._manifest(stage, key, "sha256")
        if manifest is None:
            return None, problem
        try:
            # One read: the checksum is taken of the very bytes that are loaded.
            data = (self.directory(stage, key) / ARTIFACT).read_bytes()
            if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
                return None, "does not match its checksum"
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), None
        except FileNotFoundError:
            return None, "has a manifest but no artifact"
        except UNREADABLE_TORCH_FILE as error:  # unreadable despite its checksum
            return None, f"cannot be loaded ({error})"

    def _read_files(self, stage: str, key: str) -> tuple[FileArtifact | None, str | None]:
        """As `_read`, for a directory of files: each is checked against its checksum unless this process
        already did (`_VERIFIED`)."""
        manifest, problem = self._manifest(stage, key, "files")
        if manifest is None:
            return None, problem
        directory = self.directory(stage, key)
        for name, checksum in manifest["files"].items():
            path = directory / name
            try:
                identity = _identity(path)
                if identity not in _VERIFIED:
                    if _sha256(path) != checksum:
                        return None, f"has a file that does not match its checksum ({name})"
                    _VERIFIED.add(identity)
            except FileNotFoundError:
                return None, f"has a manifest but no {name}"
        return FileArtifact(directory, manifest.get("meta", {})), None

    def has(self, stage: str, spec: dict[str, Any]) -> bool:
        """Whether `stage` has an artifact for `spec` (its manifest is written last, so it is complete)."""
        return (self.directory(stage, spec_key(spec)) / MANIFEST).is_file()

    def fill(
        self,
        stage: str,
        specs: list[dict[str, Any]],
        write: Callable[[int, Work], dict],
        about: dict | None = None,
        key: str | None = None,
    ) -> list[FileArtifact]:
        """The directory artifacts of `specs` (the shards of one store, say), written together with any
        other job filling the same ones: a first pass writes those no job holds, skipping the rest, and a
        second waits for those and loads them, so that N jobs write about 1/N each. `write(i, work)` writes
        the i-th. stages.csv gets one line for all of them (`about`), counting what this job computed, under
        `key` (what names the whole; by default the key of what the specs have in common but their
        `shard`)."""
        started, before = time.monotonic(), len(self.events)
        found: dict[int, FileArtifact] = {}
        for waiting in (False, True):
            for i, spec in enumerate(specs):
                if i not in found:
                    artifact = self._get(stage, spec, partial(write, i), None, waiting, True, files=True)
                    if artifact is not None:
                        found[i] = artifact
        events, self.events[before:] = self.events[before:], []
        computed = sum(e["status"] != "reused" for e in events)
        shards = f"{len(specs)} shard{'s' if len(specs) != 1 else ''}"
        name = f"{(about or {}).get('name', stage)} ({shards}, {computed} computed here)"
        self.events.append({
            "stage": stage, **(about or {}), "name": name,
            "key": key or spec_key({k: v for k, v in specs[0].items() if k != "shard"}) if specs else "",
            "status": "computed" if computed else "reused", "seconds": round(time.monotonic() - started, 2),
        })  # fmt: skip
        return [found[i] for i in range(len(specs))]

    def get_or_compute(
        self,
        stage: str,
        spec: dict[str, Any],
        compute: Callable[[Work], dict],
        about: dict | None = None,
        together: bool = False,
    ) -> dict:
        """The artifact of `stage` for `spec`; `compute(work)` runs only if no valid one exists.

        `work.dir` is the computation's scratch directory. It persists until the artifact is stored, so a
        computation killed mid-way finds there what it had written when it is run again.

        The stage is recorded in `events` (stages.csv) with `about` (what a person reads the stage by:
        method, fraction, seed, fill), its key, whether it was computed, resumed (the computation says so:
        `work.resumed`) or reused, and the seconds it took, waiting for another job included.

        `together`: a computation every task of this job takes part in (a DDP fit); with one task, as any.
        """
        if together and self.ranks.world > 1:
            return self._together(stage, spec, compute, about)
        return self._get(stage, spec, compute, about, wait=True, record=True, files=False)

    def _together(self, stage, spec, compute, about) -> dict:
        """`get_or_compute` over the tasks of a job: rank 0 reads the artifact, or takes the lock and
        prepares the scratch directory; every rank computes (the fit spans them); rank 0 stores the result;
        the others then load it."""
        ranks, started = self.ranks, time.monotonic()
        key = spec_key(spec)
        directory, work = self.directory(stage, key), Work(self.directory(stage, key) / WORKDIR)
        with ExitStack() as held:
            artifact = None
            if ranks.main:
                artifact, _ = self._read(stage, key)
                if artifact is None:
                    directory.mkdir(parents=True, exist_ok=True)
                    held.enter_context(self._lock(stage, key))  # other jobs wait for all of this job's tasks
                    artifact, problem = self._read(stage, key)
                    if problem is not None:
                        log.warning("cache: %s/%s %s; recomputing", stage, key, problem)
                    if artifact is None:
                        self._prepare(directory, work)
            status = ranks.broadcast("reused" if artifact is not None else "computed")
            if status == "computed":
                result = compute(work)
                if ranks.main:
                    artifact, checksums = self._store(result, directory, work)
                    self._finish(stage, spec, directory, work, checksums)
                status = ranks.broadcast("resumed" if work.resumed else "computed")
        ranks.barrier()  # rank 0 has stored it (or found it)
        if artifact is None:
            artifact, problem = self._read(stage, key)
            if artifact is None:
                raise RuntimeError(f"cache: {stage}/{key}: rank 0 stored no usable artifact ({problem})")
        self.events.append({"stage": stage, **(about or {}), "key": key, "status": status,
                            "seconds": round(time.monotonic() - started, 2)})  # fmt: skip
        return artifact

    def _get(self, stage, spec, compute, about, wait: bool, record: bool, files: bool):
        started = time.monotonic()
        key = spec_key(spec)
        directory = self.directory(stage, key)
        read = self._read_files if files else self._read
        status = "reused"
        # Without the lock, another job may be rewriting this artifact: a problem seen now is not reported
        # (the check under the lock, which decides, does that once).
        artifact, _ = read(stage, key)
        if artifact is None:
            directory.mkdir(parents=True, exist_ok=True)
            with self._lock(stage, key, wait) as held:
                if not held:
                    return None
                artifact, problem = read(stage, key)  # another job may have finished it while we waited
                if problem is not None:
                    log.warning("cache: %s/%s %s; recomputing", stage, key, problem)
                if artifact is None:
                    work = Work(directory / WORKDIR)
                    store = self._store_files if files else self._store
                    artifact = self._compute(stage, spec, directory, work, compute, store)
                    status = "resumed" if work.resumed else "computed"
        if status == "reused":  # the stage's own line (roar.runtime.console.GridProgress) says so, by name
            log.debug("cache: reusing %s/%s", stage, key)
        if record:
            seconds = round(time.monotonic() - started, 2)
            self.events.append(
                {"stage": stage, **(about or {}), "key": key, "status": status, "seconds": seconds}
            )
        return artifact

    @contextmanager
    def _lock(self, stage: str, key: str, wait: bool = True) -> Iterator[bool]:
        """Hold the stage's lock (yields True); while waiting for it, say who holds it (host, pid, since
        when). Without `wait`, yields False at once where another job holds it."""
        directory = self.directory(stage, key)
        lock = FileLock(str(directory) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if not wait:
                yield False
                return
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
            yield True
        finally:
            (directory / OWNER).unlink(missing_ok=True)
            lock.release()

    def _compute(self, stage: str, spec: dict, directory: Path, work: Work, compute, store):
        self._prepare(directory, work)
        artifact, checksums = store(compute(work), directory, work)
        self._finish(stage, spec, directory, work, checksums)
        return artifact

    @staticmethod
    def _prepare(directory: Path, work: Work) -> None:
        """Before a computation, under the lock: no manifest (the artifact is being replaced), no temporary
        files of writers that died before their rename (here or in the work directory's checkpoints), a
        scratch directory."""
        (directory / MANIFEST).unlink(missing_ok=True)
        for stale in directory.rglob(".*.tmp"):
            stale.unlink()
        work.dir.mkdir(exist_ok=True)

    @staticmethod
    def _finish(stage: str, spec: dict, directory: Path, work: Work, checksums: dict) -> None:
        """After the artifact is stored: the manifest, written last, then the scratch directory goes."""
        manifest = {"stage": stage, "spec": spec, **checksums, "format": FORMAT_VERSION}
        with atomic_write(directory / MANIFEST) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2, default=str))
        shutil.rmtree(work.dir, ignore_errors=True)

    @staticmethod
    def _store(artifact: dict, directory: Path, work: Work) -> tuple[dict, dict]:
        save_torch(artifact, directory / ARTIFACT)
        return artifact, {"sha256": _sha256(directory / ARTIFACT)}

    @staticmethod
    def _store_files(meta: dict, directory: Path, work: Work) -> tuple[FileArtifact, dict]:
        """Move the files the computation wrote into `work.dir` into the artifact's directory, each made
        durable and checksummed first; the manifest, written after, is what makes them an artifact."""
        checksums = {}
        for path in sorted(p for p in work.dir.iterdir() if p.is_file() and not p.name.startswith(".")):
            if path.name in (ARTIFACT, MANIFEST, OWNER):
                raise ValueError(f"a stage's file may not be named {path.name}")
            checksums[path.name] = _sha256(path, sync=True)
            os.replace(path, directory / path.name)
            _VERIFIED.add(_identity(directory / path.name))
        return FileArtifact(directory, meta), {"files": checksums, "meta": meta}
