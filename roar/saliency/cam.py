"""Grad-CAM (Selvaraju et al., 2017; Captum's LayerGradCam) and Grad-CAM++ (Chattopadhay et al., 2018),
computed at one layer and upsampled bilinearly to the input size.

The layer is named as in `model.named_modules()` (e.g. "6" in an nn.Sequential, "layer4" in a ResNet).
By default it is the last conv block, found for any model by this rule: among the modules whose output has
the input's rank and more than one spatial position, and no more positions than their input, the one whose
forward call finishes last, in a probe forward pass of one image. Later modules (global pooling, flatten,
the classifier) have no spatial extent, and a pooling that copies 1x1 features to 7x7 (torchvision VGG's
avgpool at small inputs) only spreads them;
a container finishes after its children, so the outermost module producing that output is chosen (a
ResNet's "layer4" rather than its last ReLU, which runs twice per block). For torchvision's VGG on 32x32
inputs that is "features.27", the ReLU of the last conv block (2x2), since its final max-pool leaves 1x1.
"""

from __future__ import annotations

import captum.attr
import torch
import torch.nn.functional as F
from captum._utils.gradient import compute_layer_gradients_and_eval
from torch import nn

from roar.saliency.hooks import probe


def spatial_modules(model: nn.Module, inputs: torch.Tensor) -> list[str]:
    """Names of the modules whose output has the inputs' rank, more than one spatial position and no more
    than their input, in the order their forward calls finish, from a gradient-free forward pass of the
    first input."""
    finished: list[str] = []

    names = {module: name for name, module in model.named_modules() if name}

    def record(module, args, output):
        if not (isinstance(output, torch.Tensor) and output.ndim == inputs.ndim):
            return
        positions = output[0, 0].numel()
        source = args[0] if args and isinstance(args[0], torch.Tensor) else None
        # A module that spreads fewer positions over more (torchvision VGG's avgpool copying 1x1
        # features to 7x7) adds no spatial information: a CAM there would be constant.
        spreads = source is not None and source.ndim == inputs.ndim and source[0, 0].numel() < positions
        if positions > 1 and not spreads:
            finished.append(names[module])

    probe(model, inputs[:1], names, record)
    return finished


class LayerGradCamPlusPlus(captum.attr.LayerGradCam):
    """Grad-CAM++ in Captum's layer-attribution form: channel weights sum_ij alpha_ij relu(dY/dA_ij), with
    alpha from the closed form for an exponential score (the gradient's square over twice its square plus
    the channel's summed activation times its cube), then relu(sum_k w_k A_k)."""

    def attribute(self, inputs, target=None, additional_forward_args=None, relu_attributions=True):
        (gradients,), (activations,) = compute_layer_gradients_and_eval(
            self.forward_func, self.layer, (inputs,), target, additional_forward_args
        )
        spatial = tuple(range(2, gradients.ndim))
        squared = gradients.square()
        denominator = 2 * squared + activations.sum(spatial, keepdim=True) * squared * gradients
        alpha = squared / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        weights = (alpha * F.relu(gradients)).sum(spatial, keepdim=True)
        cams = (weights * activations).sum(1, keepdim=True)
        return F.relu(cams) if relu_attributions else cams


class GradCam:
    """Grad-CAM at `layer` (default: the last conv block, see the module docstring), rectified, as an
    (N, 1, H, W) map at the input size."""

    layer_attribution = captum.attr.LayerGradCam

    def __init__(self, model: nn.Module, layer: str | None = None):
        self.model = model
        self.layer = layer

    def _layer(self, inputs: torch.Tensor) -> nn.Module:
        names = spatial_modules(self.model, inputs) if self.layer is None else [self.layer]
        if not names:
            raise ValueError(f"{type(self).__name__}: no module of the model has a spatial output")
        modules = dict(self.model.named_modules())
        if names[-1] not in modules:
            raise ValueError(
                f"{type(self).__name__}: the model has no module {names[-1]!r}; modules with a spatial "
                f"output: {', '.join(dict.fromkeys(spatial_modules(self.model, inputs)))}"
            )
        return modules[names[-1]]

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        attribution = self.layer_attribution(self.model, self._layer(inputs))
        cams = attribution.attribute(inputs, target=target, relu_attributions=True)
        return captum.attr.LayerAttribution.interpolate(cams, tuple(inputs.shape[2:]), "bilinear")


class GradCamPlusPlus(GradCam):
    """Grad-CAM++ at `layer`, as an (N, 1, H, W) map at the input size."""

    layer_attribution = LayerGradCamPlusPlus


class GuidedGradCam(GradCam):
    """Guided Grad-CAM (Selvaraju et al., 2017; Captum's GuidedGradCam): guided backpropagation times the
    Grad-CAM map of `layer` (the same default as gradcam) upsampled to the input, (N, C, H, W)."""

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        method = captum.attr.GuidedGradCam(self.model, self._layer(inputs))
        return method.attribute(inputs, target=target, interpolate_mode="bilinear")
