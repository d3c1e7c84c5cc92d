"""The data path's throughput: masked, normalised, cropped and flipped training batches (images/s) cut from
uint8 tensors, against the time the network needs to train on them, and against a per-image torchvision
pipeline (a Dataset with transforms.v2 RandomCrop + RandomHorizontalFlip, fed through a DataLoader).

CPU rows always (torch's thread count: OMP_NUM_THREADS, else one per core); the same on the GPU when CUDA is
there (data resident on the device).
"""

from __future__ import annotations

import time

import torch
from pytorch_lightning import Trainer
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from benchmarks.timing import NO_CUDA, config, interleaved, synchronize
from benchmarks.training import EPOCHS, plain_epochs, synthetic_datamodule
from roar.data import TensorDataModule
from roar.removal import removal_codes
from roar.stages import removed_datamodule

IMAGES, BATCH, ROUNDS = 16384, 256, 3


def masked_datamodule(device: torch.device) -> TensorDataModule:
    """CIFAR-shaped uint8 data with 50% of every image's pixels removed, in training mode on `device`."""
    datamodule = synthetic_datamodule(IMAGES, BATCH)
    codes = {name: removal_codes(torch.rand(len(split), 32, 32)) for name, split in datamodule.splits.items()}
    masked = removed_datamodule(datamodule, codes, fraction=0.5, seed=0)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    masked.trainer = Trainer(accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False)
    masked.setup("fit")  # the splits move to the device, as under a Trainer
    masked.trainer.training = True
    return masked


def batched_epoch(datamodule: TensorDataModule) -> float:
    synchronize()
    start = time.perf_counter()
    for batch in datamodule.train_dataloader():
        images, _ = datamodule.on_after_batch_transfer(batch, 0)
    synchronize()
    return time.perf_counter() - start


class _PerImage(Dataset):
    """The conventional alternative: one image at a time through torchvision's transforms."""

    def __init__(self, datamodule: TensorDataModule):
        self.split, self.removal = datamodule.splits["train"], datamodule.removal
        normalize = v2.Normalize(datamodule.mean.tolist(), datamodule.std.tolist())
        self.transform = v2.Compose([v2.ToDtype(torch.float32, scale=True), normalize,
                                     v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])  # fmt: skip

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        image = self.split.images[i].clone()
        image[:, self.removal.mask(self.split.codes[i])] = 0  # on the raw image: like for like
        return self.transform(image), self.split.labels[i]


def per_image_epoch(datamodule: TensorDataModule) -> float:
    start = time.perf_counter()
    for _ in DataLoader(_PerImage(datamodule), batch_size=BATCH, shuffle=True):
        pass
    return time.perf_counter() - start


def _rows(device: torch.device, label: str) -> list[str]:
    datamodule = masked_datamodule(device)
    variants = {"batched": lambda: batched_epoch(datamodule)}
    if device.type == "cpu":
        variants["per_image"] = lambda: per_image_epoch(datamodule)
    seconds = interleaved(variants, ROUNDS)
    rate = IMAGES / seconds["batched"]
    rows = [f"{label}: masked+normalised+crop/flip batches of {BATCH} (3x32x32 uint8, 50% removed): "
            f"{rate:.0f} img/s (median of {ROUNDS} interleaved epochs of {IMAGES})"]  # fmt: skip
    if "per_image" in seconds:
        rows.append(f"{label}: per-image torchvision v2 pipeline through a DataLoader (no workers): "
                    f"{IMAGES / seconds['per_image']:.0f} img/s; batched is "
                    f"{seconds['per_image'] / seconds['batched']:.0f}x faster")  # fmt: skip
    # What the data path costs next to training on the same batches (the small CNN on the CPU, ResNet-18
    # in bf16 on the GPU): the fraction of a training epoch spent forming batches.
    model = "small_cnn" if device.type == "cpu" else "resnet18_cifar"
    cfg = config(
        "dataset=cifar10", f"model={model}", "trainer=cpu" if device.type == "cpu" else "trainer=gpu"
    )
    train_seconds = plain_epochs(cfg, synthetic_datamodule(IMAGES, BATCH)) / EPOCHS
    share = 100 * seconds["batched"] / train_seconds
    rows.append(f"{label}: forming the batches takes {share:.1f}% of a training epoch of {model} on them "
                f"({IMAGES / train_seconds:.0f} img/s)")  # fmt: skip
    return rows


def run() -> list[str]:
    rows = _rows(torch.device("cpu"), f"cpu ({torch.get_num_threads()} threads)")
    if torch.cuda.is_available():
        return rows + _rows(torch.device("cuda"), f"gpu {torch.cuda.get_device_name()}")
    return rows + [f"gpu data path: {NO_CUDA}"]
