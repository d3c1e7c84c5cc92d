"""Side by side with Quantus 0.6 (the `bench` dependency group): pixel flipping, ROAD and MPRT computed by
Quantus and by roar on the same model, maps and images; for each, the largest difference between their
numbers and the ratio of their times (target: roar at least 10x faster, with equal results).

Setup: the digits SmallCNN of roar/conf/experiment/digits.yaml trained for EPOCHS epochs here, the first
IMAGES test images (raw, in [0, 1]; 1 x 8 x 8, so D = 64 pixels), and the maps of METHODS on them. Quantus
gets the network behind the normalisation (it feeds raw images, as roar does) and, for MPRT, roar's saliency
method as its explain_func. Both run on 2 threads; a time is the median of REPEATS runs, Quantus and roar
alternating, after a warm-up call of each.

How the settings are aligned (and where the definitions differ):
- Pixel flipping (Bach et al., 2015): Quantus's PixelFlipping(features_in_step=1) removes the pixels one at
  a time in order of decreasing attribution and records the softmax probability of the target after each
  step. roar: `removal_curves(order="morf", mode="deletion", fill="zero", metric="probability")` at the
  fractions k / D, k = 1..D. Quantus's default fill ("black") is the image's current minimum, not 0, and
  its default normalisation divides each map by its maximum; the comparison sets perturb_baseline=0.0 and
  normalise=False (neither changes the order of removal for maps >= 0).
- ROAD (Rong, Leemann et al., 2022): both fill with the same noisy linear imputation (the 8-neighbour
  system of ROAD's code, noise 0.01) and report the accuracy after removing a percentage of the pixels.
  Quantus removes int(D * p / 100) pixels, roar round(fraction * D): the percentages are multiples of
  6.25 %, where both are exact. Quantus's ROAD removes the most relevant pixels only (MoRF); its LeRF curve
  is that of the reversed maps (each map's maximum minus the map: Quantus refuses negative maps).
  Quantus's per-image solve is scipy's sparse LU, roar's a batched conjugate-gradient solve; their
  imputations (noise off) are compared directly, and the accuracies, whose noise is drawn differently,
  may differ at the few images that sit at a decision boundary. Quantus 0.6 averages
  only the first batch of a call (ROAD.custom_postprocess reads evaluation_scores[0]), so it is called with
  one batch of all images.
- MPRT (Adebayo et al., 2018): cascading randomisation from the logits down, the Spearman rank correlation
  of |map| on each randomised model with |map| on the original, per image. Quantus re-initialises every
  module that has reset_parameters (convolutions, batch norms and the linear layer) under
  torch.manual_seed(seed + 1); roar uses `randomized_models(order="cascading")`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import quantus
import torch
from hydra.utils import instantiate
from torch import nn

from benchmarks.timing import config, interleaved
from roar import saliency
from roar.removal import removal_mask
from roar.removal.imputation import ROAD_NOISE, linear_impute
from roar.tasks.perturbation import removal_curves
from roar.tasks.randomization import map_similarity, randomized_models

EPOCHS, IMAGES, THREADS, REPEATS = 5, 256, 2, 3
METHODS = ("fullgrad", "input_gradient")
# Multiples of 1/16 of the 64 pixels: Quantus's int(D * p / 100) and roar's round(fraction * D) agree.
ROAD_PERCENTAGES = [6.25 * k for k in range(1, 16)]
TARGET = 10.0


class RawInput(nn.Module):
    """The network behind roar's per-channel normalisation: raw images in [0, 1] in, logits out."""

    def __init__(self, net: nn.Module, normalize):
        super().__init__()
        self.net, self.normalize = net, normalize

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(images))


@dataclass
class Setup:
    """What both libraries get: the network and the normalisation roar feeds it through (`model` is the
    two as one module, for Quantus), raw test images in [0, 1] with their labels, and each method's maps
    (N, H, W) of the normalised images for the labels."""

    net: nn.Module
    normalize: Callable[[torch.Tensor], torch.Tensor]
    model: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    maps: dict[str, torch.Tensor]


def trained_digits() -> Setup:
    """The digits SmallCNN trained for EPOCHS epochs, its first IMAGES test images and their maps."""
    cfg = config("experiment=digits")
    datamodule = instantiate(cfg.dataset.datamodule)
    pl.seed_everything(0, verbose=False)
    classifier = instantiate(cfg.model)
    trainer = instantiate(
        cfg.trainer, max_epochs=EPOCHS, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(classifier, datamodule=datamodule)
    net = classifier.net.eval()
    test = datamodule.splits["test"]
    images, labels = test.images[:IMAGES], test.labels[:IMAGES]
    maps = {method: maps_of(method, net, datamodule.normalize(images), labels) for method in METHODS}
    return Setup(net, datamodule.normalize, RawInput(net, datamodule.normalize).eval(), images, labels, maps)


def maps_of(method: str, net: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, H, W) maps of `method` for the labels, as roar's saliency stage makes them."""
    return saliency.create(method, net).pixel_maps(inputs, labels)


def explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, method: str, **_) -> np.ndarray:
    """Quantus's explain_func: roar's maps, (N, 1, H, W) in numpy (Quantus also passes its `device`)."""
    return maps_of(method, model, torch.from_numpy(inputs), torch.from_numpy(targets)).unsqueeze(1).numpy()


def compare(quantus_call: Callable[[], object], roar_call: Callable[[], object]):
    """(median seconds of the Quantus call, of the roar call, and their results), alternating them REPEATS
    times after a warm-up call of each."""
    results = {"quantus": quantus_call(), "roar": roar_call()}

    def timed(name: str, call: Callable[[], object]) -> Callable[[], float]:
        def run() -> float:
            start = time.perf_counter()
            results[name] = call()
            return time.perf_counter() - start

        return run

    medians = interleaved({name: timed(name, call) for name, call in
                           (("quantus", quantus_call), ("roar", roar_call))}, REPEATS)  # fmt: skip
    return medians["quantus"], medians["roar"], results["quantus"], results["roar"]


def row(metric: str, method: str, agreement: str, quantus_s: float | None = None, roar_s: float = 0.0) -> str:
    text = f"{metric:<16} {method:<15} {agreement:<34}"
    if quantus_s is None:
        return text
    ratio = quantus_s / roar_s
    verdict = f"target >= {TARGET:g}x {'met' if ratio >= TARGET else 'NOT met'}"
    return f"{text} Quantus {quantus_s:7.3f} s | roar {roar_s:6.3f} s | x{ratio:6.1f} | {verdict}"


def pixel_flipping(setup: Setup, method: str) -> str:
    maps = setup.maps[method]
    entries = maps[0].numel()
    fractions = [k / entries for k in range(1, entries + 1)]
    metric = quantus.PixelFlipping(
        features_in_step=1, perturb_baseline=0.0, normalise=False, abs=False, disable_warnings=True
    )

    def quantus_curves() -> np.ndarray:  # (N, D)
        return np.asarray(metric(
            model=setup.model, x_batch=setup.images.numpy(), y_batch=setup.labels.numpy(),
            a_batch=maps.unsqueeze(1).numpy(), channel_first=True, softmax=True, device="cpu",
            batch_size=IMAGES,
        ))  # fmt: skip

    def roar_curves() -> torch.Tensor:  # (D, N)
        return removal_curves(setup.net, setup.normalize, setup.images, setup.labels, maps, fractions,
                              order="morf", mode="deletion", fill="zero", metric="probability")  # fmt: skip

    quantus_s, roar_s, theirs, ours = compare(quantus_curves, roar_curves)
    difference = np.abs(theirs - ours.T.numpy()).max()
    return row("pixel flipping", method, f"max |Δ probability| {difference:.1e}", quantus_s, roar_s)


def road_imputation(setup: Setup, method: str) -> str:
    """The fill alone, noise off, on the same masks: Quantus's per-image sparse solve against roar's."""
    maps, fraction = setup.maps[method], 0.5
    mask = removal_mask(maps, fraction)

    def quantus_fill() -> np.ndarray:
        return np.stack([
            quantus.functions.perturb_func.noisy_linear_imputation(
                arr=image, indices=np.flatnonzero(removed), noise=0.0
            )
            for image, removed in zip(setup.images.numpy(), mask.numpy())
        ])  # fmt: skip

    quantus_s, roar_s, theirs, ours = compare(quantus_fill, lambda: linear_impute(setup.images, mask))
    difference = np.abs(theirs - ours.numpy()).max()
    return row("ROAD fill 50 %", method, f"max |Δ pixel| {difference:.1e} (noise off)", quantus_s, roar_s)


def road(setup: Setup, method: str, order: str) -> str:
    """ROAD's accuracy curve, MoRF or LeRF (Quantus: ROAD of the reversed maps, as it takes no negative
    ones)."""
    maps = setup.maps[method]
    ranked = maps if order == "morf" else maps.flatten(1).amax(1).view(-1, 1, 1) - maps
    fractions = [p / 100 for p in ROAD_PERCENTAGES]
    metric = quantus.ROAD(
        percentages=ROAD_PERCENTAGES, noise=ROAD_NOISE, normalise=False, abs=False, disable_warnings=True
    )

    def quantus_accuracy() -> np.ndarray:
        accuracy = metric(
            model=setup.model, x_batch=setup.images.numpy(), y_batch=setup.labels.numpy(),
            a_batch=ranked.unsqueeze(1).numpy(), channel_first=True, device="cpu", batch_size=IMAGES,
        )  # fmt: skip
        return np.array([accuracy[p] for p in ROAD_PERCENTAGES])

    def roar_accuracy() -> np.ndarray:
        correct = removal_curves(setup.net, setup.normalize, setup.images, setup.labels, maps, fractions,
                                 order=order, mode="deletion", fill="road", metric="accuracy")  # fmt: skip
        return correct.mean(dim=1).numpy()

    quantus_s, roar_s, theirs, ours = compare(quantus_accuracy, roar_accuracy)
    difference = np.abs(theirs - ours).max()
    return row(f"ROAD {order}", method, f"max |Δ accuracy| {difference:.3f}", quantus_s, roar_s)


def mprt(setup: Setup, method: str) -> str:
    maps, inputs = setup.maps[method], setup.normalize(setup.images)
    metric = quantus.MPRT(layer_order="top_down", seed=0, disable_warnings=True)

    def quantus_similarities() -> np.ndarray:  # (layers, N)
        scores = metric(
            model=setup.net, x_batch=inputs.numpy(), y_batch=setup.labels.numpy(),
            a_batch=maps.unsqueeze(1).numpy(), channel_first=True, explain_func=explain,
            explain_func_kwargs={"method": method}, device="cpu", batch_size=IMAGES,
        )  # fmt: skip
        return np.array([values for layer, values in scores.items() if layer != "original"])

    def roar_similarities() -> np.ndarray:
        return np.stack([
            map_similarity(maps, maps_of(method, randomized, inputs, setup.labels))["spearman"].numpy()
            for _, randomized in randomized_models(setup.net, order="cascading", seed=0)
        ])  # fmt: skip

    quantus_s, roar_s, theirs, ours = compare(quantus_similarities, roar_similarities)
    # The two draw different random weights (Quantus: torch.manual_seed(seed + 1) once; roar: a seed per
    # layer name), so per image the similarities differ; their means over the images per step should not.
    difference = np.abs(theirs.mean(axis=1) - ours.mean(axis=1)).max()
    return row("MPRT cascading", method, f"max |Δ mean spearman| {difference:.2f}", quantus_s, roar_s)


def run() -> list[str]:
    torch.set_num_threads(THREADS)
    setup = trained_digits()
    rows = [
        f"digits SmallCNN ({EPOCHS} epochs), {IMAGES} test images 1x8x8, {THREADS} threads, medians of "
        f"{REPEATS} alternating runs; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        "(a shared machine: the ratios are what to read)"
    ]
    for method in METHODS:
        rows.append(pixel_flipping(setup, method))
        rows.append(road_imputation(setup, method))
        rows.extend(road(setup, method, order) for order in ("morf", "lerf"))
        rows.append(mprt(setup, method))
    return rows


if __name__ == "__main__":
    print("\n".join(run()))
