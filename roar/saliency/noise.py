"""SmoothGrad, SmoothGrad-squared and VarGrad: statistics of the input gradient over noisy copies of each
image (Smilkov et al., 2017; Adebayo et al., 2018; the three `nt_type`s of Captum's NoiseTunnel).

Captum's NoiseTunnel is not used as it is because it draws its noise from the global RNG (a fixed seed
would need the global state reseeded) and takes one absolute sigma for the whole batch. Here sigma is a
fraction (`noise_level`) of each image's own value range, as in SmoothGrad, and the noise comes from a
generator the method owns, seeded by `seed`: maps are reproducible and the global RNG is left alone.

Memory: the gradients of `samples_per_pass` noisy copies of the batch are computed per pass (Captum's
Saliency) and only their sum and sum of squares are kept, so peak memory stays near `samples_per_pass`
forward+backward passes of the batch, whatever `n_samples` is. The noise is drawn copy by copy, so
`samples_per_pass` changes speed and memory, never the result.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import captum.attr
import torch
from torch import nn


def _repeat_target(target, copies: int):
    """Captum's target (None, an int or one class per sample) for `copies` stacked copies of the batch."""
    if isinstance(target, torch.Tensor) and target.numel() > 1:
        return target.repeat(copies)
    return target


def per_image_sigma(inputs: torch.Tensor, level: float) -> torch.Tensor:
    """`level` times each image's value range (max - min), shaped to broadcast over the image."""
    spread = inputs.flatten(1).amax(1) - inputs.flatten(1).amin(1)
    return (level * spread).view(-1, *[1] * (inputs.ndim - 1))


class NoisyGradients(ABC):
    """Base: the mean and the mean square of the input gradient over `n_samples` noisy copies, combined
    by `combine` in each subclass."""

    def __init__(
        self,
        model: nn.Module,
        n_samples: int = 50,
        noise_level: float = 0.15,
        seed: int = 0,
        samples_per_pass: int = 1,
    ):
        if n_samples < 1 or samples_per_pass < 1:
            raise ValueError(
                f"n_samples and samples_per_pass must be >= 1, got {n_samples} and {samples_per_pass}"
            )
        if noise_level < 0:
            raise ValueError(f"noise_level must be >= 0, got {noise_level}")
        self.gradient = captum.attr.Saliency(model)
        self.n_samples = n_samples
        self.noise_level = noise_level
        self.samples_per_pass = samples_per_pass
        # One stream per method object, drawn on the CPU (as SmoothFullGrad's and random's): the same seed
        # gives the same maps on any device.
        self.generator = torch.Generator().manual_seed(seed)

    def _noisy_copies(self, inputs: torch.Tensor, sigma: torch.Tensor, copies: int) -> torch.Tensor:
        noise = [
            torch.randn(inputs.shape, generator=self.generator, dtype=inputs.dtype).to(inputs.device) * sigma
            for _ in range(copies)
        ]
        return (inputs.repeat(copies, *[1] * (inputs.ndim - 1)) + torch.cat(noise)).requires_grad_()

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        inputs = inputs.detach()
        sigma = per_image_sigma(inputs, self.noise_level)
        total = torch.zeros_like(inputs)
        total_sq = torch.zeros_like(inputs)
        for start in range(0, self.n_samples, self.samples_per_pass):
            copies = min(self.samples_per_pass, self.n_samples - start)
            noisy = self._noisy_copies(inputs, sigma, copies)
            gradients = self.gradient.attribute(noisy, target=_repeat_target(target, copies), abs=False)
            gradients = gradients.view(copies, *inputs.shape)
            total += gradients.sum(0)
            total_sq += gradients.square().sum(0)
        return self.combine(total / self.n_samples, total_sq / self.n_samples)

    @abstractmethod
    def combine(self, mean: torch.Tensor, mean_sq: torch.Tensor) -> torch.Tensor: ...


class SmoothGrad(NoisyGradients):
    """The mean gradient over the noisy copies."""

    def combine(self, mean, mean_sq):
        return mean


class SmoothGradSquared(NoisyGradients):
    """The mean squared gradient over the noisy copies."""

    def combine(self, mean, mean_sq):
        return mean_sq


class VarGrad(NoisyGradients):
    """The variance of the gradient over the noisy copies."""

    def combine(self, mean, mean_sq):
        return (mean_sq - mean.square()).clamp_min(0)
