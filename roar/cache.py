"""A content-addressed cache of pipeline artifacts, safe to share between concurrent jobs.

Each artifact is keyed by the configuration values that determine it. It is written to a temporary file
and renamed into place, guarded by a file lock (concurrent jobs needing the same stage compute it once;
the others wait, then load it), and recorded with its SHA-256 in a manifest written last: an artifact
without a manifest, or whose bytes do not match it, is treated as missing and recomputed. Artifacts are
loaded with `torch.load(weights_only=True)`, which cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

log = logging.getLogger(__name__)

ARTIFACT, MANIFEST = "artifact.pt", "manifest.json"
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

    def get_or_compute(self, stage: str, spec: dict[str, Any], compute: Callable[[Path], dict]) -> dict:
        """The artifact of `stage` for `spec`; `compute(workdir)` runs only if no valid one exists.

        `workdir` is an empty scratch directory for the computation, removed afterwards.
        """
        key = spec_key(spec)
        directory = self.directory(stage, key)
        artifact = self.load(stage, key)
        if artifact is None:
            directory.mkdir(parents=True, exist_ok=True)
            with FileLock(str(directory) + ".lock"):
                artifact = self.load(stage, key)  # another job may have finished it while we waited
                if artifact is None:
                    artifact = self._compute(stage, spec, directory, compute)
                    self.events.append({"stage": stage, "key": key, "status": "computed"})
                    return artifact
        log.info("cache: reusing %s/%s", stage, key)
        self.events.append({"stage": stage, "key": key, "status": "reused"})
        return artifact

    def _compute(self, stage: str, spec: dict, directory: Path, compute: Callable[[Path], dict]) -> dict:
        (directory / MANIFEST).unlink(missing_ok=True)
        workdir = directory / "work"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir()
        artifact = compute(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
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
        return artifact
