"""Perturbation attributions on Captum: occlusion (Zeiler & Fergus, 2014), feature ablation, Shapley value
sampling (Castro et al., 2009), LIME (Ribeiro et al., 2016) and KernelSHAP (Lundberg & Lee, 2017).

Each perturbs groups of pixels (features) and reads the change of the target logit. Occlusion slides a
square window; the others take a feature mask, chosen by `features`: `patch` (a grid of square patches)
or `superpixel` (SLIC-style clusters of position and colour, computed per image here: no extra
dependency). Sizes are fractions of the image side, so one config suits 8x8, 32x32 and 224x224 images:
`patch: 0.125` gives 8 x 8 = 64 features at any size.

Memory: Captum evaluates `perturbations_per_eval` perturbed copies of the batch per forward pass, so peak
memory is about that many forward passes of the batch; raising it trades memory for fewer passes and
never changes the result. LIME and KernelSHAP draw their samples from the global RNG inside Captum; the
method seeds it with `seed` on every call and restores it afterwards.
"""

from __future__ import annotations

import captum.attr
import torch
import torch.nn.functional as F
from captum._utils.models.linear_model import SkLearnRidge
from torch import nn

FEATURES = ("patch", "superpixel")


def side(fraction: float, size: int) -> int:
    """`fraction` of an image side of `size` pixels, in whole pixels (at least one)."""
    return max(1, round(fraction * size))


def patch_mask(inputs: torch.Tensor, patch: float) -> torch.Tensor:
    """(N, 1, H, W) feature ids: squares of `patch` x the shorter side, numbered row by row."""
    _, _, height, width = inputs.shape
    size = side(patch, min(height, width))
    rows = torch.arange(height, device=inputs.device) // size
    columns = torch.arange(width, device=inputs.device) // size
    ids = rows[:, None] * (columns.max() + 1) + columns[None, :]
    return ids.expand(len(inputs), 1, height, width).contiguous()


def superpixel_mask(inputs: torch.Tensor, segments: int, compactness: float = 0.5, iterations: int = 5):
    """(N, 1, H, W) feature ids, numbered 0.. per image: about `segments` clusters per image by k-means on
    (colour, position) from a regular grid of centres (SLIC's idea, without its local search window).
    `compactness` weighs position against colour (both scaled to unit range)."""
    n, channels, height, width = inputs.shape
    flat = inputs.detach().flatten(2).transpose(1, 2)  # (N, HW, C)
    span = (flat.amax(1, keepdim=True) - flat.amin(1, keepdim=True)).clamp_min(1e-6)
    colour = (flat - flat.amin(1, keepdim=True)) / span
    y, x = torch.meshgrid(
        torch.linspace(0, 1, height, device=inputs.device),
        torch.linspace(0, 1, width, device=inputs.device),
        indexing="ij",
    )
    position = torch.stack([y.flatten(), x.flatten()], 1).expand(n, -1, -1)
    points = torch.cat([colour, compactness * position], 2)  # (N, HW, C + 2)
    per_side = max(1, round(segments**0.5))
    grid = patch_mask(inputs[:1], 1 / per_side)[0, 0].flatten()  # initial assignment: a regular grid
    assignment = grid.expand(n, -1)
    for _ in range(iterations):
        one_hot = F.one_hot(assignment, int(grid.max()) + 1).to(points.dtype)  # (N, HW, K)
        centres = one_hot.transpose(1, 2) @ points / one_hot.sum(1).clamp_min(1)[..., None]
        assignment = torch.cdist(points, centres).argmin(2)
    # Number the clusters that kept pixels 0.. per image (Captum's masks need no gaps).
    ids = torch.stack([torch.unique(a, return_inverse=True)[1] for a in assignment])
    return ids.view(n, 1, height, width)


class _Perturbation:
    method = captum.attr.FeatureAblation

    def __init__(
        self, model: nn.Module, features: str = "patch", patch: float = 0.125, segments: int = 64,
        perturbations_per_eval: int = 16,
    ):  # fmt: skip
        if features not in FEATURES:
            raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")
        if not 0 < patch <= 1:
            raise ValueError(f"patch must be in (0, 1] (a fraction of the image side), got {patch}")
        if segments < 1 or perturbations_per_eval < 1:
            raise ValueError("segments and perturbations_per_eval must be at least 1")
        self.model, self.features, self.patch, self.segments = model, features, patch, segments
        self.perturbations_per_eval = perturbations_per_eval

    def feature_mask(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.features == "patch":
            return patch_mask(inputs, self.patch)
        return superpixel_mask(inputs, self.segments)

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        with torch.no_grad():
            return self.captum_method().attribute(
                inputs.detach(), target=target, feature_mask=self.feature_mask(inputs),
                perturbations_per_eval=self.perturbations_per_eval, **self.options(),
            )  # fmt: skip

    def captum_method(self):
        return self.method(self.model)

    def options(self) -> dict:
        return {}


class FeatureAblation(_Perturbation):
    """Each feature replaced by zero (the training-set mean colour), one at a time."""


class ShapleyValueSampling(_Perturbation):
    """Shapley values of the features, from `n_samples` random feature orders (seeded)."""

    method = captum.attr.ShapleyValueSampling

    def __init__(self, model: nn.Module, n_samples: int = 5, seed: int = 0, **options):
        super().__init__(model, **options)
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        self.n_samples, self.seed = n_samples, seed

    def options(self) -> dict:
        return {"n_samples": self.n_samples}

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        # Captum draws its samples from the global RNG: seed it for this call only.
        with torch.random.fork_rng(devices=[inputs.device] if inputs.is_cuda else []):
            torch.manual_seed(self.seed)
            return super().attribute(inputs, target)


class Lime(ShapleyValueSampling):
    """LIME: a ridge regression (`alpha`, as the LIME authors' package) fit per image on `n_samples` random
    subsets of the features, weighted by their closeness to the image. Captum's default, a Lasso with
    alpha 0.01, zeroes every weight where the logits move by less than that (an untrained model)."""

    method = captum.attr.Lime

    def __init__(self, model: nn.Module, n_samples: int = 200, alpha: float = 1.0, **options):
        super().__init__(model, n_samples=n_samples, **options)
        if alpha < 0:
            raise ValueError(f"alpha must be non-negative, got {alpha}")
        self.alpha = alpha

    def captum_method(self):
        return captum.attr.Lime(self.model, interpretable_model=SkLearnRidge(alpha=self.alpha))


class KernelShap(ShapleyValueSampling):
    """KernelSHAP: a linear regression with the Shapley kernel's weights on `n_samples` random subsets of
    the features, estimating their Shapley values."""

    method = captum.attr.KernelShap

    def __init__(self, model: nn.Module, n_samples: int = 200, **options):
        super().__init__(model, n_samples=n_samples, **options)


class Occlusion:
    """Occlusion: a square window of `window` x the shorter side, moved by `stride` x the side, set to zero
    (the training-set mean colour); each pixel gets the mean logit drop of the windows covering it."""

    def __init__(
        self, model: nn.Module, window: float = 0.125, stride: float = 0.125, perturbations_per_eval: int = 16
    ):
        if not (0 < window <= 1 and 0 < stride <= 1):
            raise ValueError(
                f"window and stride must be in (0, 1] (fractions of the side); got {window}, {stride}"
            )
        if perturbations_per_eval < 1:
            raise ValueError("perturbations_per_eval must be at least 1")
        self.model, self.window, self.stride = model, window, stride
        self.perturbations_per_eval = perturbations_per_eval

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        channels, height, width = inputs.shape[1:]
        size, step = side(self.window, min(height, width)), side(self.stride, min(height, width))
        with torch.no_grad():
            return captum.attr.Occlusion(self.model).attribute(
                inputs.detach(), target=target, sliding_window_shapes=(channels, size, size),
                strides=(channels, step, step), perturbations_per_eval=self.perturbations_per_eval,
            )  # fmt: skip
