"""Training throughput (images/s) of roar's Lightning path against a plain PyTorch loop over the same network,
data path (uint8 tensors, per-batch normalisation and crop+flip), optimiser and schedule.

Both run one untimed warm-up epoch, then EPOCHS timed ones; the two alternate ROUNDS times and the medians
are compared. CPU rows use torch's thread count (OMP_NUM_THREADS, else one per core). The Lightning path is
the pipeline's: ImageClassifier (loss, torchmetrics accuracy, logging) under a Trainer built from
conf/trainer/, without validation, checkpoints or progress bar. GPU rows (resnet18_cifar, trainer=gpu: bf16,
channels-last, data on the device) need CUDA; so do the CIFAR-10 time-to-93% and the cifar10 preset's grid,
which also need CIFAR-10 under $ROAR_CIFAR10_ROOT (default data/cifar10).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import nn

from benchmarks.timing import NO_CUDA, config, interleaved, synchronize
from roar.cache import Work
from roar.data import RandomCropFlip, Split, TensorDataModule
from roar.training import train_classifier

IMAGES, EPOCHS, ROUNDS = 8192, 2, 5
CIFAR10_ROOT = Path(os.environ.get("ROAR_CIFAR10_ROOT", "data/cifar10"))


def synthetic_datamodule(images: int, batch_size: int, num_classes: int = 10) -> TensorDataModule:
    """CIFAR-shaped uint8 data in memory, with the CIFAR presets' crop+flip."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=generator)
    split = Split(pixels, torch.randint(0, num_classes, (images,), generator=generator))
    return TensorDataModule({"train": split, "val": split, "test": split}, num_classes, batch_size,
                            augment=RandomCropFlip(padding=4, flip=True))  # fmt: skip


class _SteadyStateTimer(pl.Callback):
    """Seconds from the start of the second epoch to the end of training."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            synchronize()
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        synchronize()
        self.seconds = time.perf_counter() - self.start


def lightning_epochs(cfg, datamodule: TensorDataModule) -> float:
    torch.manual_seed(0)
    timer = _SteadyStateTimer()
    trainer = instantiate(
        cfg.trainer, max_epochs=1 + EPOCHS, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer],
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(instantiate(cfg.model), datamodule=datamodule)
    return timer.seconds


def plain_epochs(cfg, datamodule: TensorDataModule) -> float:
    """The same work written by hand: one warm-up epoch, then EPOCHS timed ones."""
    torch.manual_seed(0)
    on_gpu = cfg.trainer.accelerator == "gpu"
    device = torch.device("cuda" if on_gpu else "cpu")
    classifier = instantiate(cfg.model)
    net = classifier.net.to(device)
    if on_gpu:  # as ImageClassifier's memory_format=auto: channels-last on a CUDA device
        net.to(memory_format=torch.channels_last)
    if cfg.model.compile:
        net.compile()
    optimizer = classifier.optimizer_factory(net.parameters())
    loader = datamodule.train_dataloader()
    scheduler = classifier.scheduler_factory(optimizer, total_steps=(1 + EPOCHS) * len(loader))
    loss_fn = nn.CrossEntropyLoss()
    # As the datamodule's setup does under a Trainer: the data go to the device once.
    datamodule.splits = {name: split.to(device) for name, split in datamodule.splits.items()}
    precision = torch.autocast(device.type, torch.bfloat16, enabled=cfg.trainer.precision == "bf16-mixed")
    for epoch in range(1 + EPOCHS):
        if epoch == 1:
            synchronize()
            start = time.perf_counter()
        for images, labels in datamodule.train_dataloader():
            images = datamodule.augment(datamodule.normalize(images))
            if on_gpu:
                images = images.contiguous(memory_format=torch.channels_last)
            with precision:
                loss = loss_fn(net(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    synchronize()
    return time.perf_counter() - start


def _throughput_row(label: str, cfg, batch_size: int) -> str:
    datamodule = synthetic_datamodule(IMAGES, batch_size)
    seconds = interleaved(
        {
            "lightning": lambda: lightning_epochs(cfg, datamodule),
            "plain": lambda: plain_epochs(cfg, datamodule),
        },
        ROUNDS,
    )
    rate = {name: EPOCHS * IMAGES / s for name, s in seconds.items()}
    overhead = seconds["lightning"] / seconds["plain"] - 1
    verdict = "ok" if overhead <= 0.10 else "OVER the 10% budget"
    return (f"{label}: lightning {rate['lightning']:.0f} img/s, plain loop {rate['plain']:.0f} img/s, "
            f"Lightning/plain time ratio {1 + overhead:.3f} (overhead {100 * overhead:+.1f}%, {verdict}; "
            f"medians of {ROUNDS} interleaved runs of {EPOCHS} epochs x {IMAGES} images)")  # fmt: skip


def _time_to_93() -> str:
    cfg = config("experiment=cifar10", "trainer=gpu", f"dataset.root={CIFAR10_ROOT}")
    datamodule = instantiate(cfg.dataset.datamodule)
    with tempfile.TemporaryDirectory() as workdir:
        synchronize()
        start = time.perf_counter()
        trained = train_classifier(cfg.model, cfg.trainer, datamodule, 0, Work(Path(workdir)), "time-to-93%")
        seconds = time.perf_counter() - start
    reached = "reached" if trained["test_acc"] >= 0.93 else "did NOT reach"
    epochs = cfg.trainer.max_epochs
    return (f"gpu {torch.cuda.get_device_name()}: CIFAR-10 resnet18_cifar, {epochs} epochs (cifar10 preset): "
            f"{seconds:.0f} s, test acc {trained['test_acc']:.4f} ({reached} 93%)")  # fmt: skip


def _cifar10_grid() -> str:
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "roar", "experiment=cifar10", "trainer=gpu", "logger=none",
             f"dataset.root={CIFAR10_ROOT.resolve()}", f"hydra.run.dir={workdir}/run",
             f"paths.cache_dir={workdir}/cache"],
            capture_output=True, text=True,
        )  # fmt: skip
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        return f"gpu cifar10 preset grid: failed ({done.stderr.strip().splitlines()[-1]})"
    return (
        f"gpu {torch.cuda.get_device_name()}: cifar10 preset full grid (cold cache): {seconds / 60:.1f} min"
    )


def run() -> list[str]:
    cpu = f"cpu ({torch.get_num_threads()} threads) small_cnn, 3x32x32, batch 256"
    rows = [_throughput_row(cpu, config("dataset=cifar10", "model=small_cnn"), 256)]
    if not torch.cuda.is_available():
        return rows + [f"gpu resnet18_cifar throughput: {NO_CUDA}", f"gpu CIFAR-10 time-to-93%: {NO_CUDA}",
                       f"gpu cifar10 preset grid wall time: {NO_CUDA}"]  # fmt: skip
    gpu = config("dataset=cifar10", "model=resnet18_cifar", "trainer=gpu")
    rows.append(
        _throughput_row(f"gpu {torch.cuda.get_device_name()} resnet18_cifar, bf16, batch 512", gpu, 512)
    )
    if not (CIFAR10_ROOT / "cifar-10-batches-py").is_dir():
        skipped = f"skipped: CIFAR-10 not under {CIFAR10_ROOT} (set ROAR_CIFAR10_ROOT)"
        return rows + [
            f"gpu CIFAR-10 time-to-93%: {skipped}",
            f"gpu cifar10 preset grid wall time: {skipped}",
        ]
    return rows + [_time_to_93(), _cifar10_grid()]
