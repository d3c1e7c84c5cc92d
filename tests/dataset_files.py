"""Tiny datasets written in each real on-disk format that torchvision's classes read.

Every writer returns the (N, C, H, W) uint8 images and int64 labels it wrote, split by "train"/"test", so
tests can compare them with what the classes read back. Images carry their class as a bright square at a
class-specific position on noise, so a network can learn them in a few epochs.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image
from torchvision.datasets import CIFAR10, SVHN


def class_images(labels: np.ndarray, channels: int, size: int, seed: int) -> np.ndarray:
    """uint8 (N, C, size, size): dim noise with a bright square whose position encodes the label."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(len(labels), channels, size, size), dtype=np.uint8)
    side = size // 4
    for i, label in enumerate(labels):
        row, col = divmod(int(label) % 16, 4)
        images[i, :, row * side : (row + 1) * side, col * side : (col + 1) * side] = 255
    return images


def _labels(n: int, num_classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(n) % num_classes)


def _make(sizes: dict[str, int], num_classes: int, channels: int, size: int):
    made = {}
    for i, (split, n) in enumerate(sizes.items()):
        labels = _labels(n, num_classes, seed=i)
        made[split] = (class_images(labels, channels, size, seed=10 + i), labels)
    return made


def _as_torch(made) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {s: (torch.from_numpy(x), torch.from_numpy(y).long()) for s, (x, y) in made.items()}


def _pickle(path: Path, entry: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)  # the protocol of the published (python 2) pickles


def write_cifar10(root: Path, train: int = 120, test: int = 20):
    """cifar-10-batches-py/: data_batch_1..5 and test_batch ({"data": (n, 3072) uint8 rows, R then G then B
    planes, "labels": [...]}) and batches.meta ({"label_names": [...]})."""
    made = _make({"train": train, "test": test}, 10, 3, 32)
    folder = Path(root) / CIFAR10.base_folder
    folder.mkdir(parents=True)
    images, labels = made["train"]
    for b, part in enumerate(np.array_split(np.arange(train), 5), start=1):
        _pickle(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5",
                "data": images[part].reshape(len(part), -1), "labels": labels[part].tolist(),
                "filenames": [f"{i}.png" for i in part]})  # fmt: skip
    images, labels = made["test"]
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": images.reshape(test, -1),
            "labels": labels.tolist(), "filenames": [f"{i}.png" for i in range(test)]})  # fmt: skip
    _pickle(folder / "batches.meta", {"label_names": [f"class{c}" for c in range(10)], "num_vis": 3072})
    return _as_torch(made)


def write_cifar100(root: Path, train: int = 200, test: int = 100):
    """cifar-100-python/: train and test ({"data": (n, 3072) uint8, "fine_labels": [...],
    "coarse_labels": [...]}) and meta ({"fine_label_names": [...], "coarse_label_names": [...]})."""
    made = _make({"train": train, "test": test}, 100, 3, 32)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, (images, labels) in made.items():
        _pickle(folder / split, {"batch_label": split, "data": images.reshape(len(labels), -1),
                "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist()})  # fmt: skip
    names = {"fine_label_names": [f"fine{c}" for c in range(100)],
             "coarse_label_names": [f"coarse{c}" for c in range(20)]}  # fmt: skip
    _pickle(folder / "meta", names)
    return _as_torch(made)


def _idx(path: Path, array: np.ndarray) -> None:
    """The idx format: a big-endian magic (0, 0, type 0x08 = uint8, number of dimensions), each dimension
    as a big-endian int32, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", train: int = 120, test: int = 30):
    """<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, uncompressed, as torchvision leaves them
    after downloading (folder: MNIST or FashionMNIST)."""
    made = _make({"train": train, "test": test}, 10, 1, 28)
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = made[split]
        _idx(raw / f"{prefix}-images-idx3-ubyte", images[:, 0])
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return _as_torch(made)


def write_svhn(root: Path, train: int = 120, test: int = 20):
    """train_32x32.mat and test_32x32.mat (MATLAB 5, as scipy writes it): X (32, 32, 3, N) uint8 and
    y (N, 1) with the digit 0 labelled 10."""
    made = _make({"train": train, "test": test}, 10, 3, 32)
    Path(root).mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in made.items():
        y = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
        scipy.io.savemat(Path(root) / f"{split}_32x32.mat", {"X": images.transpose(2, 3, 1, 0), "y": y})
    return _as_torch(made)


def write_image_folder(
    root: Path, classes: int = 3, train: int = 36, test: int = 12, size: int = 16, grey: bool = False
):
    """<root>/{train,test}/<class name>/<i>.png, RGB (grey=True: one-channel "L" images)."""
    made = _make({"train": train, "test": test}, classes, 1 if grey else 3, size)
    for split, (images, labels) in made.items():
        order = np.lexsort((np.arange(len(labels)), labels))  # ImageFolder lists class by class, files sorted
        made[split] = (images[order], labels[order])
        for rank, i in enumerate(order):
            folder = Path(root) / split / f"class_{labels[i]}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = images[i].transpose(1, 2, 0)
            Image.fromarray(pixels[..., 0] if grey else pixels).save(folder / f"{rank:04d}.png")
    return _as_torch(made)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def with_checksums_of(cls: type, root: Path) -> type:
    """`cls` (CIFAR10, CIFAR100 or SVHN) with the MD5 sums it checks files against set to those of the files
    written under `root`.

    These classes compare each file with MD5 constants of the published data, which no generated file can
    match. The subclass changes only those constants: torchvision's own integrity check, reading and
    decoding run unchanged, and pass because the files are intact.
    """
    if issubclass(cls, CIFAR10):
        folder = Path(root) / cls.base_folder
        checked = lambda files: [[name, _md5(folder / name)] for name, _ in files]  # noqa: E731
        meta = {**cls.meta, "md5": _md5(folder / cls.meta["filename"])}
        attributes = {
            "train_list": checked(cls.train_list),
            "test_list": checked(cls.test_list),
            "meta": meta,
        }
    elif issubclass(cls, SVHN):
        split_list = {s: [url, name, _md5(Path(root) / name) if (Path(root) / name).exists() else md5]
                      for s, (url, name, md5) in cls.split_list.items()}  # fmt: skip
        attributes = {"split_list": split_list}
    else:
        raise TypeError(f"{cls.__name__} checks no MD5 sums")
    return type(f"Written{cls.__name__}", (cls,), attributes)
