"""F-Fidelity (task=fidelity): the random shares it removes, its scores against closed forms (a model that
reads one pixel), the fine-tuning's data and weights, which no explanation reaches, and the task end to
end."""

import csv

import pytest
import torch
from torch import nn

from roar.cli.app import experiment
from roar.data.datamodule import RandomRemoval, Split, TensorDataModule
from roar.removal import random_members
from roar.report import PER_IMAGE
from roar.runtime.cache import StageCache, spec_key
from roar.stages import training_spec
from roar.tasks.fidelity import fidelity_curves, fine_tuning_data
from tests.conftest import compose_config, run_command


def test_random_members_takes_the_count_from_the_members_alone_and_all_of_them_when_there_are_fewer():
    torch.manual_seed(0)
    members = torch.rand(50, 4, 6) < 0.5
    counts = torch.randint(0, 20, (50,))
    mask = random_members(members, counts, torch.randint(0, 2**31 - 1, (50, 24)))
    assert mask.shape == members.shape
    assert not (mask & ~members).any()  # nothing outside the set
    assert torch.equal(mask.flatten(1).sum(1), torch.minimum(counts, members.flatten(1).sum(1)))


def test_random_members_are_uniform_over_the_set():
    # One member set, 4000 images of it, one draw each: every member is taken about as often.
    members = torch.zeros(4000, 10, dtype=torch.bool)
    members[:, 2:7] = True
    generator = torch.Generator().manual_seed(1)
    mask = random_members(members, torch.full((4000,), 2), torch.randint(0, 2**31 - 1, (4000, 10),
                                                                          generator=generator))  # fmt: skip
    share = mask.float().mean(0)
    assert torch.all(share[~members[0]] == 0)
    assert torch.allclose(share[members[0]], torch.full((5,), 0.4), atol=0.03)  # 2 of 5


class OnePixel(nn.Module):
    """Reads pixel (0, 0) of a 1-channel image: class 0 where it is bright (> 0.5 raw), else class 1."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, x):
        bright = x[:, 0, 0, 0] + self.anchor
        return torch.stack([bright - 0.5, torch.zeros_like(bright)], dim=1)


def _one_pixel_case(n: int = 8):
    images = torch.rand(n, 1, 4, 4) * 0.4  # every pixel dark ...
    images[:, 0, 0, 0] = 1.0  # ... but the one the model reads
    maps = torch.rand(n, 4, 4)
    maps[:, 0, 0] = 2.0  # the faithful map: that pixel first
    return images, torch.zeros(n, dtype=torch.long), maps


@pytest.mark.parametrize("metric", ["accuracy", "probability"])
def test_removing_the_whole_explanation_of_a_one_pixel_model_takes_its_prediction_and_the_rest_nothing(
    metric,
):
    images, labels, maps = _one_pixel_case()
    model = OnePixel()
    plus, minus = fidelity_curves(model, nn.Identity(), images, labels, maps, [0.25, 0.5], beta=1.0,
                                  samples=3, fill="zero", metric=metric)  # fmt: skip
    # The label's probability goes from softmax(0.5, 0) to softmax(-0.5, 0): 2 (p - 1/2) for p of the first.
    drop = 1.0 if metric == "accuracy" else 2 * (torch.softmax(torch.tensor([0.5, 0.0]), 0)[0] - 0.5)
    assert torch.allclose(plus, torch.full_like(plus, float(drop)))  # beta 1: the whole explanation goes
    assert torch.equal(minus, torch.zeros_like(minus))  # the model reads nothing of the rest


def test_a_share_of_zero_changes_nothing_and_a_constant_model_is_not_moved():
    images, labels, maps = _one_pixel_case()
    plus, minus = fidelity_curves(OnePixel(), nn.Identity(), images, labels, maps, [0.5], beta=0.0, samples=2,
                                  fill="zero", metric="probability")  # fmt: skip
    assert torch.equal(plus, torch.zeros_like(plus)) and torch.equal(minus, torch.zeros_like(minus))
    constant = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        constant[1].weight.zero_()
    plus, minus = fidelity_curves(constant, nn.Identity(), images, labels, maps, [0.5], beta=0.5, samples=2)
    assert torch.equal(plus, torch.zeros_like(plus)) and torch.equal(minus, torch.zeros_like(minus))


def test_a_random_share_of_the_explanation_is_removed_on_average_as_often_as_beta():
    # beta 0.5 of a 4-pixel explanation: 2 of them, the read pixel among them half the time.
    images, labels, maps = _one_pixel_case(200)
    plus, _ = fidelity_curves(OnePixel(), nn.Identity(), images, labels, maps, [0.25], beta=0.5, samples=8,
                              fill="zero")  # fmt: skip
    assert 0.4 < plus.mean().item() < 0.6
    again, _ = fidelity_curves(OnePixel(), nn.Identity(), images, labels, maps, [0.25], beta=0.5, samples=8,
                               fill="zero")  # fmt: skip
    assert torch.equal(plus, again)  # each image's draws are its own: the same every time
    # An image's draws do not depend on the images scored beside it.
    alone, _ = fidelity_curves(OnePixel(), nn.Identity(), images[5:6], labels[5:6], maps[5:6], [0.25],
                               beta=0.5, samples=8, fill="zero", ids=torch.tensor([5]))  # fmt: skip
    assert torch.equal(alone[:, 0], plus[:, 5])


def test_the_fine_tuning_batches_lose_a_random_share_up_to_beta_drawn_anew_for_every_batch():
    removal = RandomRemoval(0.3, "zero")
    images = torch.rand(64, 3, 10, 10) + 1.0  # no pixel is 0 before the removal
    torch.manual_seed(0)
    first = removal.apply(images, torch.zeros(3))
    second = removal.apply(images, torch.zeros(3))
    removed = (first == 0).all(1).flatten(1).sum(1)
    assert removed.max() <= 30 and removed.min() < removed.max()  # up to 0.3 of 100 pixels, not all alike
    assert not torch.equal(first, second)
    torch.manual_seed(0)
    assert torch.equal(removal.apply(images, torch.zeros(3)), first)  # the seed decides them


def _datamodule():
    torch.manual_seed(0)
    splits = {
        name: Split(torch.rand(16, 1, 4, 4), torch.randint(2, (16,))) for name in ("train", "val", "test")
    }
    return TensorDataModule(splits, 2, batch_size=8)


def test_the_fine_tuning_data_hold_no_codes_and_its_key_no_method(tmp_path):
    cfg = compose_config(tmp_path, "task=fidelity", "method=[fullgrad,random]")
    data = fine_tuning_data(cfg, 0.1, "mean")
    assert data == {"fine_tune_of": spec_key(training_spec(cfg, cfg.seed, None)),
                    "random_removal": {"max_fraction": 0.1, "fill": "mean"}}  # fmt: skip
    tuning = _datamodule().with_random_removal(0.1, "mean")
    assert all(split.codes is None for split in tuning.splits.values()) and tuning.removal is None


def _fine_tuned_state(tmp_path, methods: str) -> tuple[dict, str]:
    cfg = compose_config(tmp_path, "experiment=digits", "task=fidelity", f"method={methods}",
                         "trainer.max_epochs=2", "task.epochs=1", "task.fractions=[0.5]", "task.samples=2",
                         "logger=none")  # fmt: skip
    run_dir = experiment(cfg)
    with open(run_dir / "stages.csv", newline="") as f:
        tuned = next(r for r in csv.DictReader(f) if r["name"].startswith("fine-tuned"))
    return StageCache(tmp_path / "cache").load("train", tuned["key"]), run_dir


def test_the_fine_tuning_sees_no_explanation_the_same_weights_whatever_the_methods(tmp_path):
    one, run_dir = _fine_tuned_state(tmp_path / "a", "[fullgrad]")
    other, _ = _fine_tuned_state(tmp_path / "b", "[random,input_gradient]")
    assert one["state_dict"].keys() == other["state_dict"].keys()
    assert all(torch.equal(one["state_dict"][k], other["state_dict"][k]) for k in one["state_dict"])
    # It started from the base model: its weights moved from those of the base model, not from a fresh net.
    with open(run_dir / "stages.csv", newline="") as f:
        base_key = next(r for r in csv.DictReader(f) if r["name"] == "unmodified, seed 0")["key"]
    base = StageCache(tmp_path / "a" / "cache").load("train", base_key)
    distance = sum(
        (one["state_dict"][k].float() - base["state_dict"][k].float()).norm() for k in base["state_dict"]
    )
    assert 0 < distance


def test_the_task_end_to_end_writes_ffid_plus_and_minus_with_per_image_values(tmp_path):
    cfg = compose_config(tmp_path, "experiment=digits", "task=fidelity", "method=[fullgrad,random]",
                         "trainer.max_epochs=2", "task.epochs=1", "task.fractions=[0.3,0.7]", "task.beta=0.5",
                         "task.samples=3", "logger=none")  # fmt: skip
    run_dir = experiment(cfg)
    for sub, value in (("", "ffid_plus"), ("minus", "ffid_minus")):
        with open(run_dir / sub / "fidelity.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["method", "fraction", "seed", value]
        assert {(r["method"], float(r["fraction"])) for r in rows} == {
            (m, f) for m in ("fullgrad", "random") for f in (0.3, 0.7)
        }
        per_image = torch.load(run_dir / sub / PER_IMAGE, weights_only=True)
        assert per_image["value"] == value
        for entry, row in zip(
            per_image["rows"], sorted(rows, key=lambda r: (r["method"], float(r["fraction"])))
        ):
            assert entry["values"].mean().item() == pytest.approx(float(row[value]), abs=1e-6)
        assert (run_dir / sub / "fidelity_curve.png").stat().st_size > 10_000
    with open(run_dir / "stages.csv", newline="") as f:
        trainings = [r["name"] for r in csv.DictReader(f) if r["stage"] == "train"]
    assert trainings == ["unmodified, seed 0", "fine-tuned, up to 50% removed at random, seed 0"]


@pytest.mark.parametrize(
    "override, says",
    [
        ("task.beta=1.5", "task.beta"),
        ("task.metric=logit_change", "task.metric"),
        ("task.samples=0", "task.samples"),
    ],
)
def test_bad_fidelity_options_are_one_line_before_any_compute(tmp_path, override, says):
    done = run_command("roar", "experiment=digits", "task=fidelity", override, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("roar: error: ") and says in lines[0], done.stderr
    assert not (tmp_path / "cache").exists()  # nothing computed
