"""Reference-based attributions: DeepLift (Shrikumar et al., 2017), DeepLift-SHAP and GradientSHAP
(Lundberg & Lee, 2017), on Captum's DeepLift and Saliency.

References (baselines) are the training-set mean (zero in normalised inputs) plus Gaussian noise of
`noise_level` times the batch's value range, drawn from a generator the method owns and seeded by `seed`:
the maps are reproducible and the global RNG is left alone (Captum's GradientShap draws from it).

Memory: DeepLift-SHAP is the mean over references of DeepLift with each (what Captum's DeepLiftShap
computes on a batch expanded N x references times); here one reference per pass, so peak memory stays near
one DeepLift pass of the batch. GradientSHAP is computed one sample per pass in the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import captum.attr
import torch
from torch import nn

from roar.saliency.hooks import probe

# Activation modules DeepLift replaces by its own rule; Captum needs each call to have its own module.
NONLINEAR = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.MaxPool1d, nn.MaxPool2d,
             nn.MaxPool3d)  # fmt: skip


class _EachCallItsOwn(nn.Module):
    """A module called several times per forward pass, as one fresh copy per call, in call order."""

    def __init__(self, module: nn.Module, calls: int):
        super().__init__()
        self.copies = nn.ModuleList(copy.deepcopy(module) for _ in range(calls))
        for each in self.copies:
            if hasattr(each, "inplace"):
                each.inplace = False  # DeepLift reads the module's input after the call
        self.next = 0

    def forward(self, *args):
        module = self.copies[self.next % len(self.copies)]
        self.next += 1
        return module(*args)


def untangled(model: nn.Module, inputs: torch.Tensor) -> nn.Module:
    """A copy of `model` in which every activation module called more than once per forward pass (a
    torchvision ResNet block's `relu`) is one module per call, found by a probe forward of one image."""
    calls: dict[str, int] = {}
    names = {module: name for name, module in model.named_modules() if isinstance(module, NONLINEAR)}
    probe(
        model, inputs[:1], names, lambda m, args, out: calls.__setitem__(names[m], calls.get(names[m], 0) + 1)
    )
    copied = copy.deepcopy(model)
    for name, count in calls.items():
        if count > 1:
            parent_name, _, child = name.rpartition(".")
            parent = copied.get_submodule(parent_name)
            setattr(parent, child, _EachCallItsOwn(getattr(parent, child), count))
    return copied


@contextmanager
def max_unpool_allowed() -> Iterator[None]:
    """Captum's DeepLift rule for max-pooling calls max_unpool, which PyTorch flags as nondeterministic:
    under torch.use_deterministic_algorithms(True) (a deterministic Lightning fit sets it) it would raise.
    For the call, it warns instead; the previous setting is restored afterwards."""
    strict = (
        torch.are_deterministic_algorithms_enabled()
        and not torch.is_deterministic_algorithms_warn_only_enabled()
    )
    if strict:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        if strict:
            torch.use_deterministic_algorithms(True)


def _check_positive(**values) -> None:
    for key, value in values.items():
        if value < 1:
            raise ValueError(f"{key} must be at least 1, got {value}")


class DeepLift:
    """DeepLift's rescale rule against the all-zero reference (the training-set mean colour), on Captum's
    DeepLift, for any model: activation modules called more than once per pass are untangled first, on
    a copy (the model itself is not modified)."""

    def __init__(self, model: nn.Module, multiply_by_inputs: bool = True):
        self.model, self.multiply_by_inputs = model, multiply_by_inputs

    def _method(self, inputs: torch.Tensor) -> captum.attr.DeepLift:
        return captum.attr.DeepLift(untangled(self.model, inputs), self.multiply_by_inputs)

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        with max_unpool_allowed():
            return self._method(inputs).attribute(inputs, target=target)


class _References:
    def __init__(self, n_references: int, noise_level: float, seed: int):
        _check_positive(n_references=n_references)
        if noise_level < 0:
            raise ValueError(f"noise_level must be non-negative, got {noise_level}")
        self.n_references, self.noise_level = n_references, noise_level
        self.generator = torch.Generator().manual_seed(seed)

    def references(self, inputs: torch.Tensor) -> torch.Tensor:
        """(n_references, C, H, W): zero plus noise of noise_level x the batch's value range."""
        sigma = self.noise_level * (inputs.max() - inputs.min()).item()
        noise = torch.randn(self.n_references, *inputs.shape[1:], generator=self.generator)
        return (sigma * noise).to(inputs.device, inputs.dtype)


class DeepLiftShap(DeepLift, _References):
    """The mean of DeepLift over `n_references` noisy references (Captum's DeepLiftShap, one reference per
    pass)."""

    def __init__(self, model: nn.Module, n_references: int = 8, noise_level: float = 0.15, seed: int = 0):
        DeepLift.__init__(self, model)
        _References.__init__(self, n_references, noise_level, seed)

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        method, total = self._method(inputs), torch.zeros_like(inputs)
        for reference in self.references(inputs):
            with max_unpool_allowed():
                total += method.attribute(
                    inputs, baselines=reference.expand_as(inputs), target=target
                ).detach()
        return total / self.n_references


class GradientShap(_References):
    """GradientSHAP: the mean over `n_samples` of grad f(r + a (x - r)) * (x - r), r a random reference of
    `n_references`, a ~ U(0, 1), both drawn per image from the method's generator; one sample per pass."""

    def __init__(
        self, model: nn.Module, n_samples: int = 10, n_references: int = 8, noise_level: float = 0.15,
        seed: int = 0,
    ):  # fmt: skip
        _check_positive(n_samples=n_samples)
        super().__init__(n_references, noise_level, seed)
        self.saliency, self.n_samples = captum.attr.Saliency(model), n_samples

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        references, total = self.references(inputs), torch.zeros_like(inputs)
        shape = (len(inputs), *[1] * (inputs.ndim - 1))
        for _ in range(self.n_samples):
            chosen = references[torch.randint(self.n_references, (len(inputs),), generator=self.generator)]
            alpha = torch.rand(shape, generator=self.generator).to(inputs.device, inputs.dtype)
            points = (chosen + alpha * (inputs.detach() - chosen)).requires_grad_()
            gradients = self.saliency.attribute(points, target=target, abs=False).detach()
            total += gradients * (inputs.detach() - chosen)
        return total / self.n_samples
