"""Real CIFAR-10 images on the CPU: test accuracy against training time of `fast_cifar` and of
`resnet18_cifar`, both on the same seeded, class-stratified 10,000 training images, 2 CPU threads.

`fast_cifar` runs twice: with the cifar10_cpu preset's recipe as every ROAR cell trains (8 epochs), for its
time to 60 %; and with the same recipe sized to the five-minute budget (BUDGET_EPOCHS: the schedule anneals
within the budget), for the best accuracy reached within 5 minutes. `resnet18_cifar` runs its own recipe, a
one-cycle schedule over 5 epochs. Time to 60 % is, for both models, the training time at the end of the
first epoch whose test accuracy reaches 60 %.

After every epoch the test split is evaluated with the weights validation sees (the averaged ones under
fast_cifar's WarmEMA); the clock counts training only (validation, cut to one batch, and this evaluation are
left out). The images are the shared JPEGs (45,000 CIFAR-10 training images as train/ and test/ folders):
$ROAR_CIFAR10_JPG (a folder), else the archive cifar10-jpg.tar.gz in data/ of the checkout or in
../shared/data/cifar10/, unpacked into a temporary folder. Without them the rows say
`skipped: no CIFAR-10 images`.

Targets: fast_cifar at >= 80 % test accuracy within 5 minutes of training, and its time to 60 % at most a
tenth of resnet18_cifar's.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from benchmarks.timing import config, prepared, synchronize

ARCHIVE = "cifar10-jpg.tar.gz"
ARCHIVE_PLACES = (Path("data") / ARCHIVE, Path("..") / "shared" / "data" / "cifar10" / ARCHIVE)
NO_IMAGES = "skipped: no CIFAR-10 images"
THREADS = 2
PRESET_EPOCHS, BUDGET_EPOCHS, RESNET_EPOCHS = 8, 26, 5
BUDGET_SECONDS = 300


@contextmanager
def cifar10_images():
    """The folder holding train/ and test/, or None where there are no images."""
    if os.environ.get("ROAR_CIFAR10_JPG"):
        yield Path(os.environ["ROAR_CIFAR10_JPG"])
        return
    archive = next((p for p in ARCHIVE_PLACES if p.is_file()), None)
    if archive is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as folder, tarfile.open(archive) as packed:
        packed.extractall(folder, filter="data")
        yield next(Path(folder).glob("*/train")).parent


def imagefolder(images: Path, *overrides: str) -> list[str]:
    """The overrides that read the shared images (CIFAR-10's crop+flip, as experiment=cifar10_cpu sets)."""
    return ["dataset=imagefolder", f"dataset.root={images}", "dataset.num_classes=10",
            "dataset.image_size=32", "dataset.datamodule.augment.padding=4", *overrides]  # fmt: skip


class AccuracyOverTime(pl.Callback):
    """(training seconds so far, test accuracy) after every epoch."""

    def __init__(self, datamodule, batch_size: int = 1000):
        self.datamodule, self.batch_size = datamodule, batch_size
        self.curve: list[tuple[float, float]] = []
        self.trained = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        synchronize()
        self.started = time.perf_counter()

    def on_validation_epoch_start(self, trainer, pl_module):
        synchronize()
        self.trained += time.perf_counter() - self.started

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer, pl_module):
        # Runs before the weight averaging swaps its average back out (model callbacks come last).
        test = self.datamodule.splits["test"]
        correct = 0
        for start in range(0, len(test), self.batch_size):
            images, labels = test.batch(torch.arange(start, min(start + self.batch_size, len(test))))
            images = self.datamodule.prepared(images.to(pl_module.device))
            correct += (pl_module(images).argmax(1) == labels.to(pl_module.device)).sum().item()
        self.curve.append((self.trained, correct / len(test)))
        synchronize()
        self.started = time.perf_counter()


def accuracy_over_time(cfg, datamodule, seed: int = 0) -> list[tuple[float, float]]:
    pl.seed_everything(seed, verbose=False)
    timer = AccuracyOverTime(datamodule)
    trainer = instantiate(
        cfg.trainer, callbacks=[timer], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1,
    )  # fmt: skip
    trainer.fit(instantiate(cfg.model), datamodule=datamodule)
    return timer.curve


def time_to(curve: list[tuple[float, float]], accuracy: float) -> float | None:
    return next((seconds for seconds, reached in curve if reached >= accuracy), None)


def describe(curve: list[tuple[float, float]]) -> str:
    return ", ".join(f"{seconds:.0f}s:{100 * acc:.1f}%" for seconds, acc in curve)


def run() -> list[str]:
    torch.set_num_threads(THREADS)
    with cifar10_images() as images:
        if images is None:
            return [f"cpu CIFAR-10 accuracy against time: {NO_IMAGES}"]

        def curve(*overrides: str) -> list[tuple[float, float]]:
            cfg = config("experiment=cifar10_cpu", *imagefolder(images, *overrides))
            return accuracy_over_time(cfg, datamodule)

        datamodule = prepared(config("experiment=cifar10_cpu", *imagefolder(images)))
        preset = curve(f"trainer.max_epochs={PRESET_EPOCHS}")
        budget = curve(f"trainer.max_epochs={BUDGET_EPOCHS}")
        resnet = curve("model=resnet18_cifar", f"trainer.max_epochs={RESNET_EPOCHS}")
    within = max((acc for seconds, acc in budget if seconds <= BUDGET_SECONDS), default=0.0)
    fast_60, resnet_60 = time_to(preset, 0.6), time_to(resnet, 0.6)
    if fast_60 is None:
        ratio = "fast_cifar did not reach 60%"
    elif resnet_60 is None:
        bound = fast_60 / resnet[-1][0]
        ratio = (f"resnet18_cifar did not reach 60% in {resnet[-1][0]:.0f} s: ratio < {bound:.3f} "
                 f"(target <= 0.1, {'met' if bound <= 0.1 else 'not shown'})")  # fmt: skip
    else:
        ratio = (
            f"{fast_60 / resnet_60:.3f} (target <= 0.1, {'met' if fast_60 <= 0.1 * resnet_60 else 'NOT met'})"
        )
    header = (f"cpu ({THREADS} threads), shared CIFAR-10 JPEGs, 10000 training images, 5000 test images; "
              f"load average at the end {os.getloadavg()[0]:.1f}")  # fmt: skip
    return [
        header,
        f"fast_cifar, preset recipe ({PRESET_EPOCHS} epochs): {describe(preset)}",
        f"fast_cifar, sized to 5 minutes ({BUDGET_EPOCHS} epochs): {describe(budget)}",
        f"resnet18_cifar ({RESNET_EPOCHS} epochs): {describe(resnet)}",
        f"fast_cifar best within 5 min of training: {100 * within:.1f}% "
        f"(target >= 80%, {'met' if within >= 0.8 else 'NOT met'})",
        f"time to 60%: fast_cifar {fast_60 if fast_60 is None else round(fast_60)} s ({PRESET_EPOCHS}-epoch "
        f"recipe), resnet18_cifar {resnet_60 if resnet_60 is None else round(resnet_60)} s; ratio {ratio}",
    ]
