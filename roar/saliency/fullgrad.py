"""FullGrad (Srinivas & Fleuret, NeurIPS 2019): the full-gradient decomposition and its saliency maps.

For a piecewise-linear network (conv, linear, eval-mode batch-norm, ReLU, pooling, residual additions)
a class logit decomposes exactly as

    f(x) = sum(grad_x f * x) + sum over layer calls l of sum(grad_{z_l} f * b_l)

where z_l is the output of one call of a layer with bias b_l (for batch-norm, the effective bias
beta - mean * gamma / sqrt(var + eps)). The gradients with respect to every z_l come from tensor hooks
registered during the forward pass, so one backward pass yields all of them, each paired with the module
that produced it (not with a position in `model.modules()`): modules that run twice, out of registration
order, or not at all decompose correctly. A tensor hook sees the gradient of the tensor as it was when the
hook was registered, which keeps the terms exact under `ReLU(inplace=True)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

BIASED_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Modules that are not piecewise linear (or not bias-affine), named when completeness fails.
NON_LINEAR_MODULES = (
    nn.ReLU6, nn.Hardtanh, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.SELU, nn.CELU, nn.Softplus,
    nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Softmax, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
)  # fmt: skip
EPS = 1e-6

# Called once per (module, call) with the gradient of the call's output and the layer's bias shaped to
# broadcast against it.
TermHandler = Callable[[nn.Module, torch.Tensor, torch.Tensor], None]


def effective_bias(module: nn.Module) -> torch.Tensor | None:
    """The bias a layer adds to its output, or None for a layer that adds none."""
    if isinstance(module, _BatchNorm):
        if module.running_mean is None:  # batch statistics: not an affine map of the input
            return None
        gamma = module.weight if module.weight is not None else torch.ones_like(module.running_var)
        beta = module.bias if module.bias is not None else torch.zeros_like(module.running_mean)
        return beta - module.running_mean * gamma / torch.sqrt(module.running_var + module.eps)
    return module.bias


def _broadcast(bias: torch.Tensor, module: nn.Module, output: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Linear):  # bias over the last dimension
        return bias
    return bias.view(1, -1, *([1] * (output.ndim - 2)))  # bias over channels (dimension 1)


def resolve_target(target, logits: torch.Tensor) -> torch.Tensor:
    """None -> predicted class; an int -> that class for every sample; a tensor -> one class per sample."""
    if target is None:
        return logits.argmax(dim=1)
    if isinstance(target, int):
        return torch.full((len(logits),), target, dtype=torch.long, device=logits.device)
    target = torch.as_tensor(target, device=logits.device).long().reshape(-1)
    return target.expand(len(logits)) if target.numel() == 1 else target


@contextmanager
def _bias_gradient_hooks(model: nn.Module, on_term: TermHandler) -> Iterator[None]:
    def forward_hook(module, inputs, output):
        bias = effective_bias(module)
        if bias is None or not isinstance(output, torch.Tensor) or not output.requires_grad:
            return
        shaped = _broadcast(bias.detach(), module, output)
        output.register_hook(lambda grad: on_term(module, grad, shaped))

    handles = [
        m.register_forward_hook(forward_hook) for m in model.modules() if isinstance(m, BIASED_MODULES)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def full_gradients(model: nn.Module, inputs: torch.Tensor, target, on_term: TermHandler):
    """One forward and one backward pass of the target logits; every bias term goes to `on_term`.

    Returns (gradient of f with respect to the inputs, f per sample). Parameters' `.grad` and
    `requires_grad` are untouched: the backward asks for the input gradient only.
    """
    inputs = inputs.detach().requires_grad_(True)
    with torch.enable_grad(), _bias_gradient_hooks(model, on_term):
        logits = model(inputs)
        target = resolve_target(target, logits)
        selected = logits.gather(1, target.view(-1, 1)).squeeze(1)
        (input_grad,) = torch.autograd.grad(selected.sum(), inputs)
    return input_grad, selected.detach()


def rescaled_channel_sum(term: torch.Tensor, rescale: str) -> torch.Tensor:
    """psi(term) summed over channels, keeping a channel axis: (N, C, *S) -> (N, 1, *S).

    psi = |.| then, per sample, minus the minimum, divided by (maximum + 1e-6): over the whole tensor
    ("layer", as the FullGrad authors' code) or channel by channel ("channel"). The rescale is affine per
    tensor (or channel), so summing channels first and then upsampling gives the same map at a fraction
    of the cost.
    """
    magnitude = term.abs()
    dims = tuple(range(1, term.ndim)) if rescale == "layer" else tuple(range(2, term.ndim))
    low = magnitude.amin(dim=dims, keepdim=True)
    high = magnitude.amax(dim=dims, keepdim=True)
    if rescale == "layer":
        channels = term.shape[1]
        return (magnitude.sum(1, keepdim=True) - channels * low) / (high - low + EPS)
    return ((magnitude - low) / (high - low + EPS)).sum(1, keepdim=True)


def upsample(maps: torch.Tensor, size) -> torch.Tensor:
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(maps, size=size, mode=mode, align_corners=True)


class FullGrad:
    """FullGrad saliency: psi(grad_x f * x) + sum over conv/BN calls of Up(psi(grad_z f * b)), summed
    over channels.

    `attribute(x, target)` returns (N, 1, *spatial) maps on x's device. `target` is None (the predicted
    class), an int, or an (N,) tensor of classes. The model must be in eval mode.
    """

    RESCALES = ("layer", "channel")

    def __init__(self, model: nn.Module, rescale: str = "layer"):
        if rescale not in self.RESCALES:
            raise ValueError(f"rescale must be one of {self.RESCALES}, got {rescale!r}")
        self.model = model
        self.rescale = rescale

    def _layer_term(self, grad: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return grad * bias

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        spatial = inputs.shape[2:]
        maps = torch.zeros(len(inputs), 1, *spatial, dtype=inputs.dtype, device=inputs.device)

        def add_layer(module, grad, bias):
            if grad.ndim == inputs.ndim:  # conv/BN outputs with spatial extent; linear terms don't map
                maps.add_(upsample(rescaled_channel_sum(self._layer_term(grad, bias), self.rescale), spatial))

        input_grad, _ = full_gradients(self.model, inputs, target, add_layer)
        maps.add_(rescaled_channel_sum(input_grad * inputs, self.rescale))
        return maps

    def completeness_terms(self, inputs: torch.Tensor, target=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(f per sample, sum of all decomposition terms per sample): equal for a piecewise-linear model."""
        total = torch.zeros(len(inputs), dtype=inputs.dtype, device=inputs.device)

        def add_term(module, grad, bias):
            total.add_((grad * bias).flatten(1).sum(1))

        input_grad, selected = full_gradients(self.model, inputs, target, add_term)
        return selected, total + (input_grad * inputs.detach()).flatten(1).sum(1)

    def completeness_residual(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        """|f_c(x) - sum of all terms| per sample."""
        selected, total = self.completeness_terms(inputs, target)
        return (selected - total).abs()

    def check_completeness(self, inputs: torch.Tensor, target=None, rtol: float = 1e-4) -> torch.Tensor:
        """Raise ValueError naming the likely culprits when the relative residual exceeds `rtol`."""
        selected, total = self.completeness_terms(inputs, target)
        relative = (selected - total).abs() / selected.abs().clamp_min(EPS)
        if relative.max() <= rtol:
            return relative
        culprits = sorted(
            {type(m).__name__ for m in self.model.modules() if isinstance(m, NON_LINEAR_MODULES)}
            | {f"{type(m).__name__} in train mode" for m in self.model.modules()
               if isinstance(m, _BatchNorm) and (m.training or m.running_mean is None)}
        )  # fmt: skip
        blame = f"; modules that break it: {', '.join(culprits)}" if culprits else ""
        raise ValueError(
            f"FullGrad completeness fails: relative residual {relative.max().item():.3g} > {rtol:g}{blame}"
        )


class SimpleFullGrad(FullGrad):
    """FullGrad with the bias-gradients used as they are, not multiplied by the bias."""

    def _layer_term(self, grad: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return grad
