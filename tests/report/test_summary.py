"""The run's verdict (area under each curve, ranks) and how the curves are drawn."""

import csv

import pytest
import torch
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba

from roar.report import Outputs, publish
from roar.report.figures import curve_figure
from roar.report.summary import area_under_curve, summarize


def _rows(curves: dict[str, list[list[float]]], fractions=(0.0, 0.5, 1.0)) -> list[dict]:
    """method -> one accuracy list per seed, over `fractions`."""
    return [
        {"method": method, "fraction": f, "seed": seed, "test_acc": acc, "val_acc": acc}
        for method, per_seed in curves.items()
        for seed, accs in enumerate(per_seed)
        for f, acc in zip(fractions, accs)
    ]


def test_area_is_the_trapezoid_divided_by_the_fraction_range():
    assert area_under_curve({0.0: 1.0, 0.5: 0.5, 1.0: 0.0}) == pytest.approx(0.5)
    assert area_under_curve({0.1: 0.8, 0.3: 0.6, 0.9: 0.2}) == pytest.approx((0.2 * 0.7 + 0.6 * 0.4) / 0.8)
    assert area_under_curve({0.0: 0.9}) == 0.9


def test_roar_ranks_the_lowest_area_first_and_kar_the_highest():
    rows = _rows({
        "good": [[0.9, 0.3, 0.1], [0.9, 0.5, 0.1]],
        "random": [[0.9, 0.8, 0.5], [0.9, 0.8, 0.5]],
        "bad": [[0.9, 0.9, 0.8], [0.9, 0.9, 0.8]],
    })  # fmt: skip
    roar = summarize(rows, lower_is_better=True, reference=0.0)
    assert [r["method"] for r in roar] == ["good", "random", "bad"] and [r["rank"] for r in roar] == [1, 2, 3]
    good = roar[0]
    # Per seed: 0.5 * (0.9 + 0.3) / 2 + 0.5 * (0.3 + 0.1) / 2 = 0.4, and likewise 0.5.
    assert good["auc_mean"] == pytest.approx(0.45) and good["auc_std"] == pytest.approx(0.0707107, rel=1e-5)
    assert good["seeds"] == 2
    assert good["auc_minus_random"] == pytest.approx(0.45 - 0.75)
    # Ranks per fraction, without the shared unmodified point.
    assert "rank_at_0%" not in good and good["rank_at_50%"] == 1 and good["rank_at_100%"] == 1
    kar = summarize(rows, lower_is_better=False, reference=1.0)
    assert [r["method"] for r in kar] == ["bad", "random", "good"]


def test_the_report_writes_the_ranking_and_says_which_direction_is_better(tmp_path):
    rows = _rows({"fullgrad": [[0.9, 0.4, 0.2]], "random": [[0.9, 0.7, 0.4]]})
    publish(rows, tmp_path, outputs=Outputs(title="ROAR on test data"))
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# ROAR on test data") and "lower is better" in summary
    assert summary.index("| 1 | fullgrad |") < summary.index("| 2 | random |")
    with open(tmp_path / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["rank"], r["method"]) for r in table] == [("1", "fullgrad"), ("2", "random")]
    kar = tmp_path / "kar"
    kar.mkdir()
    publish(rows, kar, outputs=Outputs(title="KAR", lower_is_better=False, reference=1.0))
    assert "higher is better" in (kar / "summary.md").read_text()
    with open(kar / "summary.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["random", "fullgrad"]


def test_random_is_a_grey_band_behind_the_methods_and_each_method_has_a_std_band():
    rows = _rows({"fullgrad": [[0.9, 0.4, 0.2], [0.9, 0.5, 0.3]], "random": [[0.9, 0.7, 0.4]]})
    ax = curve_figure(rows, "t").axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    grey = [b for b in bands if b.get_facecolor()[0][:3].tolist() == pytest.approx(to_rgba("0.6")[:3])]
    assert len(grey) == 1 and len(bands) == 2  # random's (one seed, still drawn) and fullgrad's ± std
    method_line = next(line for line in ax.lines if line.get_label().startswith("fullgrad"))
    assert all(b.get_zorder() < method_line.get_zorder() for b in grey)
    random_line = next(line for line in ax.lines if line.get_label().startswith("random"))
    assert random_line.get_zorder() < method_line.get_zorder() and random_line.get_linewidth() >= 4


def test_one_seed_is_shown_as_n1_and_without_random_the_summary_says_what_is_missing(tmp_path, capsys):
    rows = _rows({"fullgrad": [[0.9, 0.4, 0.2]], "gradcam": [[0.9, 0.6, 0.3]]})
    publish(rows, tmp_path, outputs=Outputs(title="ROAR on test data"))
    printed = capsys.readouterr().out
    summary = (tmp_path / "summary.md").read_text()
    for text in (printed, summary):
        assert "nan" not in text.lower()
        assert "n=1 seed" in text
        assert "No `random` among the methods" in text and "method=random" in text
    with open(tmp_path / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert "auc_minus_random" not in table[0]
    assert {r["auc_std"] for r in table} == {""}  # one seed has no spread: blank, neither 0 nor nan
    assert "n=1 seed" in curve_figure(rows, "t").axes[0].get_title()


def test_the_figure_and_summary_state_the_number_of_seeds_per_method_where_they_differ(tmp_path):
    three_seeds = [[0.9, 0.4, 0.2], [0.9, 0.5, 0.3], [0.9, 0.5, 0.2]]
    rows = _rows({"fullgrad": three_seeds, "random": [[0.9, 0.7, 0.4]]})
    ax = curve_figure(rows, "t").axes[0]
    assert "n=1–3 seeds" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "fullgrad (n=3)" in labels and "random (n=1) (baseline)" in labels
    three = _rows({"fullgrad": [[0.9, 0.4, 0.2]] * 3, "random": [[0.9, 0.7, 0.4]] * 3})
    assert "mean ± std over n=3 seeds" in curve_figure(three, "t").axes[0].get_title()
    publish(three, tmp_path, outputs=Outputs(title="ROAR"))
    assert "mean ± std over n=3 seeds" in (tmp_path / "summary.md").read_text()


T_975_2 = 4.302652729749464  # Student's t, 97.5th percentile, 2 degrees of freedom (tables)


def _two_fraction_rows(curves: dict[str, list[float]]) -> list[dict]:
    """method -> its accuracy at fraction 1 per seed, every method at 0.9 at fraction 0: each seed's AUC
    is (0.9 + accuracy) / 2, so two methods' AUCs differ by half their accuracies' difference."""
    return _rows({method: [[0.9, acc] for acc in accs] for method, accs in curves.items()}, (0.0, 1.0))


def test_a_difference_whose_seed_interval_holds_0_is_a_tie_and_the_interval_is_the_t_interval(tmp_path):
    # Per-seed AUC differences to random: overlap -0.1, -0.2, -0.3 (mean -0.2, std 0.1); clear -0.30,
    # -0.31, -0.29 (mean -0.3, std 0.01).
    rows = _two_fraction_rows({
        "random": [0.7, 0.7, 0.7],
        "overlap": [0.5, 0.3, 0.1],
        "clear": [0.1, 0.08, 0.12],
    })  # fmt: skip
    records = summarize(rows, lower_is_better=True, reference=0.0)
    assert [r["method"] for r in records] == ["clear", "overlap", "random"]
    clear, overlap, random = records

    def seeds_interval(record, prefix="random"):
        return record[f"{prefix}_seeds_low"], record[f"{prefix}_seeds_high"]

    half = T_975_2 * 0.1 / 3**0.5
    assert overlap["auc_minus_random"] == pytest.approx(-0.2)
    assert seeds_interval(overlap) == pytest.approx((-0.2 - half, -0.2 + half))
    assert seeds_interval(overlap)[0] < 0 < seeds_interval(overlap)[1] and overlap["vs_random"] == "tie"
    half = T_975_2 * 0.01 / 3**0.5
    assert (
        seeds_interval(clear) == pytest.approx((-0.3 - half, -0.3 + half)) and clear["vs_random"] == "better"
    )
    # Clear minus overlap, the next-ranked: -0.2, -0.11, 0.01 per seed (mean -0.1, std 0.105), a tie.
    std = ((0.1**2 + 0.01**2 + 0.11**2) / 2) ** 0.5
    half = T_975_2 * std / 3**0.5
    assert clear["next"] == "overlap" and clear["auc_minus_next"] == pytest.approx(-0.1)
    assert (
        seeds_interval(clear, "next") == pytest.approx((-0.1 - half, -0.1 + half))
        and clear["vs_next"] == "tie"
    )
    assert overlap["next"] == "random" and overlap["vs_next"] == "tie"
    assert random["next"] == "" and random["vs_next"] == "" and random["auc_minus_next"] is None
    assert random["vs_random"] == "" and random["random_seeds_low"] is None
    # Without per-image values the test images give no interval: the seeds decide.
    assert overlap["random_images_low"] is None and clear["random_images_low"] is None

    publish(rows, tmp_path, outputs=Outputs(title="ROAR"))
    summary = (tmp_path / "summary.md").read_text()
    no_images = "n/a (no per-image values)"
    assert f"| overlap | -0.2000 | [-0.4484, 0.0484] | {no_images} | tie | random |" in summary
    assert f"| clear | -0.3000 | [-0.3248, -0.2752] | {no_images} | better | overlap |" in summary
    assert "| 2 | overlap | 0.6000 | 0.1000 | 3 | -0.2000 | tie | tie |" in summary
    with open(tmp_path / "summary.csv") as f:
        table = {r["method"]: r for r in csv.DictReader(f)}
    assert table["overlap"]["vs_random"] == "tie" and table["clear"]["vs_random"] == "better"
    assert float(table["clear"]["random_seeds_high"]) == pytest.approx(-0.3 + T_975_2 * 0.01 / 3**0.5)


def test_per_image_values_give_a_bootstrap_interval_over_the_test_images():
    """Two test images, one seed: a replicate's AUC difference is the mean of the images' differences D
    over its two draws, so the 2.5 and 97.5 percentiles of 1000 replicates are min(D) and max(D) (each
    drawn twice in a quarter of them)."""

    def rows(accuracies: dict[str, list[float]]) -> list[dict]:
        out = []
        for method, at_one in accuracies.items():
            for fraction, values in ((0.0, [1.0, 1.0]), (1.0, at_one)):
                per_image = torch.tensor(values)
                out.append({"method": method, "fraction": fraction, "seed": 0, "val_acc": 0.0,
                            "test_acc": per_image.mean().item(), "per_image": per_image})  # fmt: skip
        return out

    # Per-image AUC: (1 + value at fraction 1) / 2. clear - random: D = -0.5, -0.25; overlap - random:
    # D = -0.5, +0.25.
    accuracies = {"random": [1.0, 0.5], "clear": [0.0, 0.0], "overlap": [0.0, 1.0]}
    records = {r["method"]: r for r in summarize(rows(accuracies), True, reference=0.0)}
    clear, overlap = records["clear"], records["overlap"]
    assert (clear["random_images_low"], clear["random_images_high"]) == pytest.approx((-0.5, -0.25))
    assert (overlap["random_images_low"], overlap["random_images_high"]) == pytest.approx((-0.5, 0.25))
    assert clear["random_seeds_low"] is None  # one seed: no interval over seeds
    assert clear["vs_random"] == "better" and overlap["vs_random"] == "tie"


def test_one_seed_without_per_image_values_has_no_interval_and_says_so(tmp_path):
    rows = _rows({"fullgrad": [[0.9, 0.4, 0.2]], "gradcam": [[0.9, 0.6, 0.3]], "random": [[0.9, 0.7, 0.4]]})
    records = summarize(rows, lower_is_better=True, reference=0.0)
    assert [r["vs_random"] for r in records] == ["n/a (1 seed)", "n/a (1 seed)", ""]
    assert [r["vs_next"] for r in records] == ["n/a (1 seed)", "n/a (1 seed)", ""]
    assert all(r[f"{c}_{over}_{end}"] is None for r in records for c in ("random", "next")
               for over in ("seeds", "images") for end in ("low", "high"))  # fmt: skip
    publish(rows, tmp_path, outputs=Outputs(title="ROAR"))
    summary = (tmp_path / "summary.md").read_text()
    no_interval = "n/a (1 seed) | n/a (no per-image values) | n/a (1 seed)"
    assert f"| fullgrad | -0.2000 | {no_interval} | gradcam |" in summary
    assert "nan" not in summary.lower().replace("n/a", "")


def test_thirteen_methods_get_thirteen_distinct_lines_and_the_legend_goes_beside_the_axes():
    # method=hooker has 12 methods besides random: the default cycle's ten colours would repeat.
    rows = _rows({f"m{i:02d}": [[0.9, 0.5, 0.3]] for i in range(12)} | {"random": [[0.9, 0.7, 0.4]]})
    ax = curve_figure(rows, "t").axes[0]
    lines = [line for line in ax.lines if not line.get_label().startswith("random")]
    styles = {(to_rgba(line.get_color()), line.get_linestyle(), line.get_marker()) for line in lines}
    assert len(lines) == 12 and len(styles) == 12
    legend = ax.get_legend()
    assert legend.get_bbox_to_anchor().x0 >= ax.get_window_extent().x1  # right of the axes
    few = curve_figure(_rows({"fullgrad": [[0.9, 0.4, 0.2]], "random": [[0.9, 0.7, 0.4]]}), "t").axes[0]
    assert few.get_legend().get_bbox_to_anchor().x0 < few.get_window_extent().x1
