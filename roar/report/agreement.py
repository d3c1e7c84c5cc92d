"""`roar-report --agreement DIR ...`: do evaluation protocols agree on which saliency method is best?

Each DIR is one finished run of one protocol (ROAR or KAR with some fill, pixel perturbation, mask
leakage, ...) on the same base model. Every run's summary.csv ranks the methods by the area under their
curve (AUC), in its own direction (roar.report.summary). The report puts those ranks side by side and
measures, for every pair of protocols, Kendall's τ between them (1: the same order, -1: reversed, 0:
unrelated), with a bootstrap interval: test images are resampled with replacement (the same draw for every
protocol evaluated on the same test images, so the interval reflects how the protocols co-vary on them) and
each run's retraining seeds are resampled with replacement; every method's AUC is recomputed from the
per-image values in per_image.pt (roar.report.write_per_image), the methods re-ranked and τ recomputed.

A cell with no per-image values (a model cached before roar recorded them) keeps its one value in every
replicate: it is resampled over seeds only, and the report says so.

The scanned directories are data: configurations are read as plain YAML (nothing is instantiated) and
per_image.pt with `torch.load(weights_only=True)`, which runs no code.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from omegaconf import DictConfig, OmegaConf
from scipy.stats import kendalltau

from roar.config import first_difference
from roar.errors import ConfigError
from roar.report.results import PER_IMAGE, read_per_image
from roar.report.summary import bootstrap_weights, resampled_aucs
from roar.runtime.files import atomic_write

MARKDOWN, TABLE, FIGURE = "agreement.md", "agreement.csv", "agreement.png"
# What makes the base model every protocol's saliency maps come from (roar.stages.specs.training_spec).
BASE_MODEL_KEYS = ("dataset", "model", "trainer", "seed")
# A run's outputs that are not its results table.
NOT_RESULTS = ("summary.csv", "stages.csv")


@dataclass
class Protocol:
    """One run's ranking and its values: `values[m, s, f, i]` is method m's value at fraction f with seed s
    on test image i (the image axis has length 1 when no cell has per-image values)."""

    name: str
    run_dir: Path
    config: DictConfig
    ranks: dict[str, int]
    aucs: dict[str, float]
    lower_is_better: bool
    methods: list[str]
    seeds: list[int]
    fractions: list[float]
    values: np.ndarray
    without_images: int  # cells whose value has no per-image breakdown

    @property
    def images(self) -> int:
        """How many test images the per-image values cover (0: the run has none)."""
        return 0 if self.without_images == np.prod(self.values.shape[:3]) else self.values.shape[-1]


def protocol_name(cfg: DictConfig) -> str:
    """The protocol a run measured, from its configuration: `ROAR mean`, `KAR road`, `leakage`,
    `perturbation lerf deletion zero logit_change`, ... (a task's own options under `task.`, order, mode,
    fill and metric, follow its name; both orders of task=perturbation are `SRG`)."""
    task = str(cfg.task._target_).split(".")[-2]  # roar.tasks.<task>.run
    if task == "roar":
        return f"{cfg.roar.mode.upper()} {cfg.roar.fill}"
    if task == "leakage":
        return "leakage" if cfg.roar.mode == "roar" else f"leakage ({cfg.roar.mode.upper()} masks)"
    # Both orders of task=perturbation (task.order=[lerf,morf]) rank by SRG, LeRF's area minus MoRF's.
    options = ["SRG" if OmegaConf.is_list(cfg.task[key]) else str(cfg.task[key])
               for key in ("order", "mode", "fill", "metric") if key in cfg.task]  # fmt: skip
    return " ".join([task, *options])


def _config(run_dir: Path) -> DictConfig:
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no .hydra/config.yaml (give the directory of one finished run)")
    return OmegaConf.load(path)


def _base_model(cfg: DictConfig) -> dict:
    """What decides the base model, as written (interpolations unresolved: they name the same values)."""
    return {key: OmegaConf.to_container(cfg, resolve=False).get(key) for key in BASE_MODEL_KEYS}


def _read_summary(run_dir: Path) -> tuple[dict[str, int], dict[str, float]]:
    path = run_dir / "summary.csv"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no summary.csv (has the run finished?)")
    with open(path, newline="") as f:
        records = list(csv.DictReader(f))
    return {r["method"]: int(r["rank"]) for r in records}, {
        r["method"]: float(r["auc_mean"]) for r in records
    }


def _lower_is_better(ranks: dict[str, int], aucs: dict[str, float]) -> bool:
    """The run's direction, read off its ranking: whether its best-ranked methods have the lowest AUCs
    (summary.csv ranks in the task's own direction). Methods with equal AUCs say nothing; when all are
    equal, either direction ranks them alike."""
    ordered = sorted(ranks, key=ranks.get)
    return not any(aucs[a] > aucs[b] for a, b in zip(ordered, ordered[1:]) if ranks[a] < ranks[b])


def _results_rows(run_dir: Path, value: str | None) -> tuple[list[dict], str]:
    """The run's results table (the CSV whose columns start with method, fraction, seed) and its value
    column: `value` when per_image.pt names it, else the table's first column after those three."""
    for path in sorted(run_dir.glob("*.csv")):
        if path.name in NOT_RESULTS:
            continue
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            if columns[:3] == ["method", "fraction", "seed"] and len(columns) > 3:
                column = value or columns[3]
                rows = [{"method": r["method"], "fraction": float(r["fraction"]), "seed": int(r["seed"]),
                         "value": float(r[column])} for r in reader]  # fmt: skip
                return rows, column
    raise ConfigError(f"{run_dir}: no results table (a CSV with method, fraction and seed columns)")


def load_protocol(run_dir: Path) -> Protocol:
    """A run's configuration, ranking and values (per image where per_image.pt has them)."""
    cfg = _config(run_dir)
    ranks, aucs = _read_summary(run_dir)
    stored = read_per_image(run_dir / PER_IMAGE) if (run_dir / PER_IMAGE).is_file() else None
    rows, _ = _results_rows(run_dir, stored["value"] if stored else None)
    entries = stored["rows"] if stored else []
    images = {(r["method"], r["fraction"], r["seed"]): r["values"].double().numpy() for r in entries}
    count = len(next(iter(images.values()))) if images else 1
    methods, seeds = sorted(ranks), sorted({r["seed"] for r in rows})
    fractions = sorted({r["fraction"] for r in rows})
    values = np.full((len(methods), len(seeds), len(fractions), count), np.nan)
    without_images = 0
    for row in rows:
        cell = (row["method"], row["fraction"], row["seed"])
        index = (methods.index(row["method"]), seeds.index(row["seed"]), fractions.index(row["fraction"]))
        if cell in images:
            values[index] = images[cell]
        else:
            values[index] = row["value"]  # the same in every resample of the images
            without_images += 1
    missing = np.argwhere(np.isnan(values[..., 0]))
    if len(missing):
        m, s, f = missing[0]
        raise ConfigError(
            f"{run_dir}: no value for {methods[m]} at fraction {fractions[f]:g}, seed {seeds[s]} "
            "(the agreement report needs each method's full curve for every seed of the run)"
        )
    return Protocol(protocol_name(cfg), run_dir, cfg, ranks, aucs, _lower_is_better(ranks, aucs), methods,
                    seeds, fractions, values, without_images)  # fmt: skip


def check_base_model(protocols: list[Protocol]) -> None:
    """Refuse runs whose saliency maps come from different base models, or that give one method name to
    differently configured methods: their rankings would not rank the same explanations."""
    first = protocols[0]
    for other in protocols[1:]:
        a, b = _base_model(first.config), _base_model(other.config)
        if a != b:
            raise ConfigError(
                f"{first.run_dir} and {other.run_dir} have different base models, "
                f"{first_difference(a, b)}: the agreement report compares protocols on one base model"
            )
        for method in sorted(set(first.methods) & set(other.methods)):
            a, b = (OmegaConf.to_container(p.config.method[method], resolve=False) for p in (first, other))
            if a != b:
                raise ConfigError(
                    f"{first.run_dir} and {other.run_dir} configure method {method} differently, "
                    f"{first_difference(a, b, f'method.{method}.')}"
                )


def shared_methods(protocols: list[Protocol]) -> tuple[list[str], dict[str, list[str]]]:
    """The methods every run ranked, and per protocol those it ranked that not every run did."""
    shared = sorted(set.intersection(*(set(p.methods) for p in protocols)))
    if len(shared) < 2:
        raise ConfigError(
            f"the runs share {len(shared)} method(s) ({', '.join(shared) or 'none'}): ranks need at least two"
        )
    return shared, {p.name: sorted(set(p.methods) - set(shared)) for p in protocols}


def scores(protocol: Protocol, methods: list[str], image_weights: np.ndarray, seed_weights: np.ndarray):
    """Each method's AUC (mean over seeds), signed so that lower ranks better, under each replicate's
    weights: `image_weights` (B, images) and `seed_weights` (B, seeds), each row summing to 1 (how often
    each image or seed was drawn, over the draws). Returns (methods, B)."""
    values = protocol.values[[protocol.methods.index(m) for m in methods]]
    auc = resampled_aucs(values, protocol.fractions, image_weights, seed_weights)
    return auc if protocol.lower_is_better else -auc


def tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's τ-b (ties counted as scipy does); NaN where either side ranks every method alike."""
    return float(kendalltau(a, b).statistic)


def agreement(protocols: list[Protocol], methods: list[str], replicates: int = 1000, seed: int = 0):
    """Every pair of protocols: τ between their summary.csv ranks of `methods`, and the 2.5 and 97.5
    percentiles of τ over `replicates` bootstrap replicates (`seed` seeds the draws). Protocols evaluated
    on as many test images share each replicate's draw of them (the same test split)."""
    rng = np.random.default_rng(seed)
    counts = sorted({p.values.shape[-1] for p in protocols})
    image_weights = {count: bootstrap_weights(rng, count, replicates) for count in counts}
    resampled = {
        p.name: scores(
            p, methods, image_weights[p.values.shape[-1]], bootstrap_weights(rng, len(p.seeds), replicates)
        )
        for p in protocols
    }
    pairs = []
    for a, b in combinations(protocols, 2):
        taus = np.array([tau(x, y) for x, y in zip(resampled[a.name].T, resampled[b.name].T)])
        defined = taus[~np.isnan(taus)]
        low, high = np.percentile(defined, [2.5, 97.5]) if len(defined) else (math.nan, math.nan)
        pairs.append({"protocol_a": a.name, "protocol_b": b.name,
                      "tau": tau([a.ranks[m] for m in methods], [b.ranks[m] for m in methods]),
                      "low": float(low), "high": float(high), "replicates": len(defined)})  # fmt: skip
    return pairs


def _direction(protocol: Protocol) -> str:
    return "lower" if protocol.lower_is_better else "higher"


def rank_table(protocols: list[Protocol], methods: list[str]) -> str:
    """A row per method, a column per protocol: the method's rank (1 = best in that protocol's own
    direction) and its AUC."""
    header = (
        "| method | " + " | ".join(f"{p.name} ({_direction(p)} AUC ranks first)" for p in protocols) + " |"
    )
    lines = [header, "|---|" + "---:|" * len(protocols)]
    for method in sorted(methods, key=lambda m: (protocols[0].ranks[m], m)):
        cells = [f"{p.ranks[method]} ({p.aucs[method]:.4g})" for p in protocols]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tau_table(pairs: list[dict]) -> str:
    lines = ["| protocol | protocol | Kendall's τ | 95 % interval | replicates |", "|---|---|---:|---:|---:|"]
    for pair in pairs:
        lines.append(
            f"| {pair['protocol_a']} | {pair['protocol_b']} | {pair['tau']:.2f} | "
            f"[{pair['low']:.2f}, {pair['high']:.2f}] | {pair['replicates']} |"
        )
    return "\n".join(lines)


def resampling_notes(protocols: list[Protocol]) -> list[str]:
    """What each protocol's interval resamples, where that is less than its test images and seeds."""
    notes = []
    for p in protocols:
        cells = int(np.prod(p.values.shape[:3]))
        if p.without_images:
            notes.append(
                f"{p.name}: {p.without_images} of {cells} cells have no per-image values (trained models "
                "cached before roar recorded them): they are resampled over seeds only"
                + (", and this run has one seed, so they do not vary at all" if len(p.seeds) == 1 else "")
            )
    return notes


def markdown(protocols: list[Protocol], methods: list[str], dropped: dict[str, list[str]], pairs: list[dict],
             replicates: int, seed: int) -> str:  # fmt: skip
    base = protocols[0].config
    runs = "\n".join(
        f"- {p.name}: `{p.run_dir}` ({len(p.seeds)} seed{'s' * (len(p.seeds) > 1)}, "
        f"per-image values for {p.images or 'no'} test images)"
        for p in protocols
    )
    dropped_lines = [f"- {name}: {', '.join(d)}" for name, d in dropped.items() if d]
    notes = resampling_notes(protocols)
    parts = [
        "# Agreement between evaluation protocols",
        "",
        f"Base model: dataset {base.dataset.name}, model {OmegaConf.select(base, 'model.net._target_')}, "
        f"seed {base.seed}. Runs:",
        "",
        runs,
        "",
        "## Ranks",
        "",
        "Each method's rank under each protocol (1 = best, in the protocol's own direction, from its "
        "summary.csv) and its AUC (area under its curve over the fractions, mean over seeds).",
        "",
        rank_table(protocols, methods),
        "",
    ]
    if dropped_lines:
        parts += ["Methods not in every run, left out:", "", *dropped_lines, ""]
    parts += [
        "## Kendall's τ between protocols",
        "",
        tau_table(pairs),
        "",
        "τ = 1: the two protocols order the methods alike; -1: in reverse; 0: no relation. With "
        f"{len(methods)} methods τ moves in steps of {2 / (len(methods) * (len(methods) - 1) / 2):.2g}. "
        f"The interval holds the middle 95 % of τ over {replicates} bootstrap replicates (seed {seed}): "
        "each replicate draws the test images with replacement (one draw shared by every protocol on "
        "the same test images) and each run's seeds with replacement, recomputes every method's AUC from "
        "the per-image values, re-ranks and recomputes τ. It measures how much the agreement depends on "
        "which test images (and training seeds) happened to be used, not how it would change with other "
        "methods, fractions or base models. `replicates` counts those where τ is defined (not every "
        "method tied).",
        "",
        "A rank is the protocol's verdict in its own direction: ROAR ranks first the method whose removals "
        "hurt the retrained model most, KAR the one whose kept pixels sustain it best, perturbation (LeRF "
        "deletion) the one whose least salient pixels change the logit least, MoRF deletion the one whose "
        "most salient pixels change it most, MoRF insertion the one whose most salient pixels restore the "
        "target's probability fastest, SRG the one whose LeRF and MoRF curves lie furthest apart, and "
        "randomization the one whose maps change most when the model's weights are re-initialised. "
        "Leakage ranks first the "
        "method whose removal masks alone let a classifier guess the label least: a property of the masks "
        "(how much ROAR's retraining can read from where pixels were removed), not of the explanation's "
        "quality; a positive τ between leakage and ROAR says that the methods ROAR favours leak less.",
    ]
    if notes:
        parts += ["", "Resampling:", "", *(f"- {n}" for n in notes)]
    return "\n".join(parts) + "\n"


def write_table(pairs: list[dict], path: Path) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(pairs[0]))
        writer.writeheader()
        writer.writerows(pairs)


def plot_heatmap(protocols: list[Protocol], pairs: list[dict], replicates: int, path: Path) -> None:
    """τ between every pair of protocols as a symmetric heat map (red: agree, blue: reversed), each cell
    annotated with τ and its interval; the diagonal is 1."""
    names = [p.name for p in protocols]
    matrix = np.eye(len(names))
    labels = [["1"] * len(names) for _ in names]
    for pair in pairs:
        i, j = names.index(pair["protocol_a"]), names.index(pair["protocol_b"])
        matrix[i, j] = matrix[j, i] = pair["tau"]
        labels[i][j] = labels[j][i] = f"{pair['tau']:.2f}\n[{pair['low']:.2f}, {pair['high']:.2f}]"
    size = 1.4 + 1.1 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size), dpi=120)
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            dark = abs(matrix[i, j]) > 0.6
            ax.text(
                j, i, labels[i][j], ha="center", va="center", fontsize=7, color="white" if dark else "black"
            )
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="Kendall's τ")
    base = protocols[0].config
    ax.set_title(
        f"Agreement of method rankings on {base.dataset.name} (seed {base.seed})\n"
        f"Kendall's τ [95 % bootstrap interval, B={replicates}]",
        fontsize=9,
    )
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:], bbox_inches="tight")  # long protocol names
    plt.close(fig)


@dataclass
class Comparison:
    """The runs' protocols, the methods they all ranked (and per protocol those left out), and τ between
    every pair of protocols with its bootstrap interval (`replicates` draws, seeded with `seed`)."""

    protocols: list[Protocol]
    methods: list[str]
    dropped: dict[str, list[str]]
    pairs: list[dict]
    replicates: int
    seed: int


def compare(run_dirs: list[Path], replicates: int = 1000, seed: int = 0) -> Comparison:
    """Read the runs, check that they share a base model, and measure their agreement."""
    if len(run_dirs) < 2:
        raise ConfigError("--agreement compares protocols: give at least two run directories")
    protocols = [load_protocol(d) for d in run_dirs]
    check_base_model(protocols)
    names = [p.name for p in protocols]
    for p in protocols:  # two runs of one protocol (other fractions, say) are told apart by directory
        if names.count(p.name) > 1:
            p.name = f"{p.name} ({p.run_dir.name})"
    methods, dropped = shared_methods(protocols)
    return Comparison(
        protocols, methods, dropped, agreement(protocols, methods, replicates, seed), replicates, seed
    )


def write_report(comparison: Comparison, out_dir: Path) -> str:
    """agreement.md, agreement.csv and agreement.png in `out_dir`; returns the Markdown."""
    c = comparison
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(c.protocols, c.methods, c.dropped, c.pairs, c.replicates, c.seed)
    with atomic_write(out_dir / MARKDOWN) as tmp:
        tmp.write_text(text)
    write_table(c.pairs, out_dir / TABLE)
    plot_heatmap(c.protocols, c.pairs, c.replicates, out_dir / FIGURE)
    return text
