"""A run's verdict: one score per method (the area under its curve), the ranking, and how each method
compares with the random baseline and with the method ranked next, with 95 % intervals over seeds and over
test images (written by `roar.report.publish` into summary.md and summary.csv).

The intervals of a difference between two methods' AUCs:

- over seeds, a t-interval on the per-seed differences, paired by seed (every method's cells of a seed are
  retrained from that seed, and at the unmodified fraction they share one model), with n - 1 degrees of
  freedom: with the 2-5 seeds a run has, a bootstrap over seeds would have a handful of distinct resamples
  and come out too narrow, while the t-interval widens with so few;
- over test images, where every cell of both methods has per-image values (`per_image`): the 2.5 and 97.5
  percentiles of the difference over REPLICATES bootstrap resamples of the test images, one draw shared by
  every method (they are evaluated on the same images), each method's AUC recomputed from the per-image
  values as `roar-report --agreement` does (`resampled_aucs`, `bootstrap_weights`).

A difference one of whose intervals contains 0 is a tie; with one seed and no per-image values there is
no interval, and the verdict says so ("n/a (1 seed)") rather than inventing one.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from scipy.stats import t as student_t

from roar.runtime.files import atomic_write

# The intervals' coverage, and the bootstrap over test images: its replicates and the seed of its draws.
CONFIDENCE = 0.95
REPLICATES = 1000
BOOTSTRAP_SEED = 0


def area_under_curve(points: dict[float, float]) -> float:
    """Trapezoidal area under value-vs-fraction divided by the fraction range covered: the curve's mean
    height, in the value's own units (an accuracy for ROAR and KAR)."""
    fractions = sorted(points)
    if len(fractions) == 1:
        return points[fractions[0]]
    area = sum((b - a) * (points[a] + points[b]) / 2 for a, b in zip(fractions, fractions[1:]))
    return area / (fractions[-1] - fractions[0])


def bootstrap_weights(rng: np.random.Generator, size: int, replicates: int) -> np.ndarray:
    """(replicates, size): the share of `size` draws with replacement that fell on each of `size` items."""
    return rng.multinomial(size, np.full(size, 1 / size), size=replicates) / size


def resampled_aucs(
    values: np.ndarray, fractions: list[float], image_weights: np.ndarray, seed_weights: np.ndarray
) -> np.ndarray:
    """(methods, B): each method's AUC, the mean over seeds of the area under its curve, in each of B
    replicates. `values[m, s, f, i]` is method m's value at `fractions[f]` with seed s on test image i;
    `image_weights` (B, images) and `seed_weights` (B, seeds) say how often each image and seed was drawn in
    each replicate (rows summing to 1)."""
    means = values @ image_weights.T  # (methods, seeds, fractions, B)
    areas = area_under_curve({f: means[:, :, i] for i, f in enumerate(fractions)})
    return np.einsum("msb,bs->mb", areas, seed_weights)


def _by_seed(rows: list[dict], value: str) -> dict[str, dict[int, dict[float, float]]]:
    """method -> seed -> fraction -> value."""
    grouped: dict[str, dict[int, dict[float, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        grouped[row["method"]][row["seed"]][row["fraction"]] = row[value]
    return grouped


def scores(rows: list[dict], value: str = "test_acc") -> dict[str, tuple[float, float | None, int]]:
    """method -> (mean, std, number of seeds) of the area under each seed's curve; std is None for one
    seed, which has no spread to measure (0 would claim there is none)."""
    out = {}
    for method, seeds in _by_seed(rows, value).items():
        areas = torch.tensor([area_under_curve(points) for points in seeds.values()], dtype=torch.float64)
        out[method] = (areas.mean().item(), areas.std().item() if len(areas) > 1 else None, len(areas))
    return out


def seed_counts(rows: list[dict]) -> dict[str, int]:
    """method -> how many seeds its curve is averaged over."""
    seeds: dict[str, set] = defaultdict(set)
    for row in rows:
        seeds[row["method"]].add(row["seed"])
    return {method: len(s) for method, s in seeds.items()}


def seeds_note(counts: dict[str, int]) -> str:
    """How many seeds the figures and tables average over, in words: n=1 says so."""
    n = sorted(set(counts.values()))
    if n == [1]:
        return "n=1 seed, so no spread over seeds is shown"
    if len(n) == 1:
        return f"mean ± std over n={n[0]} seeds"
    return f"mean ± std over n={n[0]}–{n[-1]} seeds per method"


def seed_interval(a: dict[int, float], b: dict[int, float]) -> tuple[float, float] | None:
    """The CONFIDENCE t-interval of the mean of a[s] - b[s] over the seeds both have (per-seed AUCs); None
    with fewer than two such seeds."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    differences = np.array([a[s] - b[s] for s in seeds])
    quantile = student_t.ppf((1 + CONFIDENCE) / 2, len(seeds) - 1)
    half = quantile * differences.std(ddof=1) / math.sqrt(len(seeds))
    return float(differences.mean() - half), float(differences.mean() + half)


def image_replicates(
    rows: list[dict], replicates: int = REPLICATES, seed: int = BOOTSTRAP_SEED
) -> dict[str, tuple[int, np.ndarray]]:
    """method -> (its number of test images, its AUC in each of `replicates` bootstrap resamples of them,
    its seeds kept), for the methods whose every cell has per-image values, at the same fractions for every
    seed. Methods evaluated on as many images share each replicate's draw of them."""
    cells: dict[str, dict[int, dict[float, np.ndarray]]] = defaultdict(lambda: defaultdict(dict))
    partial = {row["method"] for row in rows if "per_image" not in row}
    for row in rows:
        if row["method"] not in partial:
            cells[row["method"]][row["seed"]][row["fraction"]] = row["per_image"].double().cpu().numpy()
    arrays = {}
    for method, seeds in cells.items():
        fractions = sorted(next(iter(seeds.values())))
        if all(sorted(points) == fractions for points in seeds.values()):
            grid = [[seeds[s][f] for f in fractions] for s in sorted(seeds)]
            if len({len(values) for per_seed in grid for values in per_seed}) == 1:
                arrays[method] = (fractions, np.array(grid))  # (seeds, fractions, images)
    rng = np.random.default_rng(seed)
    counts = sorted({values.shape[-1] for _, values in arrays.values()})
    image_weights = {count: bootstrap_weights(rng, count, replicates) for count in counts}
    out = {}
    for method, (fractions, values) in sorted(arrays.items()):
        seed_weights = np.full((replicates, len(values)), 1 / len(values))  # the seeds as they are
        weights = image_weights[values.shape[-1]]
        out[method] = values.shape[-1], resampled_aucs(values[None], fractions, weights, seed_weights)[0]
    return out


def image_interval(a: tuple[int, np.ndarray] | None, b: tuple[int, np.ndarray] | None):
    """The percentile interval (CONFIDENCE) of the replicates' AUC differences a - b (`image_replicates`'
    values); None where either method has no per-image values, or they were not evaluated on as many
    images (then not on the same ones)."""
    if a is None or b is None or a[0] != b[0]:
        return None
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(a[1] - b[1], [tail, 100 - tail])
    return float(low), float(high)


def verdict(difference: float, intervals: list, lower_is_better: bool, words: tuple[str, str]) -> str:
    """`words[0]` (better) or `words[1]` (worse) for a difference of AUCs whose every interval excludes 0,
    "tie" where one contains 0, "n/a (1 seed)" where there is none."""
    known = [interval for interval in intervals if interval is not None]
    if not known:
        return "n/a (1 seed)"
    if any(low <= 0 <= high for low, high in known):
        return "tie"
    return words[0] if (difference < 0) == lower_is_better else words[1]


def _comparison(prefix: str, seeds, images, verdict_word: str) -> dict:
    """The columns of one comparison: the difference's intervals over seeds and over test images (blank
    where there is none) and the verdict."""
    return {
        f"{prefix}_seeds_low": seeds[0] if seeds else None,
        f"{prefix}_seeds_high": seeds[1] if seeds else None,
        f"{prefix}_images_low": images[0] if images else None,
        f"{prefix}_images_high": images[1] if images else None,
        f"vs_{prefix}": verdict_word,
    }


def _ranks(values: dict[str, float], lower_is_better: bool) -> dict[str, int]:
    """1 = best; equal values share the better rank."""
    ordered = sorted(values.values(), reverse=not lower_is_better)
    return {method: ordered.index(v) + 1 for method, v in values.items()}


def _mean_at(seeds: dict[int, dict[float, float]], fraction: float) -> float | None:
    values = [points[fraction] for points in seeds.values() if fraction in points]
    return sum(values) / len(values) if values else None


def summarize(
    rows: list[dict],
    lower_is_better: bool,
    value: str = "test_acc",
    reference: float | None = None,
    baseline: str = "random",
) -> list[dict]:
    """One record per method, best first: its area under the curve (mean, std over seeds), rank, the
    difference to `baseline`'s area and to the area of the method ranked next, each with its intervals
    over seeds and over test images and its verdict (`vs_random`: better, worse or tie; `vs_next`: ahead or
    tie; "n/a (1 seed)" without an interval), and its rank at every fraction but `reference` (the unmodified
    data, where all methods share one model)."""
    areas = scores(rows, value)
    by_seed = _by_seed(rows, value)
    per_seed = {m: {s: area_under_curve(p) for s, p in seeds.items()} for m, seeds in by_seed.items()}
    replicates = image_replicates(rows)

    def compare(method: str, other: str, prefix: str, words: tuple[str, str]) -> dict:
        difference = areas[method][0] - areas[other][0]
        over_seeds = seed_interval(per_seed[method], per_seed[other])
        over_images = image_interval(replicates.get(method), replicates.get(other))
        word = verdict(difference, [over_seeds, over_images], lower_is_better, words)
        return _comparison(prefix, over_seeds, over_images, word)

    overall = _ranks({m: mean for m, (mean, _, _) in areas.items()}, lower_is_better)
    fractions = sorted({row["fraction"] for row in rows} - {reference})
    per_fraction = {}
    for f in fractions:
        means = {m: _mean_at(seeds, f) for m, seeds in by_seed.items()}
        per_fraction[f] = _ranks({m: v for m, v in means.items() if v is not None}, lower_is_better)
    ordered = sorted(areas, key=lambda m: (overall[m], m))
    records = []
    for position, method in enumerate(ordered):
        mean, std, seeds = areas[method]
        record = {"rank": overall[method], "method": method, "auc_mean": mean, "auc_std": std, "seeds": seeds}
        if baseline in areas:  # else no columns: ranking_markdown says which comparison is missing
            record[f"auc_minus_{baseline}"] = mean - areas[baseline][0]
            if method == baseline:
                record.update(_comparison(baseline, None, None, ""))
            else:
                record.update(compare(method, baseline, baseline, ("better", "worse")))
        following = ordered[position + 1] if position + 1 < len(ordered) else None
        record["next"] = following or ""
        record["auc_minus_next"] = None if following is None else mean - areas[following][0]
        if following is None:
            record.update(_comparison("next", None, None, ""))
        else:
            record.update(compare(method, following, "next", ("ahead", "behind")))
        record.update({f"rank_at_{100 * f:.3g}%": per_fraction[f].get(method) for f in fractions})
        records.append(record)
    return records


def _interval(record: dict, prefix: str, over: str) -> str:
    low, high = record.get(f"{prefix}_{over}_low"), record.get(f"{prefix}_{over}_high")
    if low is not None:
        return f"[{low:.4f}, {high:.4f}]"
    return "n/a (1 seed)" if over == "seeds" else "n/a (no per-image values)"


def differences_markdown(records: list[dict], baseline: str = "random") -> list[str]:
    """The differences table: per method its AUC minus `baseline`'s and minus the next-ranked method's,
    each with its intervals and verdict."""
    comparisons = ([baseline] if f"auc_minus_{baseline}" in records[0] else []) + ["next"]
    header, rule = ["method"], ["---"]
    for prefix in comparisons:
        first = ["next"] if prefix == "next" else []
        header += [*first, f"AUC − {prefix}", f"{CONFIDENCE:.0%} over seeds", f"{CONFIDENCE:.0%} over images",
                   f"vs {prefix}"]  # fmt: skip
        rule += ["---"] * (len(first) + 4)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    for record in records:
        cells = [record["method"]]
        for prefix in comparisons:
            first = [record["next"] or "–"] if prefix == "next" else []
            if not record[f"vs_{prefix}"]:  # the baseline itself, or the last-ranked method
                cells += [*first, _cell(record[f"auc_minus_{prefix}"]), "–", "–", "–"]
                continue
            cells += [*first, _cell(record[f"auc_minus_{prefix}"]), _interval(record, prefix, "seeds"),
                      _interval(record, prefix, "images"), record[f"vs_{prefix}"]]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# The columns of summary.csv that the ranking table of summary.md leaves to the differences table: the next
# method, the difference to it, and the intervals' bounds.
DETAIL = ("next", "auc_minus_next")
INTERVAL_BOUNDS = ("_seeds_low", "_seeds_high", "_images_low", "_images_high")


def ranking_markdown(records: list[dict], value: str, lower_is_better: bool, baseline: str = "random") -> str:
    """The ranking as a Markdown section that says which direction is better, over how many seeds, and
    which comparison is missing when `baseline` was not run; then the differences to `baseline` and to the
    method ranked next, with their intervals and whether each is a tie."""
    better = "lower" if lower_is_better else "higher"
    columns = [c for c in records[0] if c not in DETAIL and not c.endswith(INTERVAL_BOUNDS)]
    lines = [
        "## Ranking by area under the curve",
        "",
        f"AUC = area under the {value}-vs-fraction curve divided by the fraction range; {better} is better. "
        f"rank 1 = best; {seeds_note({r['method']: r['seeds'] for r in records})}.",
    ]
    if f"auc_minus_{baseline}" not in columns:
        lines.append(
            f"No `{baseline}` among the methods: nothing says whether a method beats {baseline} removal "
            f"(add method={baseline} for the auc_minus_{baseline} column)."
        )
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for record in records:
        lines.append("| " + " | ".join(_cell(record[c]) for c in columns) + " |")
    lines += [
        "",
        "## Differences and their intervals",
        "",
        f"Each method's AUC minus that of {baseline} and of the method ranked next, with {CONFIDENCE:.0%} "
        "intervals: over seeds, a t-interval on the per-seed differences (paired by seed); over test "
        f"images, the middle {CONFIDENCE:.0%} of the difference over {REPLICATES} bootstrap resamples of "
        f"the test images (seed {BOOTSTRAP_SEED}, one draw for every method), from the per-image values. A "
        "difference one of whose intervals contains 0 is a tie: the ranking does not separate the two "
        "methods. n/a: no interval, from one seed (over seeds) or without per-image values (over images).",
        "",
        *differences_markdown(records, baseline),
    ]
    return "\n".join(lines)


def _cell(value) -> str:
    # A std over one seed, no rank at a fraction the method was not run at, no comparison (the baseline
    # with itself, the last method with none after it).
    if value is None or value == "":
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_ranking(records: list[dict], path: Path) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
