"""A gallery of saliency maps (`task=explain`): N test images x the selected methods, maps overlaid on the
images, drawn with Captum's visualisation; with `explain.logit_shares`, beside it the share of each image's
logit that the input term and each layer's full-gradient terms carry. The base model comes from (or goes
into) the stage cache, so a gallery after a ROAR run reuses its model."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from captum.attr import visualization
from omegaconf import DictConfig

from roar import report, saliency
from roar.config import method_names
from roar.data import TensorDataModule
from roar.errors import ConfigError
from roar.runtime.cache import StageCache
from roar.runtime.console import GridProgress
from roar.runtime.distributed import job_ranks
from roar.runtime.files import atomic_write
from roar.stages import load_data
from roar.stages.training import device_of, load_classifier
from roar.tasks.common import base_model, open_run

log = logging.getLogger(__name__)

CELL_INCHES, DPI = 1.6, 100
GALLERY = "gallery.png"
LOGIT_SHARES = "logit_shares.png"
BAR_INCHES = 0.12


def check_options(options: DictConfig, test_images: int) -> None:
    """What only the loaded data can tell (roar/config/validate.py checks the rest before anything runs)."""
    if options.num_images > test_images:
        raise ConfigError(f"explain.num_images: {options.num_images} exceeds the {test_images} test images")


def explain_images(
    cfg: DictConfig, net: torch.nn.Module, datamodule: TensorDataModule, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(raw images, labels, predicted classes, method -> per-pixel maps (N, H, W)) for the first
    `explain.num_images` test images, every selected method explaining the same target classes."""
    test = datamodule.splits["test"]
    images, labels = test.images[: cfg.explain.num_images], test.labels[: cfg.explain.num_images]
    inputs = datamodule.normalize(images.to(device))
    with torch.no_grad():
        predicted = net(inputs).argmax(1).cpu()
    targets = labels if cfg.explain.target == "label" else predicted
    truth = datamodule.ground_truth["test"][: cfg.explain.num_images] if datamodule.ground_truth else None
    maps = {
        name: saliency.create(cfg.method[name], net).pixel_maps(inputs, targets, truth).cpu()
        for name in method_names(cfg)
    }
    return images, labels, predicted, maps


def plot_gallery(
    images: torch.Tensor, row_labels: list[str], maps: dict[str, torch.Tensor], path: Path
) -> None:
    """One row per image, labelled `row_labels`: the image, then each method's map blended over it (Captum's
    blended heat map: the map minus its minimum, normalised per image with its top 2 % of mass clipped)."""
    rows, columns = len(images), 1 + len(maps)
    fig, axes = plt.subplots(
        rows, columns, figsize=(columns * CELL_INCHES, rows * CELL_INCHES), dpi=DPI, squeeze=False
    )
    for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        picture = image[..., 0] if image.shape[-1] == 1 else image
        axes[i, 0].imshow(picture, cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set(xticks=[], yticks=[])
        axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
        for j, (name, method_maps) in enumerate(maps.items(), start=1):
            shown = method_maps[i] - method_maps[i].min()  # contrast above the map's floor, as the authors
            if shown.max() > 0:
                visualization.visualize_image_attr(
                    shown.numpy()[..., None], image, method="blended_heat_map", sign="absolute_value",
                    plt_fig_axis=(fig, axes[i, j]), cmap="jet", alpha_overlay=0.55, use_pyplot=False,
                )  # fmt: skip
            else:  # a constant map (e.g. Grad-CAM of a randomised model) has nothing to scale: say so
                axes[i, j].imshow(picture, cmap="gray", vmin=0, vmax=1)
                axes[i, j].text(0.5, 0.5, "constant", ha="center", va="center", color="red", fontsize=7,
                                transform=axes[i, j].transAxes)  # fmt: skip
                axes[i, j].set(xticks=[], yticks=[])
            if i == 0:
                axes[i, j].set_title(name, fontsize=9)
    axes[0, 0].set_title("image", fontsize=9)
    fig.tight_layout(pad=0.3)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:])  # the temporary file's name has no image suffix
    plt.close(fig)


def plot_logit_shares(terms: saliency.FullGradientTerms, targets: torch.Tensor, path: Path) -> None:
    """One bar chart per image: the share of the target logit f carried by the input term (grad_x f * x)
    and by each layer's terms (its calls summed), layers in forward order; the bars of an image sum to 1.
    Shares can be negative or above 1: terms of both signs add up to f."""
    names, shares = terms.shares()
    rows = len(shares)
    fig, axes = plt.subplots(rows, 1, figsize=(max(6.0, len(names) * BAR_INCHES), 2.2 * rows), dpi=DPI,
                             squeeze=False, sharex=True)  # fmt: skip
    for i, (axis, row) in enumerate(zip(axes[:, 0], shares.cpu().numpy())):
        axis.bar(range(len(names)), row, color=["tab:orange"] + ["tab:blue"] * (len(names) - 1))
        axis.axhline(0, color="black", linewidth=0.5)
        axis.set_ylabel("share of f", fontsize=8)
        axis.set_title(f"image {i}: f = {terms.output[i].item():.3g} (class {targets[i].item()})", fontsize=9)
    axes[-1, 0].set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    fig.tight_layout(pad=0.3)
    fig.savefig(path)
    plt.close(fig)


def run(cfg: DictConfig) -> Path:
    """The gallery PNG (`gallery.png`) of the first `explain.num_images` test images x the selected
    methods, and with `explain.logit_shares` the logit shares (`logit_shares.png`), written into the run
    directory (and to the logger where it takes images)."""
    cache = StageCache(Path(cfg.paths.cache_dir), ranks=job_ranks())
    datamodule = load_data(cfg, cache)
    check_options(cfg.explain, test_images=len(datamodule.splits["test"]))
    current = open_run(cfg, cache=cache)
    # The gallery computes every method's maps (none come from the cache): each is tried first.
    base = base_model(cfg, current, datamodule, GridProgress(1), reused_maps=False)
    device = device_of(cfg.trainer)
    net = load_classifier(cfg.model, base).net.to(device)

    images, labels, predicted, maps = explain_images(cfg, net, datamodule, device)
    path = current.dir / GALLERY
    row_labels = [
        f"label {label}\npredicted {guess}" for label, guess in zip(labels.tolist(), predicted.tolist())
    ]
    plot_gallery(images, row_labels, maps, path)
    figures = {"saliency_gallery": path}
    if cfg.explain.logit_shares:
        targets = labels if cfg.explain.target == "label" else predicted
        terms = saliency.full_gradient_terms(net, datamodule.normalize(images.to(device)), targets.to(device))
        figures["logit_shares"] = current.dir / LOGIT_SHARES
        plot_logit_shares(terms, targets, figures["logit_shares"])
    if current.logger is not None:
        if hasattr(current.logger, "log_image"):  # W&B: the key roar-report logs galleries under
            for key, figure in figures.items():
                current.logger.log_image(key, [str(figure)])
        report.close_logger(current.logger)
    print("\n" + "\n".join(f"{figure.stem.replace('_', ' ')}: {figure}" for figure in figures.values()))
    return current.dir
