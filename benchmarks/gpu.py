"""The GPU figures, in one prepared run of a few minutes (`python -m benchmarks gpu`; without CUDA every row
says `skipped: no CUDA device`). On the shared CIFAR-10 JPEGs (benchmarks/cifar.py says where they are
looked for; on a lent GPU machine, copy the archive into data/ of the checkout and carry that folder):

- fast_cifar at cifar10_fast's settings (widths 64/256/256, batch 1024, 10 epochs, bf16, channels-last) on
  39,000 training images (1,000 held out for validation): seconds of training to 93 % test accuracy, median
  of 3 seeds, or the accuracy reached where 93 % is not (the images are JPEG re-encodings, and 40,000 of
  them, not CIFAR-10's 50,000 originals);
- training throughput (img/s, bf16, channels-last) of fast_cifar and resnet18_cifar, Lightning against a
  plain loop (benchmarks/training.py);
- FullGrad against its floor (forward + input-gradient backward) on fast_cifar and resnet18_cifar, batch
  256, medians of interleaved calls;
- ROAD's batched imputation on the GPU, images/s, 50 % of the pixels removed;
- training from the dataset store's shards (DataLoader workers) against in memory on the device;
- the wall time of a reduced cifar10_fast grid (fullgrad and random, one fraction, one seed), cold cache.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.cifar import NO_IMAGES, accuracy_over_time, cifar10_images, imagefolder, time_to
from benchmarks.timing import NO_CUDA, config, prepared, synchronize
from roar.removal import removal_mask
from roar.removal.imputation import noisy_linear_impute
from roar.saliency import FullGrad

SEEDS = (0, 1, 2)
GOAL_ACCURACY = 0.93
ROWS = ("fast_cifar time to 93%", "training throughput", "FullGrad/floor", "ROAD imputation",
        "training from shards", "reduced cifar10_fast grid")  # fmt: skip


def fast_overrides(images: Path, *more: str) -> list[str]:
    return ["experiment=cifar10_fast", "trainer=gpu", "dataset.datamodule.val_fraction=1000",
            *imagefolder(images, *more)]  # fmt: skip


def time_to_goal(images: Path, seeds=SEEDS, *more: str) -> str:
    cfg = config(*fast_overrides(images, *more))
    datamodule = prepared(cfg)
    curves = [accuracy_over_time(cfg, datamodule, seed) for seed in seeds]
    times = [time_to(curve, GOAL_ACCURACY) for curve in curves]
    finals = ", ".join(f"{100 * curve[-1][1]:.2f}%" for curve in curves)
    if all(t is not None for t in times):
        result = f"median {statistics.median(times):.1f} s to {100 * GOAL_ACCURACY:.0f}% (target <= 10 s)"
    else:
        result = f"{100 * GOAL_ACCURACY:.0f}% not reached by every seed"
    trained = len(datamodule.splits["train"])
    return (f"fast_cifar, {trained} training images, {cfg.trainer.max_epochs} epochs, "
            f"seeds {list(seeds)}: {result}; final test accuracy {finals}; training s per seed "
            f"{', '.join(f'{curve[-1][0]:.1f}' for curve in curves)}")  # fmt: skip


def _median_seconds(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        call()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fullgrad_ratio(net: torch.nn.Module, x: torch.Tensor, repeats: int = 20) -> tuple[float, float]:
    """(FullGrad seconds, FullGrad / floor), medians of interleaved rounds."""
    target = torch.zeros(len(x), dtype=torch.long, device=x.device)

    def floor():
        inputs = x.detach().requires_grad_(True)
        torch.autograd.grad(net(inputs).gather(1, target.view(-1, 1)).sum(), inputs)

    explainer = FullGrad(net)
    method = {"floor": floor, "fullgrad": lambda: explainer.attribute(x, target=target)}
    medians = {name: [] for name in method}
    for _ in range(repeats):
        for name, call in method.items():
            medians[name].append(_median_seconds(call, 1))
    seconds = {name: statistics.median(values) for name, values in medians.items()}
    return seconds["fullgrad"], seconds["fullgrad"] / seconds["floor"]


def fullgrad_rows(device: torch.device, batch: int = 256, widths=(64, 256, 256)) -> list[str]:
    from roar.models import FastCifarNet, resnet18_cifar

    rows = []
    x = torch.randn(batch, 3, 32, 32, device=device)
    for name, net in (
        ("fast_cifar", FastCifarNet(3, 10, widths=widths)),
        ("resnet18_cifar", resnet18_cifar(3, 10)),
    ):
        seconds, ratio = fullgrad_ratio(net.to(device).eval(), x)
        rows.append(f"FullGrad on {name}, batch {batch}: {1000 * seconds:.1f} ms, {ratio:.2f}x the floor")
    return rows


def road_rate(device: torch.device, images: int = 4096, repeats: int = 5) -> str:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(images, 3, 32, 32, generator=generator).to(device)
    mask = removal_mask(torch.rand(images, 32, 32, generator=generator), 0.5).to(device)
    seconds = _median_seconds(lambda: noisy_linear_impute(pixels, mask), repeats)
    return (
        f"ROAD imputation, 3x32x32, 50% removed (random order), {images} images: {images / seconds:.0f} img/s"
    )


def storage_row(images: Path) -> str:
    """fast_cifar's training throughput on the GPU from the store's shards (DataLoader workers) against in
    memory on the device (on_device), at cifar10_fast's settings."""
    from benchmarks.storage import throughput_row, training_rates

    workers = 8
    overrides = [*fast_overrides(images), f"dataset.workers={workers}"]
    with tempfile.TemporaryDirectory() as cache:
        rates = training_rates(overrides, Path(cache), rounds=3, batches=30)
    return throughput_row("GPU training, fast_cifar (cifar10_fast), batch 1024, 30 steps", rates, workers)


def reduced_grid(images: Path) -> str:
    overrides = fast_overrides(images, "method=[fullgrad,random]", "roar.fractions=[0.5]", "seeds=[0]",
                               "logger=none")  # fmt: skip
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "roar", *overrides, f"hydra.run.dir={workdir}/run",
             f"paths.cache_dir={workdir}/cache"],
            capture_output=True, text=True,
        )  # fmt: skip
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        return f"reduced cifar10_fast grid: failed ({done.stderr.strip().splitlines()[-1]})"
    return (f"reduced cifar10_fast grid (fullgrad and random at 50%, 1 seed: 3 trainings, 2 saliency stages, "
            f"image decoding included), cold cache: {seconds:.0f} s")  # fmt: skip


class _Rows(list):
    """The rows, each also written to stderr as it is measured: a run stopped at a time limit (a lent GPU's)
    keeps what it had measured."""

    def append(self, row: str) -> None:
        print(f"[gpu row] {row}", file=sys.stderr, flush=True)
        super().append(row)

    def __iadd__(self, rows):
        for row in rows:
            self.append(row)
        return self


def run() -> list[str]:
    if not torch.cuda.is_available():
        return [f"gpu {row}: {NO_CUDA}" for row in ROWS]
    from benchmarks.training import gpu_throughput_rows

    device = torch.device("cuda")
    rows = _Rows()
    rows.append(f"gpu: {torch.cuda.get_device_name()}")
    with cifar10_images() as images:
        if images is None:
            rows += [f"gpu fast_cifar time to 93%: {NO_IMAGES}", f"gpu reduced grid: {NO_IMAGES}"]
        else:
            rows.append(time_to_goal(images))
            rows.append(storage_row(images))
            rows.append(reduced_grid(images))
    rows += gpu_throughput_rows()
    rows += fullgrad_rows(device)
    rows.append(road_rate(device))
    return rows
