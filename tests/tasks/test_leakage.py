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
from tests.conftest import compose_config


def test_the_mask_classifier_reads_masks_that_encode_the_label(tmp_path):
    cfg = compose_config(tmp_path, "trainer.max_epochs=3")
    digits = DigitsDataModule()
    label_codes = {}
    for split in SPLITS:
        labels = digits.splits[split].labels
        # Class c removes the pixels of row c % 8 and, for c >= 8, column 0 too: the mask names the class.
        shaped = torch.zeros(len(labels), 8, 8, dtype=torch.bool)
        shaped[torch.arange(len(labels)), labels % 8] = True
        shaped[labels >= 8, :, 0] = True
        # As removal codes: those pixels go in the first percent, all others last.
        label_codes[split] = torch.where(shaped, 1, 100).to(torch.uint8)
    masks_only = digits.with_mask_inputs(label_codes, 0.01, "roar")
    images, _, codes = masks_only.splits["train"].batch(torch.arange(4))
    shown = masks_only.prepared(images, codes)
    assert torch.equal(
        shown > shown.min(), label_codes["train"][:4].unsqueeze(1) == 1
    )  # the mask, normalised
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
