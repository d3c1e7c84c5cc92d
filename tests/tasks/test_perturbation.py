"""Pixel perturbation without retraining: the curves against closed forms (a linear model, a constant one),
which direction is better, and the task end to end with one order and with both (SRG)."""

import csv
import itertools

import pytest
import torch
from torch import nn

from roar.cli.app import experiment
from roar.config.schema import METRICS, ORDERS, PERTURBATION_MODES
from roar.removal import FILLS
from roar.report import PER_IMAGE
from roar.report.summary import area_under_curve
from roar.tasks.perturbation import lower_is_better, removal_curves
from tests.conftest import compose_config

N, C, H, W, CLASSES = 12, 3, 6, 5, 4


def _linear(positive: bool = False):
    """A linear model on raw images (normalised with the batch's own statistics), its targets and mean."""
    torch.manual_seed(0)
    linear = nn.Linear(C * H * W, CLASSES)
    if positive:
        with torch.no_grad():
            linear.weight.uniform_(0.1, 1)
    images = torch.rand(N, C, H, W)
    mean, std = images.mean((0, 2, 3)), images.std((0, 2, 3))
    normalize = lambda x: (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)  # noqa: E731
    return (
        nn.Sequential(nn.Flatten(), linear).eval(),
        linear,
        normalize,
        images,
        torch.randint(CLASSES, (N,)),
        mean,
    )


@pytest.mark.parametrize("fill", ["zero", "mean"])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("mode", PERTURBATION_MODES)
def test_logit_change_of_a_linear_model_equals_the_closed_form(fill, order, mode):
    model, linear, normalize, images, targets, mean = _linear()
    maps = torch.rand(N, H, W)
    fractions = [0.05, 0.1, 0.3]
    change = removal_curves(model, normalize, images, targets, maps, fractions, order, mode, fill,
                            fill_mean=mean, batch_size=5)  # fmt: skip
    assert change.shape == (len(fractions), N)

    std = images.std((0, 2, 3))
    weights = linear.weight.detach().view(CLASSES, C, H, W)
    value = torch.zeros(C) if fill == "zero" else mean
    for row, fraction in enumerate(fractions):
        k = round(fraction * H * W)
        assert k > 0
        for i in range(N):
            ranked = maps[i].flatten().argsort(descending=order == "morf")  # the order acted in
            # Deletion removes the first k; insertion restores them, so the others stay removed.
            removed = ranked[:k] if mode == "deletion" else ranked[k:]
            delta = sum(
                weights[targets[i], ch].flatten()[p] * (value[ch] - images[i, ch].flatten()[p]) / std[ch]
                for ch in range(C)
                for p in removed.tolist()
            )
            logit = (weights[targets[i]] * normalize(images[i : i + 1])[0]).sum() + linear.bias[targets[i]]
            expected = (delta.abs() / logit.abs()).item()
            assert change[row, i].item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_morf_moves_the_logit_of_a_linear_model_more_than_lerf_when_the_map_is_w_times_x():
    # Positive weights and pixels, raw inputs, black fill: every pixel adds w*x > 0 to the target logit, and
    # removing it takes exactly that away, so the map w*x names the pixels in the order of their effect.
    model, linear, _, images, targets, _ = _linear(positive=True)
    weights = linear.weight.detach().view(CLASSES, C, H, W)
    maps = (weights[targets] * images).sum(1)  # pixel maps: the channels' contributions summed
    fractions = [0.1, 0.3, 0.5, 0.9]

    def curves(order, mode):
        return removal_curves(model, nn.Identity(), images, targets, maps, fractions, order, mode)

    assert (curves("morf", "deletion") > curves("lerf", "deletion")).all()
    # Insertion restores the most contributing pixels first under MoRF: closer to the original logit.
    assert (curves("morf", "insertion") < curves("lerf", "insertion")).all()


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("metric", METRICS)
def test_insertion_of_every_pixel_gives_back_the_original_output(fill, metric):
    model, _, normalize, images, targets, mean = _linear()
    maps = torch.rand(N, C, H, W)  # element maps: restoring every channel value of every pixel

    def curve(fraction, mode):
        return removal_curves(model, normalize, images, targets, maps, [fraction], "morf", mode, fill, metric,
                              fill_mean=mean)[0]  # fmt: skip

    restored, deleted_none = curve(1.0, "insertion"), curve(0.0, "deletion")
    assert torch.equal(restored, deleted_none)
    with torch.no_grad():
        logits = model(normalize(images))
    original = {
        "logit_change": torch.zeros(N),
        "probability": logits.softmax(1).gather(1, targets.view(-1, 1)).squeeze(1),
        "accuracy": (logits.argmax(1) == targets).float(),
    }[metric]
    assert torch.equal(restored, original)


@pytest.mark.parametrize("order,mode,fill", itertools.product(ORDERS, PERTURBATION_MODES, FILLS))
def test_a_model_that_ignores_its_input_has_flat_curves(order, mode, fill):
    model = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, CLASSES)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
        # No zero logit: the logit change divides by it.
        model[1].bias.copy_(torch.tensor([0.5, -2.0, 1.0, 0.25]))
    images, targets = torch.rand(N, C, H, W), torch.arange(N) % CLASSES
    maps, fractions = torch.rand(N, H, W), [0.1, 0.5, 0.9]

    def curves(metric):
        return removal_curves(model, nn.Identity(), images, targets, maps, fractions, order, mode, fill,
                              metric, fill_mean=torch.full((C,), 0.5))  # fmt: skip

    assert torch.equal(curves("logit_change"), torch.zeros(len(fractions), N))
    probabilities = torch.tensor([0.5, -2.0, 1.0, 0.25]).softmax(0)[targets]
    assert torch.allclose(curves("probability"), probabilities.expand(len(fractions), N))
    assert torch.equal(curves("accuracy"), (targets == 2).float().expand(len(fractions), N))


@pytest.mark.parametrize("order,mode", itertools.product(ORDERS, PERTURBATION_MODES))
def test_an_image_whose_target_logit_is_exactly_0_gets_its_absolute_logit_change(order, mode):
    """f_t(x) = w_t . x without a bias: the all-black image has logit 0 for every class, where the relative
    change |f_t(x') - f_t(x)| / |f_t(x)| would be 0/0 (or x/0). It is the absolute change |f_t(x')|."""
    torch.manual_seed(0)
    linear = nn.Linear(C * H * W, CLASSES, bias=False)
    model = nn.Sequential(nn.Flatten(), linear).eval()
    images, targets = torch.rand(N, C, H, W), torch.arange(N) % CLASSES
    images[0] = 0
    maps, fractions, gray = torch.rand(N, H, W), [0.1, 0.5], torch.full((C,), 0.5)
    change = removal_curves(model, nn.Identity(), images, targets, maps, fractions, order, mode, "mean",
                            fill_mean=gray)  # fmt: skip
    assert torch.isfinite(change).all()
    with torch.no_grad():
        logits = model(images).gather(1, targets.view(-1, 1)).squeeze(1)
        assert logits[0] == 0 and (logits[1:] != 0).all()
        for row, fraction in enumerate(fractions):
            ranked = maps[0].flatten().argsort(descending=order == "morf")
            k = round(fraction * H * W)
            removed = ranked[:k] if mode == "deletion" else ranked[k:]  # gray there, black elsewhere
            perturbed = torch.zeros(C, H * W)
            perturbed[:, removed] = 0.5
            absolute = model(perturbed.view(1, C, H, W))[0, targets[0]].abs()
            assert change[row, 0].item() == pytest.approx(absolute.item(), rel=1e-5) and absolute > 0


def test_which_direction_is_better():
    # What a faithful map does: MoRF deletion and LeRF insertion take the evidence away (large logit change,
    # low probability and accuracy); LeRF deletion and MoRF insertion keep it (the opposite).
    takes_away = {("morf", "deletion"), ("lerf", "insertion")}
    for order, mode, metric in itertools.product(ORDERS, PERTURBATION_MODES, METRICS):
        changes_most = (order, mode) in takes_away
        expected = not changes_most if metric == "logit_change" else changes_most
        assert lower_is_better(order, mode, metric) == expected, (order, mode, metric)


def test_unknown_options_of_the_curves_are_named():
    model, _, normalize, images, targets, _ = _linear()
    maps = torch.rand(N, H, W)
    with pytest.raises(ValueError, match="unknown order 'up'"):
        removal_curves(model, normalize, images, targets, maps, [0.1], order="up")
    with pytest.raises(ValueError, match="fill='mean' needs fill_mean"):
        removal_curves(model, normalize, images, targets, maps, [0.1], fill="mean")


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_the_perturbation_task_writes_one_row_per_method_and_fraction(tmp_path):
    cfg = compose_config(
        tmp_path, "task=perturbation", "task.fractions=[0.01,0.1,0.5]", "trainer.max_epochs=2", "logger=none",
        "method=[fullgrad,random]",
    )  # fmt: skip
    run_dir = experiment(cfg)
    rows = _rows(run_dir / "perturbation.csv")
    assert list(rows[0]) == ["method", "fraction", "seed", "logit_change"]
    assert {(r["method"], float(r["fraction"])) for r in rows} == {
        (m, f) for m in ("fullgrad", "random") for f in (0.01, 0.1, 0.5)
    }
    changes = {(r["method"], float(r["fraction"])): float(r["logit_change"]) for r in rows}
    assert all(v > 0 for v in changes.values())
    # Blacking out half of every image moves the logit more than blacking out 1 % of it.
    assert all(changes[(m, 0.5)] > changes[(m, 0.01)] for m in ("fullgrad", "random"))
    assert (run_dir / "perturbation_curve.png").stat().st_size > 10_000
    assert "LeRF deletion" in (run_dir / "summary.md").read_text()
    assert "lower is better" in (run_dir / "summary.md").read_text()


def test_both_orders_give_each_its_report_and_srg_in_the_run_directory(tmp_path):
    cfg = compose_config(
        tmp_path, "task=perturbation", "task.fractions=[0.1,0.3,0.6]", "task.order=[lerf,morf]",
        "task.mode=insertion", "task.metric=probability", "task.fill=blur", "trainer.max_epochs=2",
        "logger=none", "method=[fullgrad,random]",
    )  # fmt: skip
    run_dir = experiment(cfg)
    auc, values = {}, {}
    for order in ORDERS:
        assert list(_rows(run_dir / order / "perturbation.csv")[0]) == [
            "method",
            "fraction",
            "seed",
            "probability",
        ]
        assert (run_dir / order / "perturbation_curve.png").stat().st_size > 10_000
        auc[order] = {r["method"]: float(r["auc_mean"]) for r in _rows(run_dir / order / "summary.csv")}
        per_image = torch.load(run_dir / order / PER_IMAGE, weights_only=True)
        assert per_image["value"] == "probability" and len(per_image["rows"]) == 6
        values[order] = {(r["method"], r["fraction"]): r["values"] for r in per_image["rows"]}
    # Insertion of the least salient first should keep the probability low: lower is better for LeRF.
    assert "lower is better" in (run_dir / "lerf" / "summary.md").read_text()
    assert "higher is better" in (run_dir / "morf" / "summary.md").read_text()

    rows = _rows(run_dir / "perturbation.csv")
    assert list(rows[0]) == ["method", "fraction", "seed", "srg", "probability_lerf", "probability_morf"]
    for row in rows:
        assert float(row["srg"]) == pytest.approx(
            float(row["probability_lerf"]) - float(row["probability_morf"])
        )
    # Per image (for roar-report --agreement), SRG's values are LeRF's minus MoRF's, averaging to the CSV's.
    per_image = torch.load(run_dir / PER_IMAGE, weights_only=True)
    assert per_image["value"] == "srg"
    means = {(r["method"], float(r["fraction"])): float(r["srg"]) for r in rows}
    for row in per_image["rows"]:
        cell = (row["method"], row["fraction"])
        assert torch.equal(row["values"], values["lerf"][cell] - values["morf"][cell])
        assert row["values"].mean().item() == pytest.approx(means[cell], abs=1e-6)
    srg = {r["method"]: float(r["auc_mean"]) for r in _rows(run_dir / "summary.csv")}
    for method in ("fullgrad", "random"):
        assert srg[method] == pytest.approx(auc["lerf"][method] - auc["morf"][method], abs=1e-12)
        points = {float(r["fraction"]): float(r["srg"]) for r in rows if r["method"] == method}
        assert srg[method] == pytest.approx(area_under_curve(points))
    # SRG = LeRF - MoRF; for insertion LeRF is better low, so SRG is better low too.
    assert "lower is better" in (run_dir / "summary.md").read_text()
