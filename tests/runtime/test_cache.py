import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from roar.runtime.cache import MANIFEST, StageCache, spec_key
from roar.runtime.files import atomic_write


def test_second_request_reuses_and_a_changed_value_recomputes(tmp_path):
    cache = StageCache(tmp_path)
    calls = []

    def compute(workdir):
        calls.append(workdir)
        return {"x": torch.arange(3)}

    first = cache.get_or_compute("stage", {"epochs": 3}, compute)
    second = cache.get_or_compute("stage", {"epochs": 3}, compute)
    cache.get_or_compute("stage", {"epochs": 4}, compute)
    assert len(calls) == 2
    assert torch.equal(first["x"], second["x"])
    assert [e["status"] for e in cache.events] == ["computed", "reused", "computed"]
    assert spec_key({"a": 1, "b": 2}) == spec_key({"b": 2, "a": 1})


def test_truncated_or_unmanifested_artifact_is_recomputed(tmp_path):
    cache = StageCache(tmp_path)
    spec = {"k": 1}
    cache.get_or_compute("s", spec, lambda w: {"x": torch.ones(1000)})
    artifact = cache.directory("s", spec_key(spec)) / "artifact.pt"
    artifact.write_bytes(artifact.read_bytes()[:100])
    assert cache.load("s", spec_key(spec)) is None
    recomputed = cache.get_or_compute("s", spec, lambda w: {"x": torch.zeros(1000)})
    assert torch.equal(recomputed["x"], torch.zeros(1000))
    (artifact.parent / MANIFEST).unlink()
    assert cache.load("s", spec_key(spec)) is None


def test_unloadable_artifact_with_a_matching_checksum_is_recomputed(tmp_path):
    cache = StageCache(tmp_path)
    spec = {"k": 2}
    cache.get_or_compute("s", spec, lambda w: {"x": torch.ones(3)})
    directory = cache.directory("s", spec_key(spec))
    (directory / "artifact.pt").write_bytes(b"not a torch file")
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["sha256"] = hashlib.sha256(b"not a torch file").hexdigest()
    (directory / MANIFEST).write_text(json.dumps(manifest))
    assert cache.load("s", spec_key(spec)) is None
    assert torch.equal(cache.get_or_compute("s", spec, lambda w: {"x": torch.zeros(3)})["x"], torch.zeros(3))


def test_manifest_records_the_spec(tmp_path):
    cache = StageCache(tmp_path)
    cache.get_or_compute("s", {"lr": 0.1}, lambda w: {"x": torch.ones(1)})
    manifest = json.loads((cache.directory("s", spec_key({"lr": 0.1})) / MANIFEST).read_text())
    assert manifest["spec"] == {"lr": 0.1} and len(manifest["sha256"]) == 64


def test_concurrent_threads_compute_once(tmp_path):
    calls = []

    def compute(workdir):
        calls.append(1)
        threading.Event().wait(0.3)
        return {"x": torch.ones(1)}

    threads = [
        threading.Thread(target=lambda: StageCache(tmp_path).get_or_compute("s", {"k": 0}, compute))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1


def _race(root: str, ready, results) -> None:
    """One job asking for a stage at the same moment as another (runs in its own process)."""
    cache = StageCache(Path(root))

    def compute(workdir):
        started = time.time()
        time.sleep(1.0)  # long enough that the other process asks while this one computes
        with open(Path(root) / "computations.log", "a") as log:
            log.write(f"{os.getpid()} {started} {time.time()}\n")
        return {"pid": torch.tensor(os.getpid())}

    ready.wait()
    asked = time.time()
    artifact = cache.get_or_compute("s", {"k": 0}, compute)
    results.put((os.getpid(), asked, cache.events[0]["status"], int(artifact["pid"])))


def test_two_processes_racing_for_a_stage_compute_it_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(2), context.Queue()
    jobs = [context.Process(target=_race, args=(str(tmp_path), ready, results)) for _ in range(2)]
    for job in jobs:
        job.start()
    outcomes = [results.get(timeout=120) for _ in jobs]
    for job in jobs:
        job.join()
    (computation,) = (tmp_path / "computations.log").read_text().splitlines()
    pid, _, finished = computation.split()
    assert sorted(status for *_, status, _ in outcomes) == ["computed", "reused"]
    (waiter,) = [o for o in outcomes if o[2] == "reused"]
    assert waiter[1] < float(finished)  # it asked while the other computed, waited, then loaded its artifact
    assert {loaded for *_, loaded in outcomes} == {int(pid)}


def test_a_job_killed_mid_computation_leaves_no_lock_and_the_next_one_resumes_its_work(tmp_path):
    script = f"""
import time
from pathlib import Path
from roar.runtime.cache import StageCache

def compute(work):
    (work.dir / "epoch-1.ckpt").write_text("half done")
    time.sleep(600)

StageCache(Path({str(tmp_path)!r})).get_or_compute("s", {{"k": 0}}, compute)
"""
    job = subprocess.Popen([sys.executable, "-c", script])
    workdir = StageCache(tmp_path).directory("s", spec_key({"k": 0})) / "work"
    deadline = time.time() + 60
    while not (workdir / "epoch-1.ckpt").exists():
        assert time.time() < deadline and job.poll() is None, "the job never started computing"
        time.sleep(0.05)
    stale_tmp = workdir.parent / ".artifact.pt.999999.tmp"  # as a writer killed before its rename leaves
    stale_tmp.write_bytes(b"partial")
    os.kill(job.pid, signal.SIGKILL)
    job.wait()

    seen = []

    def resume(work):
        seen.append(sorted(p.name for p in work.dir.iterdir()))
        work.resumed = True  # as training does when it continues from a checkpoint it found
        return {"x": torch.ones(1)}

    started = time.time()
    cache = StageCache(tmp_path)
    artifact = cache.get_or_compute("s", {"k": 0}, resume)
    assert time.time() - started < 10  # the dead job's lock did not hold us up
    assert seen == [["epoch-1.ckpt"]]  # the work it left was handed to the new computation
    assert cache.events[-1]["status"] == "resumed"
    assert torch.equal(artifact["x"], torch.ones(1))
    assert not stale_tmp.exists() and not workdir.exists()


def test_a_manifest_of_random_bytes_or_an_empty_list_is_discarded_and_recomputed_with_one_warning(
    tmp_path, caplog
):
    cache = StageCache(tmp_path)
    for spec, garbage in [({"k": "bytes"}, os.urandom(512)), ({"k": "list"}, b"[]")]:
        cache.get_or_compute("s", spec, lambda w: {"x": torch.ones(2)})
        manifest = cache.directory("s", spec_key(spec)) / MANIFEST
        manifest.write_bytes(garbage)
        caplog.clear()
        recomputed = cache.get_or_compute("s", spec, lambda w: {"x": torch.zeros(2)})
        assert torch.equal(recomputed["x"], torch.zeros(2)), spec
        assert [r.levelname for r in caplog.records if r.name == "roar.runtime.cache"] == ["WARNING"], spec
        assert "manifest" in caplog.text
        assert json.loads(manifest.read_text())["spec"] == spec  # rewritten whole
        assert cache.events[-1]["status"] == "computed"


def test_an_artifact_copied_under_another_key_is_not_used(tmp_path, caplog):
    cache = StageCache(tmp_path)
    cache.get_or_compute("train", {"fraction": 0.3}, lambda w: {"test_acc": torch.tensor(0.8)})
    cache.get_or_compute("train", {"fraction": 0.6}, lambda w: {"test_acc": torch.tensor(0.5)})
    source = cache.directory("train", spec_key({"fraction": 0.3}))
    target = cache.directory("train", spec_key({"fraction": 0.6}))
    for name in ("artifact.pt", MANIFEST):
        shutil.copy(source / name, target / name)  # checksum and all: only the key can tell
    caplog.clear()
    again = cache.get_or_compute("train", {"fraction": 0.6}, lambda w: {"test_acc": torch.tensor(0.5)})
    assert float(again["test_acc"]) == 0.5
    assert len(caplog.records) == 1 and "another configuration" in caplog.text
    # Nor in another stage's directory under the same key.
    spec = {"fraction": 0.3}
    shutil.copytree(source, cache.directory("saliency", spec_key(spec)))
    assert cache.load("saliency", spec_key(spec)) is None


def test_the_checksum_warning_is_logged_once_per_corrupted_artifact(tmp_path, caplog):
    cache = StageCache(tmp_path)
    cache.get_or_compute("s", {"k": 3}, lambda w: {"x": torch.ones(1000)})
    artifact = cache.directory("s", spec_key({"k": 3})) / "artifact.pt"
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"0123456789")
    caplog.clear()
    cache.get_or_compute("s", {"k": 3}, lambda w: {"x": torch.zeros(1000)})
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"cache: s/{spec_key({'k': 3})} does not match its checksum; recomputing"
    ]


def test_an_interrupted_write_leaves_the_previous_file_and_no_temporary_one(tmp_path):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"the previous checkpoint")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")  # as a write that fails half-way

    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half of the new one")
            torch.save({"weights": torch.ones(3), "oops": Unpicklable()}, tmp)
    assert target.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    with atomic_write(target) as tmp:
        torch.save({"weights": torch.ones(3)}, tmp)
    assert torch.equal(torch.load(target, weights_only=True)["weights"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_filled_directory_loads_with_its_metadata_and_a_changed_file_is_refused_with_one_warning(
    tmp_path, caplog
):
    cache = StageCache(tmp_path)

    def write(i, work):
        (work.dir / "rows.bin").write_bytes(bytes([i]) * 8)
        return {"rows": 8, "shard": i}

    specs = [{"store": "s", "shard": i} for i in range(2)]
    shards = cache.fill("s", specs, write)
    assert [s.meta for s in shards] == [{"rows": 8, "shard": 0}, {"rows": 8, "shard": 1}]
    key = spec_key(specs[1])
    assert cache.load_files("s", key) == shards[1]
    (cache.directory("s", key) / "rows.bin").write_bytes(b"\xff" * 9)  # another size: checked again
    with caplog.at_level("WARNING"):
        assert cache.load_files("s", key) is None
    problem = "has a file that does not match its checksum (rows.bin)"
    assert caplog.messages == [f"cache: s/{key} {problem}; recomputing"]
