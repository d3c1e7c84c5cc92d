"""Every baseline saliency method against the floor (one forward + input-gradient backward on the batch).

CIFAR-sized inputs (64 x 3 x 32 x 32, two CPU threads) on torchvision's vgg11_bn (classifier resized for
512 x 1 x 1 features) and resnet18, 10 classes, random weights; each method with the parameters of its
roar/conf/method/<name>.yaml (integrated gradients: 50 steps; the noise methods: 50 samples; the perturbation
methods: 64 patches or superpixels, lime and kernel_shap 200 samples), called through
`roar.saliency.create(...).pixel_maps`. How time and memory are measured: benchmarks/measure.py.

Targets: integrated_gradients <= 55x the floor's time and <= 2x its peak memory. For reference, a row
for plain Captum IntegratedGradients with its default single batch of N x 50 path points.
"""

from __future__ import annotations

import sys
from functools import partial

import captum.attr
import torch
from torch import nn

from benchmarks.measure import (
    MODELS,
    THREADS,
    build_model,
    floor,
    main,
    peak_memory_mib,
    time_ratio,
)
from roar import saliency

BASELINES = (
    "input_gradient", "input_x_gradient", "guided_backprop", "deconvolution", "gradcam", "gradcam_plus_plus",
    "guided_gradcam", "deeplift", "lrp", "integrated_gradients", "smoothgrad", "smoothgrad_sq", "vargrad",
    "deeplift_shap", "gradient_shap", "occlusion", "feature_ablation", "shapley_value_sampling", "lime",
    "kernel_shap", "random", "sobel",
)  # fmt: skip
# One call of these is 8 to hundreds of floor-sized passes, whose own spread averages out: two timed calls
# (after the warm-up) keep the whole table within minutes, and five floor calls next to each give the ratio
# a steady denominator.
SLOW = (
    "integrated_gradients", "smoothgrad", "smoothgrad_sq", "vargrad", "deeplift_shap", "gradient_shap",
    "occlusion", "feature_ablation", "shapley_value_sampling", "lime", "kernel_shap", "captum_ig",
)  # fmt: skip
SLOW_REPEATS, FLOORS_PER_SLOW_CALL = 2, 5
CHEAP_REPEATS = 11
TARGET_TIME, TARGET_MEMORY = 55.0, 2.0


def saliency_call(name: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The method with its roar/conf/method/<name>.yaml parameters (the run seed 0), as create(name) reads
    them."""
    return saliency.create(name, model).pixel_maps(x, target)


def captum_integrated_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Plain Captum: all N x n_steps path points in one batch (internal_batch_size=None)."""
    n_steps = saliency.named_config("integrated_gradients")["n_steps"]
    x = x.detach().requires_grad_(True)
    return captum.attr.IntegratedGradients(model).attribute(x, target=target, n_steps=n_steps)


def call_of(method: str):
    if method == "floor":
        return floor
    if method == "captum_ig":
        return captum_integrated_gradients
    return partial(saliency_call, method)


def _row(model: str, method: str, seconds: float, ratio: float, mib: float, mem_ratio: float) -> str:
    row = f"{model:<9} {method:<22} {seconds:>8.3f} {ratio:>7.2f} {mib:>7.0f} {mem_ratio:>6.2f}"
    print(row, file=sys.stderr, flush=True)  # progress: the whole table takes minutes
    return row


def run() -> list[str]:
    torch.set_num_threads(THREADS)
    rows = [f"batch 64x3x32x32, {THREADS} threads; time and peak memory as multiples of the floor's"]
    rows.append(f"{'model':<9} {'method':<22} {'s/batch':>8} {'x time':>7} {'MiB':>7} {'x mem':>6}")
    for model_name in MODELS:
        model = build_model(model_name)
        floor_mib = peak_memory_mib(__name__, model_name, "floor")
        floor_seconds, _ = time_ratio(model, floor, CHEAP_REPEATS)
        rows.append(_row(model_name, "floor", floor_seconds, 1.0, floor_mib, 1.0))
        for method in (*BASELINES, "captum_ig"):
            slow = method in SLOW
            seconds, ratio = time_ratio(
                model,
                call_of(method),
                SLOW_REPEATS if slow else CHEAP_REPEATS,
                FLOORS_PER_SLOW_CALL if slow else 1,
            )
            mib = peak_memory_mib(__name__, model_name, method)
            label = "captum IG, one batch" if method == "captum_ig" else method
            row = _row(model_name, label, seconds, ratio, mib, mib / floor_mib)
            if method == "integrated_gradients":
                met = ratio <= TARGET_TIME and mib / floor_mib <= TARGET_MEMORY
                row += f"  target <= {TARGET_TIME:g}x, <= {TARGET_MEMORY:g}x: {'met' if met else 'NOT MET'}"
            rows.append(row)
    return rows


if __name__ == "__main__":
    main(call_of, run)
