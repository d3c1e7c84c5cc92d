"""The presets in roar/conf/experiment/: what each selects, and the MNIST one end to end on MNIST-format
files."""

import csv

import pytest

from roar.config import method_names
from tests import dataset_files
from tests.conftest import compose_config

PAPER_METHODS = ["input_gradient", "integrated_gradients", "smoothgrad", "gradcam", "fullgrad", "random"]


@pytest.mark.parametrize(
    ("preset", "dataset", "model", "methods"),
    [("mnist", "mnist", "roar.models.SmallCNN", ["fullgrad", "simple_fullgrad", "random"]),
     ("cifar10", "cifar10", "roar.models.resnet18_cifar", ["fullgrad", "simple_fullgrad", "random"]),
     ("cifar100_fullgrad_paper", "cifar100", "roar.models.vgg_bn_cifar", PAPER_METHODS)],
)  # fmt: skip
def test_presets_select_dataset_model_methods_and_fractions(tmp_path, preset, dataset, model, methods):
    cfg = compose_config(tmp_path, f"experiment={preset}")
    assert cfg.dataset.name == dataset and cfg.model.net._target_ == model
    assert method_names(cfg) == methods
    assert list(cfg.roar.fractions) == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert cfg.trainer.max_epochs >= 2


def test_presets_leave_the_trainer_to_the_command_line(tmp_path):
    # The CIFAR presets are meant for a GPU, but only trainer=gpu picks one; their epochs survive it.
    cfg = compose_config(tmp_path, "experiment=cifar10", "trainer=gpu")
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.max_epochs == 30


def grid_rows(done, run_dir) -> list[dict]:
    """results.csv of a finished run whose grid is fullgrad and random at 0 and 50 %."""
    assert done.returncode == 0, done.stderr[-3000:]
    with open(run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], float(r["fraction"])) for r in rows} == {
        (m, f) for m in ("fullgrad", "random") for f in (0.0, 0.5)
    }
    return rows


def test_mnist_preset_runs_end_to_end_on_mnist_files(run_roar, tmp_path):
    dataset_files.write_mnist(tmp_path / "data", train=200, test=50)
    done = run_roar(
        "experiment=mnist", f"dataset.root={tmp_path / 'data'}", "dataset.datamodule.train_size=null",
        "dataset.datamodule.val_fraction=0.1", "dataset.datamodule.batch_size=20", "trainer.max_epochs=4",
        "roar.fractions=[0.5]",
        "method=[fullgrad,random]", "logger=none", "hydra.run.dir=run",
    )  # fmt: skip
    rows = grid_rows(done, tmp_path / "run")
    unmodified = float(next(r for r in rows if float(r["fraction"]) == 0)["test_acc"])
    assert unmodified > 0.5  # the class squares are learnable; chance is 0.1


HOOKER = ["input_gradient", "smoothgrad", "smoothgrad_sq", "vargrad", "integrated_gradients",
          "integrated_gradients_sg", "integrated_gradients_sg_sq", "integrated_gradients_var",
          "guided_backprop", "guided_backprop_sg", "guided_backprop_sg_sq", "guided_backprop_var",
          "random"]  # fmt: skip


@pytest.mark.parametrize(
    ("preset", "dataset", "classes", "target"),
    [("imagenet_roar", "imagenet", 1000, "torchvision.datasets.ImageNet"),
     ("food101_roar", "food101", 101, "torchvision.datasets.Food101")],
)  # fmt: skip
def test_the_published_benchmarks_presets_compose_on_the_sharded_store(
    tmp_path, preset, dataset, classes, target
):
    cfg = compose_config(tmp_path, f"experiment={preset}")
    assert (cfg.dataset.name, cfg.dataset.num_classes, cfg.dataset.image_size) == (dataset, classes, 224)
    assert cfg.dataset.storage == "shards" and cfg.dataset.datamodule.dataset._target_ == target
    assert (cfg.model.name, cfg.model.net if "net" in cfg.model else None) == ("resnet50", None)
    assert sorted(method_names(cfg)) == sorted([*HOOKER, "fullgrad"])
    assert list(cfg.roar.fractions) == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert (
        cfg.trainer.accelerator == "gpu" and cfg.trainer.strategy == "ddp_spawn"
    )  # ddp across tasks on SLURM


@pytest.mark.parametrize(("preset", "expected"), [("imagenet_roar", "ILSVRC2012_devkit_t12.tar.gz"),
                                                  ("food101_roar", "food-101/images/")])  # fmt: skip
def test_a_missing_or_incomplete_root_is_one_line_naming_what_was_expected(
    run_roar, tmp_path, preset, expected
):
    missing = run_roar(f"experiment={preset}", f"dataset.root={tmp_path / 'nowhere'}", "logger=none")
    assert missing.returncode == 2
    (line,) = missing.stderr.strip().splitlines()
    assert (
        line.startswith("roar: error: dataset: Dataset not found or corrupted; expected ")
        and expected in line
    )
    assert not (tmp_path / "cache").exists()  # refused before anything was computed
    (tmp_path / "empty").mkdir()
    incomplete = run_roar(f"experiment={preset}", f"dataset.root={tmp_path / 'empty'}",
                          "trainer.accelerator=cpu", "logger=none")  # fmt: skip
    assert incomplete.returncode == 2
    (line,) = incomplete.stderr.strip().splitlines()
    assert line.startswith("roar: error: dataset: ") and expected in line
    assert not (tmp_path / "cache" / "train").exists()  # nothing was trained
