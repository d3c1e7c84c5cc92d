"""Pixel perturbation without retraining: the measured logit change against the closed form of a linear
model, and the task end to end."""

import csv

import pytest
import torch
from torch import nn

from roar.app import experiment
from roar.removal import remove
from roar.tasks.perturbation import least_salient_mask, logit_change
from tests.conftest import compose_config


@pytest.mark.parametrize("fill", ["zero", "mean"])
@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.3])
def test_logit_change_of_a_linear_model_equals_the_closed_form(fill, fraction):
    torch.manual_seed(0)
    n, c, h, w, classes = 12, 3, 6, 5, 4
    linear = nn.Linear(c * h * w, classes)
    model = nn.Sequential(nn.Flatten(), linear).eval()
    images = torch.rand(n, c, h, w)
    mean, std = images.mean((0, 2, 3)), images.std((0, 2, 3))
    normalize = lambda x: (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)  # noqa: E731
    targets = torch.randint(classes, (n,))
    maps = torch.rand(n, h, w)

    mask = least_salient_mask(maps, fraction, torch.Generator().manual_seed(0))
    change = logit_change(model, normalize, images, remove(images, mask, fill, mean), targets, batch_size=5)

    k = round(fraction * h * w)
    weights = linear.weight.detach().view(classes, c, h, w)
    for i in range(n):
        removed = maps[i].flatten().argsort()[:k]  # the k least salient pixels
        assert torch.equal(mask[i].flatten().nonzero().flatten().sort().values, removed.sort().values)
        value = torch.zeros(c) if fill == "zero" else mean
        delta = sum(
            weights[targets[i], ch].flatten()[p] * (value[ch] - images[i, ch].flatten()[p]) / std[ch]
            for ch in range(c)
            for p in removed.tolist()
        )
        assert k > 0
        logit = (weights[targets[i]] * normalize(images[i : i + 1])[0]).sum() + linear.bias[targets[i]]
        assert change[i].item() == pytest.approx((delta.abs() / logit.abs()).item(), rel=1e-4, abs=1e-6)


def test_the_perturbation_task_writes_one_row_per_method_and_fraction(tmp_path):
    cfg = compose_config(
        tmp_path, "task=perturbation", "task.fractions=[0.01,0.1,0.5]", "trainer.max_epochs=2", "logger=none",
        "method=[fullgrad,random]",
    )  # fmt: skip
    run_dir = experiment(cfg)
    with open(run_dir / "perturbation.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["method", "fraction", "seed", "logit_change"]
    assert {(r["method"], float(r["fraction"])) for r in rows} == {
        (m, f) for m in ("fullgrad", "random") for f in (0.01, 0.1, 0.5)
    }
    changes = {(r["method"], float(r["fraction"])): float(r["logit_change"]) for r in rows}
    assert all(v > 0 for v in changes.values())
    # Blacking out half of every image moves the logit more than blacking out 1 % of it.
    assert all(changes[(m, 0.5)] > changes[(m, 0.01)] for m in ("fullgrad", "random"))
    assert (run_dir / "perturbation_curve.png").stat().st_size > 10_000
    assert "lower is better" in (run_dir / "summary.md").read_text()
