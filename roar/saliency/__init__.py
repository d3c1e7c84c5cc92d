"""Saliency methods behind one interface: `create(name, model, **params).pixel_maps(images, targets)`."""

from __future__ import annotations

import captum.attr
import torch
from torch import nn

from roar.saliency.base import REDUCTIONS, PixelSaliency
from roar.saliency.cam import GradCam, GradCamPlusPlus, LayerGradCamPlusPlus
from roar.saliency.decomposition import FullGradientTerms, full_gradient_terms
from roar.saliency.fullgrad import FullGrad, SimpleFullGrad, SmoothFullGrad
from roar.saliency.integrated_gradients import IntegratedGradients
from roar.saliency.noise import NoisyGradients, SmoothGrad, SmoothGradSquared, VarGrad
from roar.saliency.oracle import Oracle
from roar.saliency.random import RandomSaliency
from roar.saliency.sobel import Sobel

# Each method is built as METHODS[name](model, **params) and has Captum's `attribute(inputs, target=...)`.
METHODS = {
    "fullgrad": FullGrad,
    "simple_fullgrad": SimpleFullGrad,
    "smooth_fullgrad": SmoothFullGrad,
    "random": RandomSaliency,
    # Captum's own classes where their defaults are the method: |grad| (abs=True), grad * x, guided backprop.
    "input_gradient": captum.attr.Saliency,
    "input_x_gradient": captum.attr.InputXGradient,
    "guided_backprop": captum.attr.GuidedBackprop,
    "integrated_gradients": IntegratedGradients,
    "smoothgrad": SmoothGrad,
    "smoothgrad_sq": SmoothGradSquared,
    "vargrad": VarGrad,
    "gradcam": GradCam,
    "gradcam_plus_plus": GradCamPlusPlus,
    "sobel": Sobel,
    "oracle": Oracle,
}


def create(name: str, model: nn.Module, reduce: str = "abs_sum", **params) -> PixelSaliency:
    """The saliency method `name` for `model` (which must already be in eval mode), with per-pixel maps on the
    model's device."""
    if name not in METHODS:
        raise ValueError(f"unknown saliency method {name!r}; available: {', '.join(sorted(METHODS))}")
    device = next(model.parameters(), torch.empty(0)).device
    return PixelSaliency(METHODS[name](model, **params), device=device, reduce=reduce)


__all__ = [
    "METHODS",
    "REDUCTIONS",
    "FullGrad",
    "FullGradientTerms",
    "GradCam",
    "GradCamPlusPlus",
    "IntegratedGradients",
    "LayerGradCamPlusPlus",
    "NoisyGradients",
    "Oracle",
    "PixelSaliency",
    "RandomSaliency",
    "SimpleFullGrad",
    "SmoothFullGrad",
    "SmoothGrad",
    "SmoothGradSquared",
    "Sobel",
    "VarGrad",
    "create",
    "full_gradient_terms",
]
