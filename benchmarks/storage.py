"""The larger-than-memory path (roar/data/store.py, dataset.storage=shards), on folders of the shared CIFAR-10
JPEGs decoded at 224x224 (dataset.image_size=224: each 32x32 image upsampled by the decode, as a folder of
ImageNet-sized images would be read):

- memory: the whole pipeline in one `roar` process tree — store, FullGrad's removal codes of every split,
  one ROAR cell (small_cnn, one epoch) — on 8,000 training images (IMAGES_1X) and on 4x as many, its peak
  memory the summed proportional set size (PSS) of the process and every descendant (its DataLoader
  workers), sampled every 0.25 s from /proc (as ../shared/tools/peak_mem.py does). Targets: at most 3 GiB,
  and the 4x run at most 15 % above the 1x run.
- disk: the store's bytes against its uint8 pixels (target <= 1.1x), the removal codes' bytes per pixel
  per method (target <= 1.1).
- speed: training throughput from shards against in memory on the same store (target >= 0.8x), and
  FullGrad's maps ranked and written as codes against the maps alone (target <= 1.1x); interleaved runs,
  medians.
- what ImageNet and Food-101 need, from the measured bytes per pixel (an arithmetic projection, labelled so).

Each pipeline run takes its time on 2 CPU cores (the 4x run hours): `python -m benchmarks storage`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.cifar import NO_IMAGES, cifar10_images
from benchmarks.timing import config
from roar.data.store import STAGE
from roar.runtime.cache import StageCache

IMAGES_1X, TEST_1X, SIDE = 8000, 1000, 224
CLASSES = 10
# The published datasets' sizes (ImageNet ILSVRC-2012: 1,281,167 training and 50,000 validation images;
# Food-101: 75,750 training and 25,250 test images), at 224x224x3.
PUBLISHED = {"ImageNet": (1_281_167, 50_000), "Food-101": (75_750, 25_250)}
PIPELINE = [
    "dataset=imagefolder", f"dataset.image_size={SIDE}", "dataset.num_classes=10", "dataset.channels=3",
    "model=small_cnn", "method=[fullgrad]", "roar.fractions=[0.5]", "trainer.max_epochs=1",
    "roar.saliency_batch_size=32", "dataset.datamodule.batch_size=64", "dataset.datamodule.read_workers=2",
    "logger=none", "roar.proceed_at_chance=true",
]  # fmt: skip


def image_folder(images: Path, out: Path, train_per_class: int, test_per_class: int) -> Path:
    """An ImageFolder tree of links to the first `train_per_class`/`test_per_class` images of each class."""
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for cls in sorted((images / split).iterdir()):
            (out / split / cls.name).mkdir(parents=True, exist_ok=True)
            for image in sorted(cls.iterdir())[:count]:
                (out / split / cls.name / image.name).symlink_to(image)
    return out


def tree_pss_kib(pid: int) -> int:
    """Summed PSS of `pid` and its descendants, KiB."""
    todo, total = [pid], 0
    while todo:
        current = todo.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
            with open(f"/proc/{current}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return total


def peak_pss(command: list[str], cwd: Path) -> tuple[float, float, int]:
    """(peak GiB of the process tree's PSS, seconds, exit status) of `command`."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_pss_kib(process.pid))
        time.sleep(0.25)
    if process.returncode != 0:
        sys.stderr.write(process.stderr.read()[-2000:])
    return peak / 2**20, time.monotonic() - started, process.returncode


def stored_bytes(cache: Path, stage: str, name: str) -> int:
    return sum(p.stat().st_size for p in (cache / stage).glob(f"*/{name}"))


def pipeline_row(images: Path, work: Path, scale: int) -> tuple[str, dict]:
    """One whole-pipeline run on IMAGES_1X * scale training images; its row and its measured sizes."""
    folder = image_folder(
        images, work / f"folder{scale}", scale * IMAGES_1X // CLASSES, scale * TEST_1X // CLASSES
    )
    roar = Path(sys.executable).parent / "roar"
    cache = work / f"cache{scale}"
    command = [str(roar), *PIPELINE, f"dataset.root={folder}", "dataset.storage=shards",
               f"paths.cache_dir={cache}", f"hydra.run.dir={work / f'run{scale}'}"]  # fmt: skip
    gib, seconds, status = peak_pss(command, work)
    pixels = scale * (IMAGES_1X + TEST_1X) * 3 * SIDE * SIDE
    sizes = {
        "store": stored_bytes(cache, STAGE, "*.npy") / pixels,
        # codes of every split (train and val: the training folder; test), one byte per H x W pixel
        "codes": stored_bytes(cache, "saliency", "codes.npy") / (pixels / 3),
    }
    row = (f"storage=shards, {scale * IMAGES_1X} training images at {SIDE}x{SIDE} (+{scale * TEST_1X} test), "
           f"store -> FullGrad codes -> 1 ROAR cell (small_cnn, 1 epoch): peak PSS of the process tree "
           f"{gib:.2f} GiB, {seconds / 60:.0f} min, exit {status}; store {sizes['store']:.3f} B per uint8 "
           f"pixel value, codes {sizes['codes']:.3f} B per pixel per method")  # fmt: skip
    return row, {"gib": gib, **sizes, "cache": cache, "folder": folder}


def training_rates(overrides: list[str], cache: Path, rounds: int = 3, batches: int = 30) -> dict[str, float]:
    """Training images per second in memory and from shards, on the same store (`batches` steps of one
    epoch, one validation batch for the checkpoint, the test pass), medians of `rounds` interleaved fits."""
    from roar.runtime.cache import Work
    from roar.stages import load_data
    from roar.stages.training import train_classifier

    seconds: dict[str, list[float]] = {"memory": [], "shards": []}
    fits = {}
    for storage in seconds:
        cfg = config(*overrides, f"dataset.storage={storage}", "trainer.max_epochs=1",
                     f"+trainer.limit_train_batches={batches}", "+trainer.limit_val_batches=1")  # fmt: skip
        fits[storage] = (cfg, load_data(cfg, StageCache(cache)))
    for _ in range(rounds):
        for storage, (cfg, datamodule) in fits.items():
            with tempfile.TemporaryDirectory() as scratch:
                started = time.perf_counter()
                train_classifier(cfg.model, cfg.trainer, datamodule, 0, Work(Path(scratch)))
                seconds[storage].append(time.perf_counter() - started)
    size = fits["memory"][1].batch_size
    return {storage: batches * size / statistics.median(times) for storage, times in seconds.items()}


def throughput_row(what: str, rates: dict[str, float], workers: int) -> str:
    memory, shards = rates["memory"], rates["shards"]
    return (
        f"{what}: in memory {memory:.0f} img/s, from shards ({workers} workers) {shards:.0f} img/s: "
        f"{shards / memory:.2f}x (target >= 0.8x)"
    )


def ranking_overhead(folder: Path, cache: Path, images: int = 256, rounds: int = 5) -> str:
    """FullGrad's maps ranked into removal codes against the maps alone, on the same images."""
    from roar import saliency
    from roar.models import SmallCNN
    from roar.stages import load_data
    from roar.stages.saliency import explain_rows

    cfg = config(*PIPELINE, f"dataset.root={folder}", "dataset.storage=shards")
    datamodule = load_data(cfg, StageCache(cache))
    images = min(images, len(datamodule.splits["train"]))
    torch.manual_seed(0)
    explainer = saliency.create("fullgrad", SmallCNN(3, CLASSES, (16, 32, 32)).eval())
    variants = {"maps": None, "codes": 0}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, codes_seed in variants.items():
            with tempfile.TemporaryDirectory() as scratch:
                started = time.perf_counter()
                rows = explain_rows(explainer, datamodule, "train", 0, images, 32, codes_seed)
                torch.save(rows, Path(scratch) / "out.pt")  # written, as a shard is
                seconds[name].append(time.perf_counter() - started)
    maps, codes = (statistics.median(seconds[n]) for n in variants)
    return (
        f"FullGrad on small_cnn, {images} images at {SIDE}x{SIDE}, batches of 32: maps {maps:.1f} s, "
        f"maps ranked into codes and written {codes:.1f} s: {codes / maps:.3f}x (target <= 1.1x)"
    )


def projection_rows(sizes: dict) -> list[str]:
    """What the published datasets need, from the measured bytes per pixel (arithmetic, not measured)."""
    rows = []
    for name, (train, test) in PUBLISHED.items():
        pixels = (train + test) * SIDE * SIDE
        rows.append(
            f"{name} at {SIDE}x{SIDE} (projected from the measured bytes per pixel, not measured): store "
            f"{sizes['store'] * 3 * pixels / 1e9:.0f} GB, codes {sizes['codes'] * pixels / 1e9:.0f} GB per "
            f"method (float32 maps would be {4 * pixels / 1e9:.0f} GB)"
        )
    return rows


def run() -> list[str]:
    with cifar10_images() as images:
        if images is None:
            return [f"storage: {NO_IMAGES}"]
        with tempfile.TemporaryDirectory(dir=os.environ.get("ROAR_BENCH_DIR")) as folder:
            work = Path(folder)
            one, sizes = pipeline_row(images, work, 1)
            four, sizes4 = pipeline_row(images, work, 4)
            growth = f"4x the images: peak {sizes4['gib'] / sizes['gib']:.3f}x the 1x run's (target <= 1.15x)"
            rows = [one, four, growth]
            overrides = [*PIPELINE, f"dataset.root={sizes['folder']}"]
            rates = training_rates(overrides, sizes["cache"])
            what = (
                f"training small_cnn at {SIDE}x{SIDE}, batch 64, 30 steps and a test pass, medians of 3 fits"
            )
            rows.append(throughput_row(what, rates, config(*overrides).dataset.workers))
            rows.append(ranking_overhead(sizes["folder"], sizes["cache"]))
            return rows + projection_rows(sizes)


if __name__ == "__main__":
    for row in run():
        print(row)
