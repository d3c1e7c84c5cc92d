"""The ground-truth dataset and the oracle: the pipeline must measure what it claims where the answer is
known."""

import csv

import pytest
import torch

from roar import saliency
from roar.cli.app import experiment
from roar.data import SyntheticDataModule
from roar.data.datamodule import SPLITS
from roar.data.synthetic import PATTERNS
from roar.models import SmallCNN
from roar.stages.saliency import explain_rows
from tests.conftest import compose_config


def _small(**kwargs):
    return SyntheticDataModule(train_size=300, val_size=60, test_size=60, **kwargs)


def test_the_patch_holds_the_class_pattern_and_nothing_else_depends_on_the_class():
    dm = _small(num_classes=4, channels=3, image_size=16, patch_sizes=(4, 5, 6), contrast=0.8)
    images, labels = dm.splits["train"].images[:], dm.splits["train"].labels
    masks = dm.ground_truth["train"]
    assert images.shape == (300, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    every_label = torch.cat([dm.splits[s].labels for s in SPLITS])
    assert torch.bincount(every_label).tolist() == [105] * 4
    sides = masks.sum((1, 2)).float().sqrt()
    assert set(sides.tolist()) == {4.0, 5.0, 6.0}
    for cls in range(4):  # every size (and corner of the image) occurs in every class
        assert set(sides[labels == cls].tolist()) == {4.0, 5.0, 6.0}
    for image, label, mask, side in zip(images, labels, masks, sides.long()):
        rows, cols = mask.nonzero(as_tuple=True)
        patch = image[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        i, j = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        expected = 0.5 + 0.8 * (PATTERNS[label](i, j).float() - 0.5)
        assert patch.shape[1:] == (side, side) and torch.allclose(patch, expected.expand_as(patch))
    assert dm.informative_fraction == 36 / 256


def test_generation_is_reproducible_from_the_seed():
    a, b, c = _small(seed=3), _small(seed=3), _small(seed=4)
    assert torch.equal(a.splits["test"].images[:], b.splits["test"].images[:])
    assert torch.equal(a.ground_truth["val"], b.ground_truth["val"])
    assert not torch.equal(a.splits["test"].images[:], c.splits["test"].images[:])


def test_the_oracle_returns_the_ground_truth_of_every_split():
    dm = _small()
    oracle = saliency.create("oracle", SmallCNN(1, 4, widths=(4,)).eval())
    for split in SPLITS:
        maps = explain_rows(oracle, dm, split, 0, len(dm.splits[split]), batch_size=64)
        assert torch.equal(maps, dm.ground_truth[split].float())


def test_the_oracle_refuses_data_without_ground_truth():
    oracle = saliency.create("oracle", SmallCNN(1, 4, widths=(4,)).eval())
    with pytest.raises(ValueError, match="ground-truth"):
        oracle.pixel_maps(torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))


def _oracle_and_random_roar(tmp_path, *overrides: str) -> dict:
    """ROAR with the oracle and random removal at the largest patch's area fraction: the oracle removes
    every informative pixel, random removal a random ~14 % of them. -> {(method, fraction, seed): acc}"""
    cfg = compose_config(
        tmp_path, "dataset=synthetic", "method=[oracle,random]", f"roar.fractions=[{FRACTION}]",
        "logger=none", *overrides,
    )  # fmt: skip
    run_dir = experiment(cfg)
    summary = (run_dir / "summary.md").read_text()
    assert summary.index("| oracle |") < summary.index("| random |")  # the oracle ranks first
    with open(run_dir / "results.csv") as f:
        return {
            (r["method"], float(r["fraction"]), int(r["seed"])): float(r["test_acc"])
            for r in csv.DictReader(f)
        }


# The largest patch's area, 36 of the 256 pixels, on the 1 % grid of removal codes: round(0.14 * 256) = 36.
FRACTION = 0.14
CHANCE = 1 / 4


def test_removing_the_oracles_pixels_drops_retrained_accuracy_to_chance_and_random_removal_does_not(tmp_path):
    acc = _oracle_and_random_roar(
        tmp_path, "trainer.max_epochs=4", "dataset.datamodule.train_size=1000",
        "dataset.datamodule.val_size=200", "dataset.datamodule.test_size=300",
    )  # fmt: skip
    assert acc[("oracle", 0.0, 0)] > 0.95  # the task is learnable
    assert acc[("oracle", FRACTION, 0)] < CHANCE + 0.1
    assert acc[("random", FRACTION, 0)] > 0.85
