"""Where every task, and `roar-report` over a sweep, ends: the report written, logged and printed."""

from __future__ import annotations

from pathlib import Path

from roar.report.figures import plot_curve
from roar.report.results import PER_IMAGE, Outputs, summary_table, write_csv, write_per_image
from roar.report.summary import ranking_markdown, seed_counts, seeds_note, summarize, write_ranking
from roar.report.wandb import SeedCurves, close_logger, log_results
from roar.runtime.files import atomic_write


def publish(
    rows: list[dict],
    out_dir: Path,
    logger=None,
    galleries=(),
    outputs: Outputs = Outputs(),
    seed_curves: SeedCurves | None = None,
) -> None:
    """Everything a report holds, written to `out_dir` (`outputs.csv`, `outputs.curve`, summary.md with the
    table and the ranking by area under the curve, summary.csv with the ranking, per_image.pt with the rows'
    per-image values), sent to `logger`, with the rows `seed_curves` has not shown yet, and printed; every
    task, and `roar-report` over a sweep, ends here. The per-image values go to per_image.pt only: the CSV,
    the logger and the summary hold each row's `outputs.value`."""
    write_csv(rows, out_dir / outputs.csv, outputs.columns)
    write_per_image(rows, out_dir / PER_IMAGE, outputs.value)
    plot_curve(rows, out_dir / outputs.curve, outputs.title, value=outputs.value, xlabel=outputs.xlabel,
               ylabel=outputs.ylabel, chance=outputs.chance, logx=outputs.logx)  # fmt: skip
    table = summary_table(rows, outputs.value)
    ranking = summarize(rows, outputs.lower_is_better, outputs.value, outputs.reference)
    ranked = ranking_markdown(ranking, outputs.value, outputs.lower_is_better)
    caption = f"{outputs.ylabel[0].upper()}{outputs.ylabel[1:]}, {seeds_note(seed_counts(rows))}."
    with atomic_write(out_dir / "summary.md") as tmp:
        tmp.write_text(f"# {outputs.title}\n\n{caption}\n\n{table}\n\n{ranked}\n")
    write_ranking(ranking, out_dir / "summary.csv")
    if seed_curves is not None:
        seed_curves.complete(rows)
    if logger is not None:
        log_results(logger, rows, out_dir / outputs.curve, list(galleries), outputs)
        close_logger(logger)
    print(f"\n{caption}\n\n{table}\n\n{ranked}")
