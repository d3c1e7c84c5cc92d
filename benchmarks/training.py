"""Training throughput (images/s) of roar's Lightning path against a plain PyTorch loop over the same network,
data path (uint8 tensors, per-batch normalisation and crop+flip), optimiser and schedule.

Both run one untimed warm-up epoch, then EPOCHS timed ones; the two alternate ROUNDS times and the medians
are compared. CPU rows use torch's thread count (OMP_NUM_THREADS, else one per core). The Lightning path is
the pipeline's: ImageClassifier (loss, torchmetrics accuracy, logging) under a Trainer built from
roar/conf/trainer/, without validation, checkpoints or progress bar. The plain loop does the recipe's work by
hand: its parameter groups, training loss, data-dependent initialisation and weight average (fast_cifar).
The GPU rows (trainer=gpu: bf16, channels-last, data on the device) are run by benchmarks/gpu.py.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch.optim.swa_utils import AveragedModel

from benchmarks.timing import config, interleaved, synchronize
from roar.data import RandomCropFlip, Split, TensorDataModule
from roar.models import WarmEMA

IMAGES, EPOCHS, ROUNDS = 8192, 2, 5


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
    optimizer = classifier.optimizer_factory(classifier.parameter_groups())
    loader = datamodule.train_dataloader()
    total_steps = (1 + EPOCHS) * len(loader)
    scheduler = classifier.scheduler_factory(optimizer, total_steps=total_steps)
    loss_fn = classifier.train_loss
    # As the datamodule's setup does under a Trainer: the data go to the device once.
    datamodule.splits = {name: split.to(device) for name, split in datamodule.splits.items()}
    if hasattr(net, "init_from_data"):
        net.init_from_data(datamodule.training_images(classifier.init_images))
    # The recipe's weight average (WarmEMA), updated after every step as the callback does.
    averaging = next((c for c in classifier.fit_callbacks if isinstance(c, WarmEMA)), None)
    average = AveragedModel(net, avg_fn=averaging._average, use_buffers=True) if averaging else None
    step = 0
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
            step += 1
            if average is not None:
                averaging._progress = step / total_steps
                average.update_parameters(net)
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


def gpu_throughput_rows() -> list[str]:
    """fast_cifar (cifar10_fast's widths and batch) and resnet18_cifar on the GPU: bf16, channels-last."""
    name = torch.cuda.get_device_name()
    fast = config("experiment=cifar10_fast", "trainer=gpu")
    resnet = config("dataset=cifar10", "model=resnet18_cifar", "trainer=gpu")
    return [
        _throughput_row(f"gpu {name} fast_cifar 64/256/256, bf16, batch 1024", fast, 1024),
        _throughput_row(f"gpu {name} resnet18_cifar, bf16, batch 512", resnet, 512),
    ]


def run() -> list[str]:
    """The CPU rows (the GPU's are in benchmarks/gpu.py)."""
    threads = torch.get_num_threads()
    return [
        _throughput_row(f"cpu ({threads} threads) small_cnn, 3x32x32, batch 256",
                        config("dataset=cifar10", "model=small_cnn"), 256),
        _throughput_row(f"cpu ({threads} threads) fast_cifar 32/128/128 (cifar10_cpu), batch 128",
                        config("experiment=cifar10_cpu"), 128),
    ]  # fmt: skip
