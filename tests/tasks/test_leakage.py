"""Mask leakage: a classifier trained on the removal masks alone reads the label exactly when the masks
carry it."""

import csv

import torch

from roar.cli.app import experiment
from roar.data import DigitsDataModule
from roar.data.datamodule import SPLITS
from roar.runtime.cache import Work
from roar.stages.training import train_classifier
from roar.tasks.common import majority_share
from roar.tasks.leakage import mask_datamodule
from tests.conftest import compose_config


def test_the_mask_classifier_reads_masks_that_encode_the_label(tmp_path):
    cfg = compose_config(tmp_path, "trainer.max_epochs=3")
    digits = DigitsDataModule()
    label_masks = {}
    for split in SPLITS:
        labels = digits.splits[split].labels
        # Class c removes the pixels of row c % 8 and, for c >= 8, column 0 too: the mask names the class.
        shaped = torch.zeros(len(labels), 8, 8, dtype=torch.bool)
        shaped[torch.arange(len(labels)), labels % 8] = True
        shaped[labels >= 8, :, 0] = True
        label_masks[split] = shaped
    masks_only = mask_datamodule(digits, label_masks)
    assert masks_only.splits["train"].images.shape == (len(digits.splits["train"]), 1, 8, 8)
    assert torch.equal(masks_only.splits["test"].labels, digits.splits["test"].labels)
    read = train_classifier(cfg.model, cfg.trainer, masks_only, 0, Work(tmp_path / "work"))
    assert read["test_acc"] > 0.95
    assert majority_share(digits.splits["test"].labels) < 0.11  # what masks without information give


def test_fullgrads_masks_on_digits_leak_the_label_and_randoms_do_not(tmp_path):
    """The reason FullGrad's ROAR curve on digits can sit above random's: its masks alone name the digit."""
    cfg = compose_config(
        tmp_path, "task=leakage", "method=[fullgrad,random]", "roar.fractions=[0.3]", "trainer.max_epochs=4",
        "logger=none",
    )  # fmt: skip
    run_dir = experiment(cfg)
    with open(run_dir / "leakage.csv") as f:
        acc = {r["method"]: float(r["test_acc"]) for r in csv.DictReader(f)}
    assert set(acc) == {"fullgrad", "random"}
    assert acc["random"] < 0.2  # chance is about 0.1
    assert acc["fullgrad"] > 0.4
    assert (run_dir / "leakage_curve.png").stat().st_size > 10_000
