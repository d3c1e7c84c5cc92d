"""FullGrad (Srinivas & Fleuret, NeurIPS 2019): the full-gradient decomposition and its saliency maps.

For a piecewise-linear network (conv, linear, eval-mode batch-norm, ReLU, pooling, residual additions)
a class logit decomposes exactly as

    f(x) = sum(grad_x f * x) + sum over layer calls l of sum(grad_{z_l} f * b_l)

where z_l is the output of one call of a layer with bias b_l (for batch-norm, the effective bias
beta - mean * gamma / sqrt(var + eps)). The gradients with respect to every z_l come from tensor hooks
registered during the forward pass, so one backward pass yields all of them, each paired with the module
call that produced it (not with a position in `model.modules()`): modules that run twice, out of
registration order, or not at all decompose correctly. A tensor hook sees the gradient of the tensor as it
was when the hook was registered, which keeps the terms exact under `ReLU(inplace=True)`.

The maps are computed inside the hooks, while the backward pass runs, without materialising
grad * bias: psi's per-channel extrema of |grad * b| are |b| times those of |grad|, and the channel sum
of psi is one weighted contraction of |grad| over channels. Maps of layers with the same spatial size
are summed before a single upsampling (bilinear interpolation is linear).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from roar.saliency.noise import per_image_sigma

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
BIASED_MODULES = (*CONVOLUTIONS, nn.Linear, *BATCH_NORMS)
# Leaf modules that keep a network piecewise linear without adding a bias. Any other leaf module that runs
# (ReLU6, Hardtanh, GELU, SiLU, LayerNorm, GroupNorm, a custom layer, ...) is named when completeness fails.
PIECEWISE_LINEAR_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d, nn.PixelShuffle, nn.PixelUnshuffle,
    nn.Upsample, nn.ChannelShuffle,
)  # fmt: skip
SUPPORTED = (
    "Conv1d/2d/3d, Linear and eval-mode BatchNorm1d/2d/3d layers joined by ReLU, LeakyReLU, pooling, "
    "flatten, dropout, padding, upsampling and residual additions"
)
EPS = 1e-6  # psi's denominator guard, as in the authors' code
RESCALES = ("layer", "channel")


class CompletenessError(ValueError):
    """The decomposition does not add up to the logit: the model is not piecewise linear with explicit
    biases."""


@dataclass(frozen=True)
class LayerCall:
    """One call of a biased module during a forward pass (the `index`-th call of `module`); hashable, by
    module identity and index."""

    module: nn.Module
    index: int

    @property
    def bias_dim(self) -> int:
        return -1 if isinstance(self.module, nn.Linear) else 1

    def is_spatial(self, output: torch.Tensor, inputs: torch.Tensor) -> bool:
        """Whether the term is a conv/BN feature map with the input's spatial dimensions (maps use only
        those; linear terms enter completeness alone)."""
        return not isinstance(self.module, nn.Linear) and output.ndim == inputs.ndim


# Called once per layer call, during the backward pass, with the gradient of the call's output and the
# layer's (effective) bias, a 1-D tensor along `call.bias_dim`.
TermHandler = Callable[[LayerCall, torch.Tensor, torch.Tensor], None]


def effective_bias(module: nn.Module) -> torch.Tensor | None:
    """The bias a layer adds to its output (detached), or None for a layer that adds none."""
    with torch.no_grad():
        if isinstance(module, _BatchNorm):
            if module.running_mean is None:  # batch statistics: not an affine map of each sample
                return None
            gamma = module.weight if module.weight is not None else torch.ones_like(module.running_var)
            beta = module.bias if module.bias is not None else torch.zeros_like(module.running_mean)
            return beta - module.running_mean * gamma / torch.sqrt(module.running_var + module.eps)
        return None if module.bias is None else module.bias.detach()


def resolve_target(target, logits: torch.Tensor) -> torch.Tensor:
    """Captum's targets for (N, K) logits: None -> the predicted class; an int (or a one-element tensor or
    list) -> that class for every sample; an (N,) tensor or list -> one class per sample."""
    if target is None:
        return logits.argmax(dim=1)
    target = torch.as_tensor(target, device=logits.device).long().reshape(-1)
    if target.numel() == 1:
        return target.expand(len(logits))
    if target.numel() != len(logits):
        raise ValueError(f"target has {target.numel()} classes for {len(logits)} samples")
    return target


def _named(model: nn.Module, predicate) -> list[str]:
    return [f"{type(m).__name__} ({name or 'model'})" for name, m in model.named_modules() if predicate(m)]


def breaks_completeness(module: nn.Module) -> bool:
    """A leaf module that is not known to keep the decomposition exact: a non-piecewise-linear one, or a
    batch-norm without running statistics (it normalises with batch statistics)."""
    if isinstance(module, _BatchNorm):
        return module.running_mean is None
    return not isinstance(module, (*BIASED_MODULES, *PIECEWISE_LINEAR_MODULES))


def check_eval_mode(model: nn.Module) -> None:
    """A batch-norm in train mode normalises with batch statistics (no per-sample bias exists) and would
    overwrite its running statistics: refuse before running anything."""
    training = _named(model, lambda m: isinstance(m, _BatchNorm) and m.training)
    if training:
        raise ValueError(f"FullGrad needs batch-norm in eval mode (call model.eval()); in train mode: "
                         f"{', '.join(training)}")  # fmt: skip


@contextmanager
def _term_hooks(model: nn.Module, on_term: TermHandler) -> Iterator[None]:
    """Forward hooks on every biased module that register a gradient hook on each call's output."""
    biases: dict[nn.Module, torch.Tensor | None] = {}
    calls: dict[nn.Module, int] = {}

    def forward_hook(module, inputs, output):
        if module not in biases:
            biases[module] = effective_bias(module)
        bias = biases[module]
        if bias is None or not isinstance(output, torch.Tensor) or not output.requires_grad:
            return
        call = LayerCall(module, calls.get(module, 0))
        calls[module] = call.index + 1
        output.register_hook(lambda grad: on_term(call, grad, bias))

    biased = [m for m in model.modules() if isinstance(m, BIASED_MODULES)]
    handles = [m.register_forward_hook(forward_hook) for m in biased]
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
    check_eval_mode(model)
    inputs = inputs.detach().requires_grad_(True)
    with torch.enable_grad(), _term_hooks(model, on_term):
        logits = model(inputs)
        target = resolve_target(target, logits)
        selected = logits.gather(1, target.view(-1, 1)).squeeze(1)
        (input_grad,) = torch.autograd.grad(selected.sum(), inputs)
    return input_grad, selected.detach()


def bias_total(grad: torch.Tensor, bias: torch.Tensor, bias_dim: int) -> torch.Tensor:
    """sum(grad * bias) per sample, without materialising the product."""
    per_channel = grad.movedim(bias_dim, -1).reshape(len(grad), -1, bias.numel()).sum(1)
    return per_channel @ bias


def rescaled_channel_sum(
    magnitude: torch.Tensor, rescale: str, channel_scale: torch.Tensor | None = None
) -> torch.Tensor:
    """psi(t) summed over channels, (N, C, *S) -> (N, 1, *S), for t with |t| = magnitude * channel_scale.

    psi = |.| then, per sample, minus the minimum, divided by (maximum + 1e-6) of what remains: over the
    whole tensor ("layer", the authors' code) or channel by channel ("channel"). Both are an affine map per
    channel, so the channel sum is one contraction of `magnitude` with per-sample channel weights;
    `channel_scale` (C,), non-negative, is folded into those weights instead of being multiplied in.
    """
    n, c = magnitude.shape[:2]
    flat = magnitude.reshape(n, c, -1)
    # (N, C): per-channel extrema (two reductions: CPU aminmax is an order of magnitude slower)
    low, high = flat.amin(2), flat.amax(2)
    if channel_scale is not None:
        low, high = low * channel_scale, high * channel_scale
    if rescale == "layer":
        low, high = low.amin(1, keepdim=True), high.amax(1, keepdim=True)
    span = high - low + EPS  # (N, 1) for "layer", (N, C) for "channel"
    weights = ((1.0 if channel_scale is None else channel_scale) / span).expand(n, c)
    offsets = (low / span).expand(n, c).sum(1)
    summed = torch.baddbmm(-offsets.view(n, 1, 1), weights.unsqueeze(1), flat)  # (N, 1, P)
    return summed.view(n, 1, *magnitude.shape[2:])


def upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """Bilinear (linear/trilinear in 1-D/3-D) upsampling with align_corners=True, as the authors."""
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(maps, size=size, mode=mode, align_corners=True)


class _MapSum:
    """Sums (N, 1, *s) layer maps per spatial size; upsamples each size once at the end."""

    def __init__(self):
        self.by_size: dict[tuple[int, ...], torch.Tensor] = {}

    def add(self, layer_map: torch.Tensor) -> None:
        size = tuple(layer_map.shape[2:])
        if size in self.by_size:
            self.by_size[size].add_(layer_map)
        else:
            self.by_size[size] = layer_map

    def upsampled(self, base: torch.Tensor) -> torch.Tensor:
        """`base` (N, 1, *S) plus every sum upsampled to S."""
        size = base.shape[2:]
        return sum((upsample(m, size) for m in self.by_size.values()), base)


class FullGrad(GradientAttribution):
    """FullGrad saliency: psi(grad_x f * x) + sum over conv/BN calls of Up(psi(grad_z f * b)), summed over
    channels.

    `model` is any nn.Module with batch-norm in eval mode; the decomposition is exact for SUPPORTED layers
    (`check_completeness` tells). `rescale` chooses psi's rescaling: "layer" (the authors': min/max over the
    whole layer tensor, per sample) or "channel" (min/max per channel, per sample).
    """

    def __init__(self, model: nn.Module, rescale: str = "layer"):
        if not isinstance(model, nn.Module):
            raise TypeError(f"FullGrad needs an nn.Module (it hooks its layers), got {type(model).__name__}")
        if rescale not in RESCALES:
            raise ValueError(f"rescale must be one of {RESCALES}, got {rescale!r}")
        super().__init__(model)
        self.rescale = rescale

    @property
    def model(self) -> nn.Module:
        return self.forward_func

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def has_convergence_delta(self) -> bool:
        return True

    def _channel_scale(self, bias: torch.Tensor) -> torch.Tensor | None:
        """|b|: FullGrad's layer term is grad * b."""
        return bias.abs()

    @log_usage()
    def attribute(self, inputs: torch.Tensor, target=None, return_convergence_delta: bool = False):
        """Maps (N, 1, *spatial) on the inputs' device for `target` (None: the predicted class; an int; an
        (N,) tensor). With `return_convergence_delta`, also the completeness delta f - sum of all terms
        (N,), from the same backward pass."""
        inputs = inputs.detach()  # the maps need no graph back to the caller's inputs
        layer_maps, totals = _MapSum(), torch.zeros(len(inputs), dtype=inputs.dtype, device=inputs.device)

        def on_term(call: LayerCall, grad: torch.Tensor, bias: torch.Tensor) -> None:
            if call.is_spatial(grad, inputs):
                layer_maps.add(rescaled_channel_sum(grad.abs(), self.rescale, self._channel_scale(bias)))
            if return_convergence_delta:
                totals.add_(bias_total(grad, bias, call.bias_dim))

        input_grad, selected = full_gradients(self.model, inputs, target, on_term)
        input_term = input_grad * inputs
        maps = layer_maps.upsampled(rescaled_channel_sum(input_term.abs(), self.rescale))
        if not return_convergence_delta:
            return maps
        return maps, selected - totals - input_term.flatten(1).sum(1)

    def decompose(self, inputs: torch.Tensor, target=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(f per sample, sum of all decomposition terms per sample): equal for a piecewise-linear model."""
        totals = torch.zeros(len(inputs), dtype=inputs.dtype, device=inputs.device)

        def on_term(call: LayerCall, grad: torch.Tensor, bias: torch.Tensor) -> None:
            totals.add_(bias_total(grad, bias, call.bias_dim))

        input_grad, selected = full_gradients(self.model, inputs, target, on_term)
        return selected, totals + (input_grad * inputs).flatten(1).sum(1)

    def compute_convergence_delta(self, attributions: torch.Tensor, inputs: torch.Tensor, target=None):
        """Captum's convergence delta: f(x) - sum of all decomposition terms, per sample.

        psi discards the terms' signs and scales, so the delta is recomputed from `inputs` (one forward
        and backward pass); `attributions` only fixes the batch size."""
        if len(attributions) != len(inputs):
            raise ValueError(f"{len(attributions)} attributions for {len(inputs)} inputs")
        selected, total = self.decompose(inputs, target)
        return selected - total

    def completeness_residual(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        """|f_c(x) - sum of all terms| per sample, (N,)."""
        selected, total = self.decompose(inputs, target)
        return (selected - total).abs()

    def check_completeness(self, inputs: torch.Tensor, target=None, rtol: float = 1e-4) -> torch.Tensor:
        """The relative residuals |f - sum of terms| / |f| (N,); raises CompletenessError naming the modules
        that break the decomposition when one exceeds `rtol`."""
        selected, total = self.decompose(inputs, target)
        relative = (selected - total).abs() / selected.abs().clamp_min(torch.finfo(selected.dtype).tiny)
        worst = int(relative.argmax())
        if relative[worst] <= rtol:
            return relative
        culprits = self._modules_that_ran(inputs, breaks_completeness)
        blame = (
            f"modules that break it: {', '.join(culprits)}"
            if culprits
            else "no module known to break it ran: look in forward() for functions that are not piecewise "
            "linear (F.gelu, torch.sigmoid, ...) or biases added outside Conv/Linear/BatchNorm modules"
        )
        raise CompletenessError(
            f"FullGrad completeness fails: relative residual {relative[worst].item():.3g} > {rtol:g} "
            f"(sample {worst}); {blame}. FullGrad is exact for {SUPPORTED}."
        )  # fmt: skip

    def _modules_that_ran(self, inputs: torch.Tensor, predicate) -> list[str]:
        """The leaf modules satisfying `predicate` that run on `inputs`, as 'Type (name)'."""
        ran: set[nn.Module] = set()
        leaves = [m for m in self.model.modules() if not list(m.children()) and predicate(m)]
        handles = [m.register_forward_hook(lambda m, i, o: ran.add(m)) for m in leaves]
        try:
            with torch.no_grad():
                self.model(inputs)
        finally:
            for handle in handles:
                handle.remove()
        return _named(self.model, lambda m: m in ran)


class SimpleFullGrad(FullGrad):
    """FullGrad with the bias-gradients grad_z f used as they are, not multiplied by the bias (the
    authors' SimpleFullGrad): same layers, same psi, same aggregation."""

    def _channel_scale(self, bias: torch.Tensor) -> None:
        return None


class SmoothFullGrad(FullGrad):
    """FullGrad's terms summed over `num_samples` noisy copies of the input, then psi (the authors'
    SmoothFullGrad).

    Noise is Gaussian with standard deviation `std_spread` * (max - min) of each sample, drawn from a
    generator seeded with `seed`. As in the authors' code, the input term grad_x f * (x + noise) is summed
    over channels before psi, the conv/BN terms grad_z f * b are summed per channel. Two deliberate
    differences, both equal to the authors' on one image: the noise scale is per sample (not over the whole
    batch), and target None means the class predicted for the clean input, explained on every noisy copy.
    """

    def __init__(
        self,
        model: nn.Module,
        num_samples: int = 25,
        std_spread: float = 0.15,
        rescale: str = "layer",
        seed: int = 0,
    ):
        super().__init__(model, rescale=rescale)
        if num_samples < 1 or std_spread < 0:
            raise ValueError(f"num_samples must be >= 1 and std_spread >= 0, got {num_samples}, {std_spread}")
        self.num_samples = num_samples
        self.std_spread = std_spread
        self.generator = torch.Generator().manual_seed(seed)

    @log_usage()
    def attribute(self, inputs: torch.Tensor, target=None, return_convergence_delta: bool = False):
        """Maps (N, 1, *spatial) on the inputs' device. With `return_convergence_delta`, also the mean over
        the noisy copies of f - sum of all terms, (N,)."""
        inputs = inputs.detach()  # the maps need no graph back to the caller's inputs
        if target is None:
            check_eval_mode(self.model)
            with torch.no_grad():
                target = self.model(inputs).argmax(dim=1)
        noise_std = per_image_sigma(inputs, self.std_spread)
        layer_terms: dict[LayerCall, torch.Tensor] = {}
        input_term = torch.zeros(len(inputs), 1, *inputs.shape[2:], dtype=inputs.dtype, device=inputs.device)
        delta = torch.zeros(len(inputs), dtype=inputs.dtype, device=inputs.device)

        def on_term(call: LayerCall, grad: torch.Tensor, bias: torch.Tensor) -> None:
            if call.is_spatial(grad, inputs):
                term = grad * bias.view(-1, *[1] * (grad.ndim - 2))
                layer_terms[call] = layer_terms[call].add_(term) if call in layer_terms else term
            if return_convergence_delta:
                delta.sub_(bias_total(grad, bias, call.bias_dim))

        for _ in range(self.num_samples):
            noise = torch.randn(inputs.shape, generator=self.generator, dtype=inputs.dtype)
            noisy = inputs + noise.to(inputs.device) * noise_std
            input_grad, selected = full_gradients(self.model, noisy, target, on_term)
            noisy_term = input_grad * noisy
            input_term.add_(noisy_term.sum(1, keepdim=True))
            delta.add_(selected - noisy_term.flatten(1).sum(1))

        layer_maps = _MapSum()
        for term in layer_terms.values():
            layer_maps.add(rescaled_channel_sum(term.abs(), self.rescale))
        maps = layer_maps.upsampled(rescaled_channel_sum(input_term.abs(), self.rescale))
        return (maps, delta / self.num_samples) if return_convergence_delta else maps
