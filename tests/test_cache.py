import json
import threading

import torch

from roar.cache import MANIFEST, StageCache, spec_key


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


def test_manifest_records_the_spec(tmp_path):
    cache = StageCache(tmp_path)
    cache.get_or_compute("s", {"lr": 0.1}, lambda w: {"x": torch.ones(1)})
    manifest = json.loads((cache.directory("s", spec_key({"lr": 0.1})) / MANIFEST).read_text())
    assert manifest["spec"] == {"lr": 0.1} and len(manifest["sha256"]) == 64


def test_concurrent_requests_compute_once(tmp_path):
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
