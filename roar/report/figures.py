"""The degradation curve as a figure (roar_curve.png and its kin)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from roar.report.results import curves
from roar.report.summary import seed_counts, seeds_note
from roar.runtime.files import atomic_write

# Matplotlib's default cycle has ten colours; from the eleventh method on, lines would repeat a colour and
# marker, so each further ten get the next line style and marker: every (colour, style) pair is one method's.
COLOURS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
LINE_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
# Beyond this many legend entries the legend goes beside the axes, where it covers no line.
LEGEND_INSIDE = 8


def line_style(index: int) -> dict:
    """The colour, line style and marker of the `index`-th method's line (distinct for 40 methods)."""
    style, marker = LINE_STYLES[(index // len(COLOURS)) % len(LINE_STYLES)]
    return {"color": COLOURS[index % len(COLOURS)], "ls": style, "marker": marker}


def plot_curve(rows: list[dict], path: Path, title: str = "ROAR: remove and retrain", **style) -> None:
    """Draw the curves (see `curve_figure` for `style`) into the image file `path`."""
    fig = curve_figure(rows, title, **style)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:])  # the temporary file's name has no image suffix
    plt.close(fig)


def curve_figure(
    rows: list[dict],
    title: str = "ROAR: remove and retrain",
    value: str = "test_acc",
    xlabel: str = "pixels removed (% of each image, most salient first)",
    ylabel: str = "test accuracy after retraining",
    baseline: str = "random",
    chance: float | None = None,
    logx: bool = False,
) -> plt.Figure:
    """One line per method with a mean ± std band over seeds. The `baseline` method is drawn behind the
    others as a grey band (at least a line's width wide, even for one seed), so that a reader sees at once
    which methods leave it; `chance`, if given, is a dashed line. The title's second line says over how
    many seeds (n=1 as such); where methods have different numbers, each legend entry has its own."""
    methods = curves(rows, value)
    outside = len(methods) + (chance is not None) > LEGEND_INSIDE
    fig, ax = plt.subplots(figsize=(8.4 if outside else 6, 4.2), dpi=120)
    counts = seed_counts(rows)
    mixed = len(set(counts.values())) > 1
    styles = {method: line_style(i) for i, method in enumerate(sorted(set(methods) - {baseline}))}
    for method, points in sorted(methods.items()):
        label = f"{method} (n={counts[method]})" if mixed else method
        fractions = [100 * f for f in points]
        means = [m for m, _, _ in points.values()]
        low = [m - s for m, s, _ in points.values()]
        high = [m + s for m, s, _ in points.values()]
        if method == baseline:
            ax.fill_between(fractions, low, high, color="0.6", alpha=0.45, lw=0, zorder=1)
            ax.plot(fractions, means, color="0.45", lw=5, alpha=0.5, zorder=1, label=f"{label} (baseline)")
            continue
        (line,) = ax.plot(fractions, means, label=label, zorder=3, **styles[method])
        if any(n > 1 for _, _, n in points.values()):
            ax.fill_between(fractions, low, high, color=line.get_color(), alpha=0.2, zorder=2)
    if chance is not None:
        ax.axhline(chance, color="k", ls="--", lw=1, label=f"chance ({chance:.2f})", zorder=2)
    if logx:  # ticks at the measured fractions, written plainly
        ticks = sorted({100 * row["fraction"] for row in rows})
        ax.set_xscale("log")
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{seeds_note(counts)}", fontsize=9)
    if value.endswith("acc"):
        ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if outside:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    else:
        ax.legend()
    fig.tight_layout()
    return fig
