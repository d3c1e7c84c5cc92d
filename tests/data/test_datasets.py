"""torchvision's real dataset classes on tiny files in each real on-disk format, through roar's datamodule and
its configs (roar/conf/dataset/)."""

from functools import partial

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torchvision.datasets import CIFAR10, CIFAR100, MNIST, SVHN, FashionMNIST

from roar.cli.app import experiment
from roar.config import ConfigError
from roar.data import VisionDataModule
from roar.data.vision import holdout
from roar.runtime.cache import StageCache
from tests import dataset_files
from tests.conftest import compose_config


def _datamodule(tmp_path, name: str, storage: str = "memory", **kwargs) -> VisionDataModule:
    """The datamodule `dataset=<name>` builds over tmp_path/data, `kwargs` replacing config values, its
    splits read from the store under tmp_path/cache (in memory, or from its shards)."""
    cfg = compose_config(tmp_path, f"dataset={name}", f"dataset.root={tmp_path / 'data'}")
    try:
        dm = instantiate(cfg.dataset.datamodule, **kwargs)
    except InstantiationException as error:  # Hydra wraps what the constructor raised
        raise error.__cause__ from None
    dm.prepare(StageCache(tmp_path / "cache"), storage=storage)
    return dm


def _assert_reads_back(dm: VisionDataModule, written, val_fraction: float = 0.1, split_seed: int = 0):
    """The test split exactly as written; train + val exactly the written training split, carved by a seeded
    class-stratified hold-out; uint8 kept."""
    train_images, train_labels = written["train"]
    test_images, test_labels = written["test"]
    assert torch.equal(dm.splits["test"].images[:], test_images)
    assert torch.equal(dm.splits["test"].labels, test_labels)
    kept, held_out = holdout(train_labels, val_fraction, split_seed)
    assert torch.equal(dm.splits["train"].images[:], train_images[kept])
    assert torch.equal(dm.splits["val"].images[:], train_images[held_out])
    assert torch.equal(dm.splits["val"].labels, train_labels[held_out])
    assert all(split.images.dtype == torch.uint8 for split in dm.splits.values())
    # Normalisation statistics come from the training split alone.
    expected_mean = train_images[kept].double().div(255).mean(dim=(0, 2, 3)).float()
    assert torch.allclose(dm.mean, expected_mean, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "folder", "cls"), [("mnist", "MNIST", MNIST), ("fashion_mnist", "FashionMNIST", FashionMNIST)]
)
@pytest.mark.parametrize("storage", ["memory", "shards"])
def test_mnist_idx_files_load_through_the_real_class(tmp_path, name, folder, cls, storage):
    written = dataset_files.write_mnist(tmp_path / "data", folder=folder)
    dm = _datamodule(tmp_path, name, storage)
    _assert_reads_back(dm, written)
    assert dm.image_shape == (1, 28, 28)
    target = compose_config(tmp_path, f"dataset={name}").dataset.datamodule.dataset._target_
    assert target == f"torchvision.datasets.{cls.__name__}"


@pytest.mark.parametrize("storage", ["memory", "shards"])
def test_image_folder_of_pngs_loads_through_the_real_class(tmp_path, storage):
    written = dataset_files.write_image_folder(tmp_path / "data", classes=3, size=16)
    dm = _datamodule(tmp_path, "imagefolder", storage, num_classes=3, image_size=16)
    assert all(split.images.resident == (storage == "memory") for split in dm.splits.values())
    _assert_reads_back(dm, written)
    assert dm.image_shape == (3, 16, 16)


def test_image_folder_images_are_resized_and_centre_cropped_to_image_size(tmp_path):
    dataset_files.write_image_folder(tmp_path / "data", classes=3, size=16)
    dm = _datamodule(tmp_path, "imagefolder", num_classes=3, image_size=8)
    assert dm.image_shape == (3, 8, 8) and dm.splits["train"].images.dtype == torch.uint8


@pytest.mark.parametrize(
    ("name", "cls", "write"),
    [("cifar10", CIFAR10, dataset_files.write_cifar10), ("cifar100", CIFAR100, dataset_files.write_cifar100),
     ("svhn", SVHN, dataset_files.write_svhn)],
)  # fmt: skip
def test_checksummed_formats_load_through_the_real_reader_and_the_real_class_refuses_them(
    tmp_path, name, cls, write
):
    root = tmp_path / "data"
    written = write(root)
    # The published files' MD5 sums are constants of the class: torchvision itself refuses the tiny files...
    with pytest.raises(ConfigError, match=r"^dataset: Dataset not found or corrupted; expected "):
        _datamodule(tmp_path, name)
    # ...and reads them with nothing changed but those constants (see dataset_files.with_checksums_of).
    written_cls = partial(dataset_files.with_checksums_of(cls, root), root=root, download=False)
    dm = _datamodule(tmp_path, name, dataset=written_cls, val_fraction=0.5 if name == "cifar100" else 0.1)
    _assert_reads_back(dm, written, val_fraction=0.5 if name == "cifar100" else 0.1)
    assert dm.image_shape == (3, 32, 32)


def test_svhn_label_10_is_digit_0(tmp_path):
    root = tmp_path / "data"
    written = dataset_files.write_svhn(root)
    svhn = dataset_files.with_checksums_of(SVHN, root)(root, split="test")
    assert torch.equal(torch.as_tensor(svhn.labels), written["test"][1])
    assert (written["test"][1] == 0).any()


def test_split_is_seeded(tmp_path):
    dataset_files.write_mnist(tmp_path / "data")
    first, again = _datamodule(tmp_path, "mnist"), _datamodule(tmp_path, "mnist")
    other = _datamodule(tmp_path, "mnist", split_seed=1)
    assert torch.equal(first.splits["val"].images[:], again.splits["val"].images[:])
    assert not torch.equal(first.splits["val"].images[:], other.splits["val"].images[:])


@pytest.mark.parametrize(
    ("name", "where"),
    [("cifar10", "cifar-10-batches-py/"), ("cifar100", "cifar-100-python/"), ("svhn", "train_32x32.mat"),
     ("mnist", "MNIST/raw/"), ("fashion_mnist", "FashionMNIST/raw/"), ("imagefolder", "train/")],
)  # fmt: skip
def test_a_missing_dataset_is_one_line_saying_where_and_how(tmp_path, name, where):
    cfg = compose_config(tmp_path, f"dataset={name}", f"dataset.root={tmp_path / 'nowhere'}", "logger=none")
    with pytest.raises(ConfigError) as error:
        experiment(cfg)
    message = str(error.value)
    assert "\n" not in message and f"{tmp_path / 'nowhere'}/{where}" in message
    assert ("dataset.download=true" in message) == (name != "imagefolder")
    assert not (tmp_path / "cache").exists()  # nothing was computed


def test_wrong_channels_or_classes_are_one_line_errors(tmp_path):
    dataset_files.write_image_folder(tmp_path / "data", classes=3, size=16)
    with pytest.raises(ConfigError, match="dataset.num_classes: 2, but the train labels go up to 2"):
        _datamodule(tmp_path, "imagefolder", num_classes=2, image_size=16)
    with pytest.raises(ConfigError, match="dataset.channels: 1, but the train images have 3 channels"):
        _datamodule(tmp_path, "imagefolder", num_classes=3, channels=1, image_size=16)


def test_cli_reports_a_missing_dataset_in_one_line_and_exits_nonzero(run_roar, tmp_path):
    done = run_roar("dataset=cifar10", f"dataset.root={tmp_path / 'nowhere'}", "logger=none")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("roar: error: dataset: Dataset not found or corrupted; expected ")
    assert "dataset.download=true" in line


def test_train_size_keeps_a_seeded_class_stratified_subset_and_the_same_validation_split(tmp_path):
    dataset_files.write_mnist(tmp_path / "data")  # 120 training images, 12 per class
    full = _datamodule(tmp_path, "mnist")
    subset = _datamodule(tmp_path, "mnist", train_size=40)
    assert len(subset.splits["train"]) == 40
    assert torch.bincount(subset.splits["train"].labels).tolist() == [4] * 10
    assert torch.equal(subset.splits["val"].images[:], full.splits["val"].images[:])
    kept = {image.numpy().tobytes() for image in full.splits["train"].images[:]}
    assert all(image.numpy().tobytes() in kept for image in subset.splits["train"].images[:])
    again = _datamodule(tmp_path, "mnist", train_size=40)
    assert torch.equal(subset.splits["train"].images[:], again.splits["train"].images[:])


def test_image_folder_needs_its_root_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match=r"^dataset.root: required"):
        experiment(compose_config(tmp_path, "dataset=imagefolder", "logger=none"))


@pytest.mark.parametrize(("grey", "channels"), [(False, 3), (True, 1)])
def test_image_folder_takes_classes_and_channels_from_the_folder(tmp_path, grey, channels):
    written = dataset_files.write_image_folder(tmp_path / "data", classes=4, size=8, grey=grey)
    cfg = compose_config(tmp_path, "dataset=imagefolder", f"dataset.root={tmp_path / 'data'}")
    assert (cfg.dataset.num_classes, cfg.dataset.channels) == (4, channels)
    dm = instantiate(cfg.dataset.datamodule, image_size=8)
    dm.prepare(StageCache(tmp_path / "cache"))
    assert dm.image_shape == (channels, 8, 8) and dm.num_classes == 4
    assert torch.equal(dm.splits["test"].images[:], written["test"][0])
    # Given values win over the folder's.
    given = compose_config(tmp_path, "dataset=imagefolder", f"dataset.root={tmp_path / 'data'}",
                           "dataset.num_classes=7")  # fmt: skip
    assert given.dataset.num_classes == 7
