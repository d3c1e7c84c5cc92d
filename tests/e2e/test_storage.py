"""`dataset.storage=memory|shards` through the real `roar` command: both give the same removal codes, batches,
weights and results for every task; bad image folders stop the run in one line in both; a job killed while
writing removal codes loses at most the shard it was writing; a full disk is one line."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from roar.cli.app import experiment
from roar.runtime.cache import ARTIFACT, MANIFEST, StageCache
from roar.stages import load_data
from tests import dataset_files
from tests.conftest import REPO, compose_config, run_command
from tests.data.test_store import computed_here

STORAGES = ("memory", "shards")


def run_both(tmp_path: Path, *overrides: str) -> dict[str, Path]:
    """One run per storage, each with a cache of its own: storage -> run directory."""
    runs = {}
    for storage in STORAGES:
        cfg = compose_config(tmp_path / storage, "logger=none", f"dataset.storage={storage}", *overrides)
        runs[storage] = experiment(cfg)
    return runs


def table(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def artifacts(cache_dir: Path, stage: str) -> dict[str, dict]:
    """Every stored `stage` artifact of a cache (a dict of tensors), by key."""
    return {
        p.parent.name: torch.load(p, weights_only=True) for p in (cache_dir / stage).glob(f"*/{ARTIFACT}")
    }


def stored_files(cache_dir: Path, stage: str) -> dict[str, dict]:
    """Every stored `stage` directory artifact's file checksums, by key."""
    return {
        p.parent.name: json.loads(p.read_text())["files"] for p in (cache_dir / stage).glob(f"*/{MANIFEST}")
    }


def assert_same_models(runs: dict[str, Path]) -> None:
    models = {storage: artifacts(run.parent / "cache", "train") for storage, run in runs.items()}
    assert models["memory"].keys() == models["shards"].keys() and models["memory"]  # storage is in no key
    for key, trained in models["memory"].items():
        other = models["shards"][key]
        assert trained["test_acc"] == other["test_acc"] and trained["val_acc"] == other["val_acc"]
        for name, weights in trained["state_dict"].items():
            assert torch.equal(weights, other["state_dict"][name]), (key, name)


def test_digits_give_the_same_codes_weights_and_results_in_memory_and_on_shards(tmp_path):
    runs = run_both(tmp_path, "method=[fullgrad,random]", "roar.fractions=[0.3,0.6]", "trainer.max_epochs=2")
    assert table(runs["memory"] / "results.csv") == table(runs["shards"] / "results.csv")
    assert_same_models(runs)
    codes = {s: stored_files(run.parent / "cache", "saliency") for s, run in runs.items()}
    assert codes["memory"] == codes["shards"] and len(codes["memory"]) == 6  # 2 methods x 3 splits
    stores = {s: stored_files(run.parent / "cache", "store") for s, run in runs.items()}
    assert not stores["memory"] and len(stores["shards"]) == 3  # digits is written to the store for shards


def test_an_image_folder_with_roads_fill_gives_the_same_results_in_memory_and_on_shards(tmp_path):
    dataset_files.write_image_folder(tmp_path / "data", classes=3, train=150, test=30, size=16)
    runs = run_both(
        tmp_path, "dataset=imagefolder", f"dataset.root={tmp_path / 'data'}", "dataset.image_size=16",
        "method=[fullgrad,random]", "roar.fractions=[0.5]", "roar.fill=road", "trainer.max_epochs=3",
        "dataset.datamodule.batch_size=32", "roar.proceed_at_chance=true",
    )  # fmt: skip
    assert table(runs["memory"] / "results.csv") == table(runs["shards"] / "results.csv")
    assert_same_models(runs)


def test_batches_from_shards_are_the_batches_in_memory(tmp_path):
    loaders = {}
    for storage in STORAGES:
        cfg = compose_config(tmp_path, f"dataset.storage={storage}", "dataset.workers=2")
        datamodule = load_data(cfg, StageCache(tmp_path / "cache"))
        generator = torch.Generator().manual_seed(0)  # the same codes for both
        codes = {
            name: torch.randint(1, 101, (len(s), 8, 8), dtype=torch.uint8, generator=generator)
            for name, s in datamodule.splits.items()
        }
        cell = datamodule.with_removal(codes, 0.3, "roar", datamodule.mean)
        torch.manual_seed(5)  # the shuffle draws from the global generator, as in a seeded fit
        loaders[storage] = [cell.on_after_batch_transfer(b, 0) for b in cell.train_dataloader()]
        assert all(split.resident == (storage == "memory") for split in cell.splits.values())
    for (memory, labels), (shards, other) in zip(loaders["memory"], loaders["shards"], strict=True):
        assert torch.equal(memory, shards) and torch.equal(labels, other)


@pytest.mark.parametrize(
    ("task", "table_name"),
    [("leakage", "leakage.csv"), ("perturbation", "perturbation.csv"), ("roar", "results.csv"),
     ("fidelity", "fidelity.csv")],
)  # fmt: skip
def test_every_task_with_a_table_gives_the_same_table_on_either_storage(tmp_path, task, table_name):
    overrides = [
        f"task={task}",
        "method=[input_gradient,random]",
        "roar.fractions=[0.5]",
        "trainer.max_epochs=2",
    ]
    if task == "roar":
        overrides += ["roar.mode=kar", "roar.fill=blur"]
    if task == "fidelity":  # its fine-tuning's random removals are drawn batch by batch: the same batches
        overrides += ["task.epochs=1", "task.samples=2", "task.beta=0.5"]
    runs = run_both(tmp_path, *overrides)
    assert table(runs["memory"] / table_name) == table(runs["shards"] / table_name)


@pytest.mark.parametrize("task", ["explain", "randomization"])
def test_the_gallery_tasks_run_on_shards(tmp_path, task):
    cfg = compose_config(tmp_path, f"task={task}", "dataset.storage=shards", "method=[input_gradient,random]",
                         "trainer.max_epochs=2", "logger=none")  # fmt: skip
    run_dir = experiment(cfg)
    assert any(run_dir.glob("*.png"))


def folder_roar(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`roar` on the image folder under tmp_path/data, 16x16."""
    folder = [
        "dataset=imagefolder",
        f"dataset.root={tmp_path / 'data'}",
        "dataset.image_size=16",
        "logger=none",
    ]
    return run_command("roar", *folder, *overrides, cwd=tmp_path)


@pytest.mark.parametrize("storage", STORAGES)
def test_an_unreadable_image_file_is_one_line_naming_it(tmp_path, storage):
    dataset_files.write_image_folder(tmp_path / "data", classes=3, size=16)
    broken = tmp_path / "data" / "train" / "class_1" / "0013.png"
    broken.write_bytes(b"not an image")
    done = folder_roar(tmp_path, f"dataset.storage={storage}")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"roar: error: dataset: cannot read {broken}: UnidentifiedImageError: ")


@pytest.mark.parametrize("storage", STORAGES)
def test_a_test_folder_missing_a_class_folder_is_refused_before_anything_is_decoded(tmp_path, storage):
    dataset_files.write_image_folder(tmp_path / "data", classes=3, size=16)
    for image in (tmp_path / "data" / "test" / "class_1").iterdir():
        image.unlink()
    (tmp_path / "data" / "test" / "class_1").rmdir()
    done = folder_roar(tmp_path, "dataset.num_classes=3", f"dataset.storage={storage}")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("roar: error: dataset: the test split's classes differ from the training split's")
    assert "only in train: ['class_1']" in line
    assert not (tmp_path / "cache" / "store").exists()


# The `roar` command with shards of CHUNK (128) images, so that digits' codes of a split are several shards.
SMALL_SHARDS = (
    "import sys; import roar.data.arrays as a; a.SHARD_BYTES = 1; from roar.cli.app import main; main()"
)
# One method, slow enough to be stopped while its codes are written: 0.25 s per batch of 64 images.
SLOW = ["method=[sobel]", "method.sobel._target_=tests.user_methods.slow_input_gradient",
        "+method.sobel.delay=0.25", "roar.fractions=[0.5]", "trainer.max_epochs=1", "logger=none",
        "roar.saliency_batch_size=64", "roar.proceed_at_chance=true"]  # fmt: skip


def roar_process(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    return subprocess.Popen([sys.executable, "-c", SMALL_SHARDS, *overrides], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.slow
def test_a_job_killed_while_writing_codes_loses_at_most_the_shard_it_was_writing(tmp_path):
    clean = tmp_path / "clean"
    clean.mkdir()
    assert roar_process(clean, *SLOW, "hydra.run.dir=run").wait(timeout=600) == 0
    job = roar_process(tmp_path, *SLOW, "hydra.run.dir=run")
    deadline = time.monotonic() + 300
    while len(stored_files(tmp_path / "cache", "saliency")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    kept = len(stored_files(tmp_path / "cache", "saliency"))
    total = len(stored_files(clean / "cache", "saliency"))
    assert 2 <= kept < total
    rerun = roar_process(tmp_path, *SLOW, "hydra.run.dir=rerun")
    assert rerun.wait(timeout=600) == 0, rerun.stderr.read()[-3000:]
    stages = table(tmp_path / "rerun" / "stages.csv")
    computed = sum(computed_here(row["name"]) for row in stages if row["stage"] == "saliency")
    assert computed == total - kept  # none of the finished shards again
    assert stored_files(tmp_path / "cache", "saliency") == stored_files(clean / "cache", "saliency")
    assert table(tmp_path / "rerun" / "results.csv") == table(clean / "run" / "results.csv")


def test_a_disk_that_fills_while_the_store_is_written_is_one_line(tmp_path, tmpfs):
    full = tmpfs("full", "size=64k")
    dataset_files.write_image_folder(tmp_path / "data", classes=3, train=150, size=16)
    done = folder_roar(tmp_path, f"paths.cache_dir={full}", "hydra.run.dir=run")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("roar: error: cannot write ") and "No space left on device" in line
    for manifest in full.glob(f"store/*/{MANIFEST}"):  # every stored shard is whole
        assert all((manifest.parent / name).is_file() for name in json.loads(manifest.read_text())["files"])


def test_every_split_keeps_the_name_of_its_images_on_shards(tmp_path):
    # The random numbers of an image (ties, ROAD's noise, F-Fidelity's shares) are drawn from its split's
    # name and its id: a store-backed split must keep the name the split had in memory.
    names = {}
    for storage in ("memory", "shards"):
        cfg = compose_config(tmp_path / storage, f"dataset.storage={storage}")
        datamodule = load_data(cfg, StageCache(tmp_path / storage / "cache"))
        splits = datamodule.splits.items()
        names[storage] = {name: (s.images.source, s.images.ids[:50].tolist()) for name, s in splits}
    assert names["memory"] == names["shards"]
