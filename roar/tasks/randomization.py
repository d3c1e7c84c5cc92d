"""Model-parameter randomisation sanity checks (Adebayo et al., NeurIPS 2018): `task=randomization`.

A map that explains the model has to change when the model's learned weights are destroyed. The layers with
parameters are re-initialised from the logits downwards, one more at each step (`cascading`), or each on its
own with every other layer as trained (`independent`), and at every step each method's maps of the first
`task.num_images` test images on the randomised model are compared with its maps on the trained model, per
image: the Spearman rank correlation of |map|, the SSIM of |map| scaled to [0, 1] by its maximum, and the
relative change of the map's entropy, (H(randomised) - H(trained)) / H(trained), which the efficient variant
of the test (eMPRT, Hedström et al. 2024) uses between the trained and the fully randomised model. Low
similarity is what a method should show: its map depends on the weights. A map that ignores the model (sobel,
random with its seed) stays at similarity 1.

Re-initialisation uses each layer's own `reset_parameters()`, with the global generator seeded from the run's
seed and the layer's name, so a layer gets the same new weights in both orders and on every device. For a
batch-norm layer that also resets its running mean and variance (to 0 and 1): they are estimated from the
training data as much as the weights are learned from it, and a randomisation that kept them would leave
that learned scale in the model (Quantus, the reference implementation of both tests, resets them alike).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from omegaconf import DictConfig
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.functional.regression import spearman_corrcoef

from roar import report, saliency
from roar.config import method_names
from roar.config.schema import RANDOMIZATION_ORDERS
from roar.data.datamodule import unit_range
from roar.errors import ConfigError
from roar.report.results import curves
from roar.report.summary import seed_counts, seeds_note
from roar.runtime.console import GridProgress
from roar.runtime.files import atomic_write
from roar.stages import load_data, saliency_spec
from roar.stages.training import build_classifier, device_of, load_classifier
from roar.tasks.common import Run, base_model, open_run, write_outputs
from roar.tasks.explain import plot_gallery

log = logging.getLogger(__name__)

METRICS = ("spearman", "ssim", "entropy_change")
COLUMNS = ("method", "fraction", "seed", "step", "layer", *METRICS)
# Histogram bins of a map's D values for its entropy: the square root of D within these bounds (Quantus's
# square-root rule and its bounds for eMPRT). A fixed 100 bins would give each value of an 8x8 map a bin of
# its own, and every such map the same entropy.
ENTROPY_BINS = (10, 200)
CURVES = "randomization_metrics.png"
GALLERY = "randomization_gallery.png"
TRAINED = "trained"  # the layer column of step 0, where nothing is randomised


def parameter_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules that hold parameters of their own, in `model.named_modules()` order (the order of the
    forward pass in the networks roar ships). ValueError if one cannot re-initialise them."""
    layers = [
        (name, m) for name, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None
    ]
    for name, layer in layers:
        if not callable(getattr(layer, "reset_parameters", None)):
            raise ValueError(
                f"layer {name} ({type(layer).__name__}) has parameters but no reset_parameters()"
            )
    return layers


def reinitialize(layer: nn.Module, name: str, seed: int) -> None:
    """Re-initialise `layer` in place with its own `reset_parameters()`, drawn on the CPU from a generator
    seeded by (`seed`, `name`), whatever device the layer is on; the global random state is left as it was."""
    fresh = copy.deepcopy(layer).cpu()
    layer_seed = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big") >> 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(layer_seed)
        fresh.reset_parameters()
    layer.load_state_dict(fresh.state_dict())


def randomized_models(
    model: nn.Module, order: str = "cascading", seed: int = 0
) -> Iterator[tuple[str, nn.Module]]:
    """(name of the layer just re-initialised, a randomised deep copy of `model`) for every layer with
    parameters, from the logits downwards: `cascading` keeps the layers randomised before (step k has the top
    k randomised), `independent` randomises that one layer alone. `model` itself is never modified."""
    if order not in RANDOMIZATION_ORDERS:
        raise ValueError(f"unknown randomisation order {order!r}; choose from {RANDOMIZATION_ORDERS}")
    randomized = copy.deepcopy(model)
    for name, _ in reversed(parameter_layers(model)):
        if order == "independent":
            randomized = copy.deepcopy(model)
        reinitialize(randomized.get_submodule(name), name, seed)
        # cascading: a copy, so that the next step's randomisation does not reach the model handed out
        yield name, copy.deepcopy(randomized) if order == "cascading" else randomized


def map_entropy(maps: torch.Tensor) -> torch.Tensor:
    """The Shannon entropy (nats) of each map's histogram of values over its own range, in sqrt(D) bins
    (within ENTROPY_BINS) for maps of D values."""
    flat = maps.flatten(1).float()
    bins = min(max(round(flat.shape[1] ** 0.5), ENTROPY_BINS[0]), ENTROPY_BINS[1])
    counts = torch.stack([torch.histc(m, bins=bins) for m in flat])
    return torch.special.entr(counts / counts.sum(1, keepdim=True)).sum(1)


def map_similarity(original: torch.Tensor, randomized: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image (N,): `spearman`, the rank correlation of |map| (1 where the maps are identical, also for a
    constant map, which has no ranking); `ssim`, of |map| divided by its maximum (torchmetrics, its default
    11x11 Gaussian window, data range 1); `entropy_change`, (H(randomized) - H(original)) / H(original) of
    |map| (`map_entropy`). Maps (N, H, W) or (N, C, H, W) of the same images; their sign is ignored."""
    original, randomized = original.abs().float(), randomized.abs().float()
    flat_original, flat_randomized = original.flatten(1), randomized.flatten(1)
    rank_correlation = spearman_corrcoef(flat_randomized.T, flat_original.T).reshape(-1)  # a column per image
    identical = (flat_original == flat_randomized).all(1)

    def scaled(maps: torch.Tensor) -> torch.Tensor:
        images = maps if maps.ndim == 4 else maps.unsqueeze(1)
        return images / images.amax((1, 2, 3), keepdim=True).clamp_min(torch.finfo(images.dtype).tiny)

    ssim = structural_similarity_index_measure(
        scaled(randomized), scaled(original), data_range=1.0, reduction="none"
    )
    entropy = map_entropy(original)
    return {
        "spearman": torch.where(identical, 1.0, rank_correlation),
        "ssim": ssim.reshape(-1),
        "entropy_change": (map_entropy(randomized) - entropy) / entropy,
    }


def maps_spec(cfg: DictConfig, method: str, num_images: int, randomized_layers: list[str], seed: int) -> dict:
    """What determines a method's maps of the first `num_images` test images on the base model with
    `randomized_layers` re-initialised from `seed` (the seed is left out where none is: the trained model's
    maps serve every seed). A layer's new weights depend on the seed and its name alone, so the set of layers
    stands for order and step: both orders share step 1. The maps are the method's own (its configured
    reduction, as `task=explain` shows them): roar.rank_by and roar.signed say how removal ranks maps, which
    this task does not do."""
    return {
        **saliency_spec(cfg, method),
        "reduce": cfg.method[method].get("reduce", "abs_sum"),
        "images": num_images,
        "randomized_layers": randomized_layers,
        "randomization_seed": seed if randomized_layers else None,
    }


def check_options(cfg: DictConfig, num_images: int, test_images: int) -> None:
    """What the schema cannot see: there are enough test images, and every layer of the model can be
    re-initialised (tried on a freshly built model, before the base model trains)."""
    if num_images > test_images:
        raise ConfigError(f"task.num_images: {num_images} exceeds the {test_images} test images")
    with torch.random.fork_rng():
        net = build_classifier(cfg.model).net
    try:
        parameter_layers(net)
    except ValueError as error:
        raise ConfigError(f"model: cannot be randomised: {error}") from None


@dataclass
class Randomization:
    """What a run measured: a row per method, step and seed (step 0: the trained model); the layers from the
    logits down; the first test image and each method's maps of it at every step of the first seed."""

    rows: list[dict]
    layers: list[str]  # "name (class)", from the logits down
    image: torch.Tensor
    gallery: dict[str, list[torch.Tensor]]


def grid(cfg: DictConfig, current: Run, order: str, num_images: int) -> Randomization:
    datamodule = load_data(cfg, current.cache)
    test = datamodule.splits["test"]
    check_options(cfg, num_images, len(test))
    base = base_model(cfg, current, datamodule, GridProgress(1), reused_maps=False)
    trained = load_classifier(cfg.model, base).net
    top_down = [name for name, _ in reversed(parameter_layers(trained))]
    device, batch_size = device_of(cfg.trainer), cfg.roar.saliency_batch_size
    images, labels = test.images[:num_images], test.labels[:num_images]
    truth = datamodule.ground_truth["test"][:num_images] if datamodule.ground_truth else None

    def maps(method: str, net: nn.Module, randomized_layers: list[str], seed: int) -> torch.Tensor:
        def compute(work) -> dict:
            explainer = saliency.create(cfg.method[method], net.to(device))
            chunks = [
                explainer.pixel_maps(datamodule.normalize(images[i : i + batch_size].to(device)),
                                     labels[i : i + batch_size],
                                     None if truth is None else truth[i : i + batch_size]).cpu()
                for i in range(0, num_images, batch_size)
            ]  # fmt: skip
            return {"maps": torch.cat(chunks)}

        about = {"name": f"{method} maps, trained model", "method": method}
        if randomized_layers:
            about = {"name": f"{method} maps, {len(randomized_layers)} layer(s) randomised ({order}), "
                             f"seed {seed}", "method": method, "seed": seed}  # fmt: skip
        spec = maps_spec(cfg, method, num_images, randomized_layers, seed)
        return current.cache.get_or_compute("randomized_saliency", spec, compute, about)["maps"]

    methods = method_names(cfg)
    original = {method: maps(method, trained, [], cfg.seed) for method in methods}
    described = [f"{name} ({type(layer).__name__})" for name, layer in reversed(parameter_layers(trained))]
    measured = Randomization([], described, images[0], {method: [original[method][0]] for method in methods})

    def add_row(method: str, step: int, layer: str, seed: int, randomized_maps: torch.Tensor) -> None:
        similarity = map_similarity(original[method], randomized_maps)
        measured.rows.append({
            "method": method, "fraction": step / len(top_down), "seed": seed, "step": step, "layer": layer,
            **{metric: values.mean().item() for metric, values in similarity.items()},
            "per_image": similarity["spearman"],
        })  # fmt: skip
        current.record(measured.rows[-1])

    for seed in cfg.seeds:
        for method in methods:
            add_row(method, 0, TRAINED, seed, original[method])
        for step, (layer, randomized) in enumerate(randomized_models(trained, order, seed), start=1):
            randomized_layers = top_down[:step] if order == "cascading" else [layer]
            for method in methods:
                step_maps = maps(method, randomized, randomized_layers, seed)
                add_row(method, step, layer, seed, step_maps)
                if seed == cfg.seeds[0]:
                    measured.gallery[method].append(step_maps[0])
            log.info(
                "seed %d, step %d/%d, %s randomised%s: spearman %s", seed, step, len(top_down), layer,
                " and every layer above" if order == "cascading" else " alone",
                ", ".join(f"{row['method']} {row['spearman']:.2f}" for row in measured.rows[-len(methods) :]),
            )  # fmt: skip
    return measured


def step_labels(layers: list[str], order: str) -> list[str]:
    """What the x-axis and the gallery's rows call each step: the trained model, then the layer re-initialised
    (+: in addition to those above it)."""
    return [TRAINED] + [f"+{name}" if order == "cascading" else name for name in layers]


def plot_metrics(rows: list[dict], labels: list[str], path: Path, title: str) -> None:
    """Spearman, SSIM and entropy change against the step, the layers named on the x-axis as in Adebayo et
    al.'s figures; a line per method with a mean ± std band over seeds, `random` grey as in every curve."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4.2), dpi=120, squeeze=False)
    steps = len(labels) - 1
    for axis, metric in zip(axes[0], METRICS):
        for method, points in sorted(curves(rows, metric).items()):
            x = [round(fraction * steps) for fraction in points]
            mean = torch.tensor([m for m, _, _ in points.values()])
            std = torch.tensor([s for _, s, _ in points.values()])
            style = (
                {"color": "0.45", "lw": 4, "alpha": 0.6} if method == "random" else {"marker": "o", "ms": 3}
            )
            (line,) = axis.plot(x, mean, label=method, **style)
            axis.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
        axis.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        axis.set_title(metric.replace("_", " "), fontsize=9)
        axis.grid(alpha=0.3)
    axes[0, 0].set_ylabel("trained vs randomised model's maps")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{title}\n{seeds_note(seed_counts(rows))}", fontsize=9)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:])  # the temporary file's name has no image suffix
    plt.close(fig)


def run(cfg: DictConfig, order: str, num_images: int) -> Path:
    """randomization.csv (a row per method, step and seed, with each image's Spearman correlation as its
    `per_image`), randomization_curve.png (Spearman), randomization_metrics.png (all three against the
    layers), randomization_gallery.png (the first test image's maps at every step of the first seed),
    stages.csv, summary.md/.csv (lower similarity is better) and the logger."""
    out = report.Outputs(
        csv="randomization.csv",
        curve="randomization_curve.png",
        title=f"Model-parameter randomisation on {cfg.dataset.name}, {order}",  # the x-axis says how
        value="spearman",
        columns=COLUMNS,
        xlabel=(
            "layers randomised from the logits down (% of the layers with parameters)"
            if order == "cascading"
            else "layer randomised alone (its place from the logits, % of the layers with parameters)"
        ),
        xname="% layers randomised",
        ylabel="Spearman correlation of |map| with the trained model's",
        reference=0.0,  # step 0: every method's maps compared with themselves
    )
    current = open_run(cfg, out)
    measured = grid(cfg, current, order, num_images)
    labels = step_labels(measured.layers, order)
    plot_metrics(measured.rows, labels, current.dir / CURVES, out.title)
    gallery = {method: torch.stack(step_maps) for method, step_maps in measured.gallery.items()}
    image = unit_range(measured.image).unsqueeze(0).expand(len(labels), *measured.image.shape)
    plot_gallery(image, labels, gallery, current.dir / GALLERY)
    write_outputs(current, measured.rows, out)
    return current.dir
