"""The run's verdict (area under each curve, ranks) and how the curves are drawn."""

import csv

import pytest
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
