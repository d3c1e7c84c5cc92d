"""The dataset store (roar/data/store.py): shards written once, together by concurrent writers, a kill costing
at most the shard being written, a torn shard rewritten, a full disk leaving no half shard; shards read by
index as the arrays they were written from."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from roar.data import arrays
from roar.data.arrays import Rows, ShardedArray, image_sums, shard_bounds, write_npy
from roar.data.store import STAGE, choose_storage, store_tensors
from roar.runtime import cache as cache_module
from roar.runtime.cache import MANIFEST, StageCache

ROWS = 128 * 6  # six shards of 128 images (the smallest shard: one chunk of ROAD's solver)


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of CHUNK (128) images whatever their size, so that a tiny array has several."""
    monkeypatch.setattr(arrays, "SHARD_BYTES", 1)


def data(rows: int = ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (rows, 3, 4, 4), generator=generator, dtype=torch.uint8)
    return images, torch.arange(rows) % 10


def checksums(cache_dir: Path) -> dict[str, dict]:
    """Every stored shard's files and their checksums, by shard key."""
    return {
        p.parent.name: json.loads(p.read_text())["files"] for p in (cache_dir / STAGE).glob(f"*/{MANIFEST}")
    }


def test_a_sharded_array_reads_back_any_rows_in_any_order(tmp_path):
    images, _ = data(300)
    files = []
    for i, (start, stop) in enumerate(shard_bounds(300, 128)):
        files.append(tmp_path / f"{i}.npy")
        write_npy(files[-1], images[start:stop])
    stored = ShardedArray(files, [128, 128, 44], (3, 4, 4), np.uint8)
    assert stored.shape == (300, 3, 4, 4) and len(stored) == 300
    index = torch.tensor([299, 0, 128, 127, 5, 5, 200])
    assert torch.equal(stored[index], images[index])
    assert torch.equal(stored[10:140], images[10:140]) and torch.equal(stored.load(), images)
    rows = Rows(stored, torch.tensor([3, 250, 7]), "train")
    assert torch.equal(rows[torch.tensor([2, 0])], images[torch.tensor([7, 3])]) and rows.shape == (
        3,
        3,
        4,
        4,
    )
    with pytest.raises(IndexError):
        stored[torch.tensor([300])]


def test_the_store_holds_the_images_labels_and_exact_sums_and_is_written_once(tmp_path, small_shards):
    images, labels = data()
    cache = StageCache(tmp_path / "cache")
    stored = store_tensors(cache, {"data": "x"}, "train", images, labels)
    assert len(stored.images.files) == 6 and torch.equal(stored.images.load(), images)
    assert torch.equal(stored.labels, labels)
    assert torch.equal(stored.sums, image_sums(images))
    assert torch.allclose(stored.sums[:, 0], images.double().sum(dim=(2, 3)) / 255)
    again = StageCache(tmp_path / "cache")
    store_tensors(again, {"data": "x"}, "train", images, labels)
    assert again.events[-1]["status"] == "reused" and "0 computed here" in again.events[-1]["name"]
    # The store is 1.1x its pixels at most (labels and sums are 56 bytes per image, npy headers 128 bytes).
    stored_bytes = sum(f.stat().st_size for f in (tmp_path / "cache" / STAGE).rglob("*.npy"))
    assert stored_bytes <= 1.1 * images.numel() + 56 * ROWS + 3 * 128 * 6


def test_a_torn_shard_is_rewritten_with_the_same_bytes(tmp_path, small_shards, caplog):
    images, labels = data()
    store_tensors(StageCache(tmp_path / "cache"), {"data": "x"}, "train", images, labels)
    before = checksums(tmp_path / "cache")
    torn = sorted((tmp_path / "cache" / STAGE).glob("*/images.npy"))[2]
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    cache_module._VERIFIED.clear()  # as in another process: nothing verified yet
    cache = StageCache(tmp_path / "cache")
    stored = store_tensors(cache, {"data": "x"}, "train", images, labels)
    assert torch.equal(stored.images.load(), images)
    assert "1 computed here" in cache.events[-1]["name"]
    assert any("does not match its checksum (images.npy)" in r.getMessage() for r in caplog.records)
    assert checksums(tmp_path / "cache") == before


# A writer in its own process: fills the store of data() at SHARD_BYTES=1, reading each shard slowly, and
# says on stdout how many shards it computed. It waits for `go` to exist, so that writers start together.
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    from roar.data import arrays, store
    from roar.runtime.cache import StageCache
    arrays.SHARD_BYTES = 1
    cache_dir, go, delay = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, ({rows}, 3, 4, 4), generator=generator, dtype=torch.uint8)
    labels = torch.arange({rows}) % 10
    original = store.store_source
    def slow(cache, spec, name, count, row_shape, dtype, read):
        def reading(start, stop):
            time.sleep(delay)
            return read(start, stop)
        return original(cache, spec, name, count, row_shape, dtype, reading)
    store.store_source = slow
    while not go.exists():
        time.sleep(0.01)
    cache = StageCache(cache_dir)
    store.store_tensors(cache, {{"data": "x"}}, "train", images, labels)
    print(cache.events[-1]["name"])
""").format(rows=ROWS)


def start_writer(tmp_path: Path, go: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "cache"), str(go), str(delay)],
                            stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip


def computed_here(line: str) -> int:
    """How many shards a stages.csv name (`store: train images (6 shards, 2 computed here)`) says."""
    return int(re.search(r"(\d+) computed here", line).group(1))


def test_two_writers_at_once_share_the_shards_and_write_the_same_bytes(tmp_path, small_shards):
    images, labels = data()
    store_tensors(StageCache(tmp_path / "alone"), {"data": "x"}, "train", images, labels)
    go = tmp_path / "go"
    writers = [start_writer(tmp_path, go, delay=0.5) for _ in range(2)]
    time.sleep(3)  # both imported and waiting
    go.touch()
    lines = [w.communicate(timeout=120)[0].strip().splitlines()[-1] for w in writers]
    assert all(w.returncode == 0 for w in writers)
    shares = [computed_here(line) for line in lines]
    assert sum(shares) == 6 and min(shares) >= 1, lines  # every shard written once, by one of them
    assert checksums(tmp_path / "cache") == checksums(tmp_path / "alone")


def test_a_writer_killed_mid_store_loses_at_most_the_shard_it_was_writing(tmp_path, small_shards):
    images, labels = data()
    store_tensors(StageCache(tmp_path / "alone"), {"data": "x"}, "train", images, labels)
    go = tmp_path / "go"
    go.touch()
    writer = start_writer(tmp_path, go, delay=0.4)
    deadline = time.monotonic() + 60
    while len(checksums(tmp_path / "cache")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    done_before = len(checksums(tmp_path / "cache"))
    assert 3 <= done_before < 6
    cache = StageCache(tmp_path / "cache")
    store_tensors(cache, {"data": "x"}, "train", images, labels)
    assert computed_here(cache.events[-1]["name"]) == 6 - done_before  # no finished shard is written again
    assert checksums(tmp_path / "cache") == checksums(tmp_path / "alone")


def test_a_disk_that_fills_while_writing_leaves_no_half_shard(tmp_path, small_shards, tmpfs):
    full = tmpfs("full", "size=40k")
    images, labels = data()
    with pytest.raises(OSError) as error:
        store_tensors(StageCache(full / "cache"), {"data": "x"}, "train", images, labels)
    assert (
        error.value.errno == 28
    )  # ENOSPC: the entry point turns it into one line (tests/e2e/test_storage.py)
    for manifest in (full / "cache" / STAGE).glob(f"*/{MANIFEST}"):
        files = json.loads(manifest.read_text())["files"]
        assert all((manifest.parent / name).is_file() for name in files)  # every stored shard is whole
    assert not list((full / "cache" / STAGE).glob("*/.*.tmp"))  # no file left half-written


def test_auto_storage_keeps_in_memory_what_fits_a_quarter_of_the_memory():
    assert choose_storage("memory", 10**15) == "memory" and choose_storage("shards", 1) == "shards"
    assert choose_storage("auto", 1000) == "memory" and choose_storage("auto", 10**15) == "shards"
