"""FullGrad (Srinivas & Fleuret, NeurIPS 2019): saliency maps from the full-gradient decomposition.

A class logit decomposes exactly as

    f(x) = sum(grad_x f * x) + sum over unit calls u of sum(grad_{out_u} f * b_u)

(roar/saliency/decomposition.py: conv/linear/batch-norm biases, implicit biases of every other module,
parameters applied outside modules). The maps are psi of each term, summed over channels, upsampled.

The maps are computed inside the gradient hooks, while the backward pass runs. For a per-channel bias
(conv, linear, batch-norm) without materialising grad * bias: psi's per-channel extrema of |grad * b| are
|b| times those of |grad|, and the channel sum of psi is one weighted contraction of |grad| over channels.
Maps of layers with the same spatial size are summed before a single upsampling (bilinear interpolation
is linear).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from roar.saliency.decomposition import (
    CompletenessError,
    LayerCall,
    UnitSpec,
    bias_total,
    check_eval_mode,
    decompose,
    find_units,
    full_gradients,
    named,
    tensor_outputs,
)
from roar.saliency.hooks import probe
from roar.saliency.noise import per_image_sigma

SUPPORTED = (
    "networks whose forward() functions only join modules linearly (additions, concatenation, reshapes, "
    "slicing, pooling, free parameters added or multiplied in); any module runs, with batch-norm in eval "
    "mode, and modules that multiply activations (squeeze-excitation, attention) taken whole as units"
)
EPS = 1e-6  # psi's denominator guard, as in the authors' code
RESCALES = ("layer", "channel")
GRID_ASPECT_TOLERANCE = 1.5  # how far a term's h:w may be from the image's H:W and still lie on it


def _on_grid(dims: Sequence[int], image: Sequence[int]) -> bool:
    """Whether feature dims (h, w, ...) can be a downsampled grid of the image's (H, W, ...): each no
    larger, and the same downsampling factor in every direction (within GRID_ASPECT_TOLERANCE)."""
    if len(dims) != len(image) or not all(0 < d <= size for d, size in zip(dims, image)):
        return False
    factors = [size / d for d, size in zip(dims, image)]
    return max(factors) / min(factors) <= GRID_ASPECT_TOLERANCE


def _token_grid(tokens: int, image: Sequence[int]) -> tuple[int, tuple[int, int]] | None:
    """(leading tokens to drop, (rows, columns)) when `tokens` are a ViT's patches in row-major order on
    a grid with exactly the image's aspect ratio, after none or one class token; None otherwise."""
    height, width = image
    for leading in (0, 1):
        patches = tokens - leading
        rows = max(1, round((patches * height / width) ** 0.5))
        # patches of p x p pixels tile the image exactly: the grid has its aspect ratio exactly
        if patches > 0 and patches % rows == 0 and rows * width == patches // rows * height:
            return leading, (rows, patches // rows)
    return None


def feature_maps(term: torch.Tensor, call: LayerCall, image: Sequence[int]) -> torch.Tensor | None:
    """The term as channel-first maps (N, C, *s) over the image, or None when it does not lie on it.

    Conv/batch-norm terms are channel-first by construction; Linear terms channel-last (a Linear acts on
    the last dimension: the pointwise convolutions of ConvNeXt and Swin). Other terms of the image's rank
    are channel-first when their dims after the channel lie on the image's grid, else channel-last when
    those before the channel do. On 2-D images, (N, L, D) terms are a ViT's tokens when L (or L - 1:
    the class token, left out of the map) fills a grid with the image's aspect ratio."""
    spatial = len(image)
    if call.bias_dim == 1:
        return term if term.ndim == spatial + 2 else None
    if term.ndim == spatial + 2:
        if call.bias_dim is None and _on_grid(term.shape[2:], image):
            return term
        if spatial >= 2 and _on_grid(term.shape[1:-1], image):
            return term.movedim(-1, 1)
        return None
    grid = _token_grid(term.shape[1], image) if term.ndim == 3 and spatial == 2 else None
    if grid is None:
        return None
    leading, (rows, columns) = grid
    return term[:, leading:].movedim(-1, 1).reshape(len(term), term.shape[-1], rows, columns)


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
    """FullGrad saliency: psi(grad_x f * x) + sum over unit calls lying on the image of
    Up(psi(grad_z f * b)), summed over channels (`feature_maps` says which terms lie on the image and how).

    `model` is any nn.Module with batch-norm in eval mode; the decomposition is exact for SUPPORTED
    networks (`check_completeness` tells). `rescale` chooses psi's rescaling: "layer" (the authors':
    min/max over the whole layer tensor, per sample) or "channel" (min/max per channel, per sample).
    `units` names further modules to take whole as units (classes, or names in `model.named_modules()`),
    beside WHOLE_UNITS: any module whose forward() multiplies activations.
    """

    def __init__(self, model: nn.Module, rescale: str = "layer", units: Sequence[UnitSpec] = ()):
        if not isinstance(model, nn.Module):
            raise TypeError(f"FullGrad needs an nn.Module (it hooks its layers), got {type(model).__name__}")
        if rescale not in RESCALES:
            raise ValueError(f"rescale must be one of {RESCALES}, got {rescale!r}")
        names = dict(model.named_modules())
        for unit in units:
            if not (isinstance(unit, type) and issubclass(unit, nn.Module)) and unit not in names:
                raise ValueError(f"units: {unit!r} is neither an nn.Module class nor a module of the model")
        super().__init__(model)
        self.rescale = rescale
        self.units = tuple(units)

    @property
    def model(self) -> nn.Module:
        return self.forward_func

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def has_convergence_delta(self) -> bool:
        return True

    def _channel_scale(self, bias: torch.Tensor) -> torch.Tensor | None:
        """|b| for a per-channel bias: FullGrad's layer term is grad * b."""
        return bias.abs()

    def _magnitude(self, grad: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """|grad * b| for a bias shaped like the output."""
        return (grad * bias).abs()

    def _layer_map(
        self, call: LayerCall, grad: torch.Tensor, bias: torch.Tensor, image
    ) -> torch.Tensor | None:
        """psi of the call's term summed over channels, (N, 1, *s), or None for a term not on the image."""
        if call.bias_dim is None:
            magnitude, channel_scale = self._magnitude(grad, bias), None
        else:
            magnitude, channel_scale = grad.abs(), self._channel_scale(bias)
        maps = feature_maps(magnitude, call, image)
        return None if maps is None else rescaled_channel_sum(maps, self.rescale, channel_scale)

    @log_usage()
    def attribute(self, inputs: torch.Tensor, target=None, return_convergence_delta: bool = False):
        """Maps (N, 1, *spatial) on the inputs' device for `target` (None: the predicted class; an int; an
        (N,) tensor). With `return_convergence_delta`, also the completeness delta f - sum of all terms
        (N,), from the same backward pass."""
        inputs = inputs.detach()  # the maps need no graph back to the caller's inputs
        layer_maps, totals = _MapSum(), torch.zeros(len(inputs), dtype=inputs.dtype, device=inputs.device)

        def on_term(call: LayerCall, grad: torch.Tensor, bias: torch.Tensor) -> None:
            layer_map = self._layer_map(call, grad, bias, inputs.shape[2:])
            if layer_map is not None:
                layer_maps.add(layer_map)
            if return_convergence_delta:
                totals.add_(bias_total(grad, bias, call.bias_dim))

        input_grad, selected = full_gradients(self.model, inputs, target, on_term, self.units)
        input_term = input_grad * inputs
        maps = layer_maps.upsampled(rescaled_channel_sum(input_term.abs(), self.rescale))
        if not return_convergence_delta:
            return maps
        return maps, selected - totals - input_term.flatten(1).sum(1)

    def decompose(self, inputs: torch.Tensor, target=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(f per sample, sum of all decomposition terms per sample): equal where the decomposition holds."""
        totals = torch.zeros(len(inputs), dtype=inputs.dtype, device=inputs.device)

        def on_term(call: LayerCall, grad: torch.Tensor, bias: torch.Tensor) -> None:
            totals.add_(bias_total(grad, bias, call.bias_dim))

        input_grad, selected = full_gradients(self.model, inputs, target, on_term, self.units)
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
        """The relative residuals |f - sum of terms| / |f| (N,); raises CompletenessError naming where the
        decomposition breaks when one exceeds `rtol`."""
        selected, total = self.decompose(inputs, target)
        relative = (selected - total).abs() / selected.abs().clamp_min(torch.finfo(selected.dtype).tiny)
        worst = int(relative.argmax())
        if relative[worst] <= rtol:
            return relative
        raise CompletenessError(
            f"FullGrad completeness fails: relative residual {relative[worst].item():.3g} > {rtol:g} "
            f"(sample {worst}); {self._where_it_breaks(inputs[worst : worst + 1], rtol)}. FullGrad is exact "
            f"for {SUPPORTED}."
        )

    def _where_it_breaks(self, sample: torch.Tensor, rtol: float) -> str:
        """Names the batch-norms with batch statistics that ran on `sample` or else the modules whose own
        forward() is not linear between units: those whose local decomposition fails while it holds for
        every module inside them."""
        batch_statistics = self._modules_that_ran(
            sample, lambda m: isinstance(m, _BatchNorm) and m.running_mean is None
        )
        if batch_statistics:
            return f"modules that break it: {', '.join(batch_statistics)} (batch statistics)"
        broken = [name for name, residual, scale in self._local_residuals(sample) if residual > rtol * scale]
        innermost = [
            name
            for name in broken
            if not any(other.startswith(f"{name}.") or (not name and other) for other in broken)
        ]
        modules = dict(self.model.named_modules())
        where = ", ".join(f"{type(modules[name]).__name__} ({name or 'model'})" for name in innermost)
        return (
            f"the forward() of {where} is not linear between units: look there for functions that are not "
            "(F.gelu, torch.sigmoid, x * y, ...), for tensors added that are not parameters, or take the "
            "module whole (FullGrad(model, units=[...]))"
        )

    def _local_residuals(self, sample: torch.Tensor) -> list[tuple[str, float, float]]:
        """(name, |residual|, |f| + sum of |terms|) of the local decomposition of the first call of every
        module between units (the model itself included), on one sample: f is its outputs' dot product
        with fixed random weights, its inputs are the call's tensor arguments."""
        containers = find_units(self.model, self.units).containers
        captured: dict[str, tuple[nn.Module, tuple, dict]] = {}

        def capture(module, args, kwargs):
            name = containers[module]
            if name not in captured:
                captured[name] = (module, *tree_map(_cloned, (args, kwargs)))

        probe(self.model, sample, containers, capture, pre=True, with_kwargs=True)
        generator = torch.Generator().manual_seed(0)
        return [
            (name, *_local_residual(self.model, module, args, kwargs, self.units, generator))
            for name, (module, args, kwargs) in captured.items()
        ]

    def _modules_that_ran(self, inputs: torch.Tensor, predicate) -> list[str]:
        """The leaf modules satisfying `predicate` that run on `inputs`, as 'Type (name)'."""
        ran: set[nn.Module] = set()
        leaves = [m for m in self.model.modules() if not list(m.children()) and predicate(m)]
        probe(self.model, inputs, leaves, lambda m, i, o: ran.add(m))
        return named(self.model, lambda m: m in ran)


def _local_residual(model, module, args, kwargs, units, generator) -> tuple[float, float]:
    """(|residual|, |f| + sum of |terms|) of the decomposition of one call of `module` inside `model`:
    f is its outputs' dot product with random weights, the call's floating-point tensor arguments are
    its inputs."""
    leaves, spec = tree_flatten((args, kwargs))
    moving = [
        i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor) and leaf.is_floating_point()
    ]
    if not moving:  # a call on shapes alone (a positional encoding built from scratch): a constant
        return 0.0, 0.0
    with torch.no_grad():
        outputs = tensor_outputs(module.forward(*args, **kwargs))
    weights = [torch.randn(o.shape, generator=generator, dtype=o.dtype).to(o.device) for o in outputs]

    def weighted_output(*z: torch.Tensor) -> torch.Tensor:
        filled = list(leaves)
        for i, value in zip(moving, z):
            filled[i] = value
        call_args, call_kwargs = tree_unflatten(filled, spec)
        outputs = tensor_outputs(module.forward(*call_args, **call_kwargs))
        return sum((o * w).sum() for o, w in zip(outputs, weights)).reshape(1)

    parts = []

    def on_term(call: LayerCall, grad: torch.Tensor, bias: torch.Tensor) -> None:
        parts.append(bias_total(grad, bias, call.bias_dim))

    gradients, f = decompose(model, weighted_output, [leaves[i] for i in moving], on_term, units)
    parts += [(g * leaves[i]).sum().reshape(1) for g, i in zip(gradients, moving)]
    residual = f.sum() - sum(p.sum() for p in parts)
    return float(residual.abs()), float(f.abs().sum() + sum(p.abs().sum() for p in parts))


def _cloned(leaf):
    """A copy of a tensor argument, safe from in-place changes the forward pass makes later."""
    return leaf.clone() if isinstance(leaf, torch.Tensor) else leaf


class SimpleFullGrad(FullGrad):
    """FullGrad with the bias-gradients grad_z f used as they are, not multiplied by the bias (the
    authors' SimpleFullGrad): same layers, same psi, same aggregation."""

    def _channel_scale(self, bias: torch.Tensor) -> None:
        return None

    def _magnitude(self, grad: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return grad.abs()


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
        units: Sequence[UnitSpec] = (),
    ):
        super().__init__(model, rescale=rescale, units=units)
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
        image = inputs.shape[2:]

        def on_term(call: LayerCall, grad: torch.Tensor, bias: torch.Tensor) -> None:
            if feature_maps(grad, call, image) is not None:
                term = grad * call.shaped(bias, grad.ndim)
                layer_terms[call] = layer_terms[call].add_(term) if call in layer_terms else term
            if return_convergence_delta:
                delta.sub_(bias_total(grad, bias, call.bias_dim))

        for _ in range(self.num_samples):
            noise = torch.randn(inputs.shape, generator=self.generator, dtype=inputs.dtype)
            noisy = inputs + noise.to(inputs.device) * noise_std
            input_grad, selected = full_gradients(self.model, noisy, target, on_term, self.units)
            noisy_term = input_grad * noisy
            input_term.add_(noisy_term.sum(1, keepdim=True))
            delta.add_(selected - noisy_term.flatten(1).sum(1))

        layer_maps = _MapSum()
        for call, term in layer_terms.items():
            layer_maps.add(rescaled_channel_sum(feature_maps(term.abs(), call, image), self.rescale))
        maps = layer_maps.upsampled(rescaled_channel_sum(input_term.abs(), self.rescale))
        return (maps, delta / self.num_samples) if return_convergence_delta else maps
