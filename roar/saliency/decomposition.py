"""The full-gradient decomposition of a class logit, for any network of units joined by linear glue.

Linearise every unit u (a module call, taken with all its tensor inputs z) at the point where it runs:

    u(z) = J_u(z) z + b_u,    b_u = u(z) - J_u(z) z    (its *implicit bias*)

The chain rule then gives, exactly, for a network whose glue between units (additions, concatenation,
reshapes, slicing, pooling) is linear:

    f(x) = sum(grad_x f * x) + sum over unit calls u of sum(grad_{out_u} f * b_u)

Conv/Linear/eval-mode batch-norm layers are the special case b_u = their (effective) bias, a vector along
the channel dimension; ReLU, max-pooling and the other positively homogeneous modules have b_u = 0 and are
not units at all. Every other leaf module is a unit whose b_u is computed by one forward-mode product
(`torch.func.jvp` with the inputs as tangents); modules that multiply activations (squeeze-excitation,
attention) are units taken whole. Parameters that a forward() applies outside any unit (a ViT's class
token and positional embedding, a ConvNeXt layer scale) give one more unit per function call that first
mixes them with activations: its bias is that call with the activations set to zero.

The gradients with respect to every unit output come from tensor hooks registered during the forward
pass, so one backward pass yields all of them, each paired with the call that produced it (by identity,
not by a position in `model.modules()`). A tensor hook sees the gradient of the tensor as it was when the
hook was registered, which keeps the terms exact under in-place operations that follow. Implicit biases
are computed when the gradient arrives, from the inputs the call kept (autograd keeps most of them anyway),
so they cost no memory until then.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.modules.batchnorm import _BatchNorm
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten
from torchvision.models.swin_transformer import ShiftedWindowAttention
from torchvision.ops import StochasticDepth
from torchvision.ops.misc import Permute, SqueezeExcitation

from roar.saliency.hooks import forward_hooks

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
BIASED_MODULES = (*CONVOLUTIONS, nn.Linear, *BATCH_NORMS)
# Leaf modules with m(z) = J_m(z) z: piecewise linear and positively homogeneous, so no bias to account for.
PIECEWISE_LINEAR_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, StochasticDepth,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d, nn.PixelShuffle, nn.PixelUnshuffle,
    nn.Upsample, nn.ChannelShuffle, Permute,
)  # fmt: skip
# Modules that multiply activations by functions of activations: taken as one unit with all their inputs
# (their internals are not linear glue). ShiftedWindowAttentionV2 is a subclass.
WHOLE_UNITS = (SqueezeExcitation, nn.MultiheadAttention, ShiftedWindowAttention)


def timm_whole_units() -> tuple[type[nn.Module], ...]:
    """timm's modules that multiply activations (squeeze-excitation and other channel gates, attention,
    gated MLPs), or none while timm is not loaded: a model built from them has loaded it, and importing it
    here would add a second to every run that does not use it. Each is in a model of
    docs/fullgrad-implicit-biases.md's list. The Swin block is taken whole rather than its WindowAttention,
    which runs on windows: its terms would not be per image."""
    if "timm" not in sys.modules:
        return ()
    from timm import layers
    from timm.models._efficientnet_blocks import SqueezeExcite
    from timm.models.cait import ClassAttn, TalkingHeadAttn
    from timm.models.eva import EvaAttention
    from timm.models.swin_transformer import SwinTransformerBlock
    from timm.models.vision_transformer import ParallelScalingBlock

    return (
        SqueezeExcite, layers.SEModule, layers.EffectiveSEModule, layers.EcaModule, layers.GlobalContext,
        layers.SelectiveKernel, layers.SplitAttn, layers.Attention, layers.MultiQueryAttention2d,
        layers.GluMlp, EvaAttention, TalkingHeadAttn, ClassAttn, ParallelScalingBlock, SwinTransformerBlock,
    )  # fmt: skip


class CompletenessError(ValueError):
    """The decomposition does not add up to the logit: some forward() is not linear between units."""


# A unit: a module class, or a module's name in `model.named_modules()`.
UnitSpec = type[nn.Module] | str


@dataclass(frozen=True)
class LayerCall:
    """One call of a unit during a forward pass: the `index`-th call of the module (or use of the
    parameter) `name`, its `output`-th tensor output. Hashable and equal by those three.

    `bias_dim` is the dimension of a per-channel bias vector (1 for conv/BN, -1 for Linear) or None when
    the bias is shaped like the output (implicit biases, parameters). `order` numbers the calls in
    forward order."""

    name: str
    index: int
    output: int = 0
    bias_dim: int | None = field(default=None, compare=False)
    order: int = field(default=0, compare=False)

    def shaped(self, bias: torch.Tensor, ndim: int) -> torch.Tensor:
        """The bias, broadcastable against the call's output of `ndim` dimensions."""
        return bias.view(-1, *[1] * (ndim - 2)) if self.bias_dim == 1 else bias


# Called once per unit call, during the backward pass, with the gradient of the call's output and its bias
# (a 1-D tensor along `call.bias_dim`, or a tensor shaped like the output).
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


@dataclass
class Units:
    """Where a model's bias terms come from."""

    biased: dict[nn.Module, str]  # conv/linear/batch-norm layers: b = their (effective) bias
    implicit: dict[nn.Module, str]  # other leaf modules and whole units: b = m(z) - J_m(z) z
    parameters: dict[int, str]  # id -> name of the parameters no unit owns, applied in some forward()
    containers: dict[nn.Module, str]  # the modules in between: their forward() must be linear glue


def find_units(model: nn.Module, whole: Sequence[UnitSpec] = ()) -> Units:
    """The units of `model`: WHOLE_UNITS, timm's and `whole` (classes or module names) taken whole, then
    every biased layer, then every other leaf module that is not piecewise linear; parameters of the
    modules in between are applied by their forward() outside any unit. A biased layer with submodules
    (timm's BatchNormAct2d: batch-norm, then its activation) is taken whole: its bias is not at its output."""
    classes = (*WHOLE_UNITS, *timm_whole_units(), *(spec for spec in whole if isinstance(spec, type)))
    names = {spec for spec in whole if isinstance(spec, str)}
    units = Units({}, {}, {}, {})
    seen: set[nn.Module] = set()

    def visit(name: str, module: nn.Module) -> None:
        if module in seen:
            return
        seen.add(module)
        children = list(module.named_children())
        if isinstance(module, classes) or name in names or (isinstance(module, BIASED_MODULES) and children):
            units.implicit[module] = name
        elif isinstance(module, BIASED_MODULES):
            units.biased[module] = name
        elif not children:
            if not isinstance(module, PIECEWISE_LINEAR_MODULES):
                units.implicit[module] = name
        else:
            units.containers[module] = name
            prefix = f"{name}." if name else ""
            for parameter_name, parameter in module.named_parameters(recurse=False):
                units.parameters[id(parameter)] = prefix + parameter_name
            for child_name, child in children:
                visit(prefix + child_name, child)

    visit("", model)
    return units


def tensor_outputs(output) -> list[torch.Tensor]:
    """The tensors a module returns: itself, or those in a returned tuple or list (attention's)."""
    if isinstance(output, torch.Tensor):
        return [output]
    return [o for o in output if isinstance(o, torch.Tensor)] if isinstance(output, (tuple, list)) else []


@dataclass
class LinearisationPoint:
    """The inputs of one unit call, kept until its implicit bias is needed (the gradient of its output
    arrives in the backward pass). Tensor inputs that require a gradient are the point z; the others
    (masks, constants) stay fixed. `pending` counts the outputs whose bias is still to come: after the
    last, the inputs are let go (autograd frees them after the unit's backward step; holding them longer
    would raise the backward pass's peak memory)."""

    module: nn.Module
    name: str
    leaves: list
    spec: object
    moving: list[int]
    versions: list[int]
    pending: int = 0

    @classmethod
    def of(cls, module: nn.Module, name: str, args: tuple, kwargs: dict) -> LinearisationPoint:
        leaves, spec = tree_flatten((args, kwargs))
        moving = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor) and leaf.requires_grad]
        return cls(module, name, leaves, spec, moving, [leaves[i]._version for i in moving])

    def implicit_bias(self, output: int) -> torch.Tensor:
        """b = m(z) - J_m(z) z for the `output`-th tensor output: one forward-mode product with z as the
        tangent. Runs the module's forward() again, without hooks; the math attention kernel because the
        fused ones have no forward-mode derivative."""
        if any(self.leaves[i]._version != v for i, v in zip(self.moving, self.versions)):
            raise RuntimeError(
                f"FullGrad: an input of {type(self.module).__name__} ({self.name}) was modified in place "
                f"after the call; its implicit bias needs the input as it was"
            )
        point = tuple(self.leaves[i].detach() for i in self.moving)

        def call(*z: torch.Tensor) -> torch.Tensor:
            leaves = list(self.leaves)
            for i, value in zip(self.moving, z):
                leaves[i] = value
            args, kwargs = tree_unflatten(leaves, self.spec)
            return tensor_outputs(self.module.forward(*args, **kwargs))[output]

        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            value, linear_part = torch.func.jvp(call, point, point)
        self.pending -= 1
        if not self.pending:
            self.leaves = []
        return value - linear_part


class ParameterUses(TorchFunctionMode):
    """During a forward pass, turns each torch function call that mixes the model's free parameters (or
    tensors computed from them alone) with activations into a unit: its bias is the call with the
    activations set to zero, exact for the affine mixes a decomposable network makes (x + positional
    embedding, cat([class token, x]), layer_scale * x, whose bias is 0).

    `record(name, output, bias)` gets each such call; name is the parameter's (names joined by '+' when a
    call mixes several)."""

    def __init__(self, parameters: dict[int, str], record: Callable[[str, torch.Tensor, torch.Tensor], None]):
        super().__init__()
        # Free parameters and the constants computed from them, by id, with the parameter names they carry.
        # The tensors are held so that no id is reused during the pass.
        self.constants: dict[int, tuple[torch.Tensor | None, str]] = {
            i: (None, n) for i, n in parameters.items()
        }
        self.record = record

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        tensors = [leaf for leaf in tree_flatten((args, kwargs))[0] if isinstance(leaf, torch.Tensor)]
        carried = [self.constants[id(t)][1] for t in tensors if id(t) in self.constants]
        if not carried or not isinstance(output, torch.Tensor) or not output.is_floating_point():
            return output
        name = "+".join(dict.fromkeys(carried))
        if len(carried) == len(tensors):  # parameters alone: a constant, a unit where it meets activations
            self.constants[id(output)] = (output, name)
            return output

        def zero_activation(leaf):
            is_activation = isinstance(leaf, torch.Tensor) and id(leaf) not in self.constants
            return torch.zeros_like(leaf) if is_activation else leaf

        with torch.no_grad():
            bias = func(*tree_map(zero_activation, args), **tree_map(zero_activation, kwargs))
        self.record(name, output, bias.expand_as(output))
        return output


@contextmanager
def term_hooks(model: nn.Module, on_term: TermHandler, units: Sequence[UnitSpec] = ()) -> Iterator[Callable]:
    """Forward hooks on every unit that register a gradient hook on each call's output; yields `traced`,
    which runs a forward pass (`traced(fn, *args)`) with the free parameters' uses recorded as units.

    Implicit units with an `inplace` flag run out of place meanwhile: their input is their linearisation
    point. The flags, like every hook, are restored when the context exits, also on an exception."""
    found = find_units(model, units)
    calls: dict[str, int] = {}

    def new_call(name: str, bias_dim: int | None, output: int = 0, index: int | None = None) -> LayerCall:
        if index is None:
            index = calls.get(name, 0)
            calls[name] = index + 1
        return LayerCall(name, index, output, bias_dim, order=sum(calls.values()))

    biases: dict[nn.Module, torch.Tensor | None] = {}

    def biased_hook(module, inputs, output):
        if module not in biases:
            biases[module] = effective_bias(module)
        bias = biases[module]
        if bias is None or not isinstance(output, torch.Tensor) or not output.requires_grad:
            return
        call = new_call(found.biased[module], -1 if isinstance(module, nn.Linear) else 1)
        output.register_hook(lambda grad: on_term(call, grad, bias))

    def implicit_hook(module, args, kwargs, output):
        name = found.implicit[module]
        point = LinearisationPoint.of(module, name, args, kwargs)
        index = None
        for position, out in enumerate(tensor_outputs(output)):
            if out.requires_grad:
                call = new_call(name, None, position, index)
                index, point.pending = call.index, point.pending + 1
                out.register_hook(
                    lambda grad, call=call: on_term(call, grad, point.implicit_bias(call.output))
                )

    def record_parameter_use(name: str, output: torch.Tensor, bias: torch.Tensor) -> None:
        call = new_call(name, None)
        output.register_hook(lambda grad: on_term(call, grad, bias))

    def traced(fn: Callable, *args):
        if not found.parameters:
            return fn(*args)
        with ParameterUses(found.parameters, record_parameter_use):
            return fn(*args)

    out_of_place = [m for m in found.implicit if getattr(m, "inplace", False) is True]
    with (
        forward_hooks(found.biased, biased_hook),
        forward_hooks(found.implicit, implicit_hook, with_kwargs=True),
    ):
        try:
            for module in out_of_place:
                module.inplace = False
            yield traced
        finally:
            for module in out_of_place:
                module.inplace = True


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


def named(model: nn.Module, predicate) -> list[str]:
    return [f"{type(m).__name__} ({name or 'model'})" for name, m in model.named_modules() if predicate(m)]


def check_eval_mode(model: nn.Module) -> None:
    """A batch-norm in train mode normalises with batch statistics (no per-sample bias exists) and would
    overwrite its running statistics: refuse before running anything."""
    training = named(model, lambda m: isinstance(m, _BatchNorm) and m.training)
    if training:
        raise ValueError(f"FullGrad needs batch-norm in eval mode (call model.eval()); in train mode: "
                         f"{', '.join(training)}")  # fmt: skip


def decompose(
    model: nn.Module,
    forward: Callable[..., torch.Tensor],
    inputs: Sequence[torch.Tensor],
    on_term: TermHandler,
    units: Sequence[UnitSpec] = (),
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """One forward pass `forward(*inputs)` -> f (N,) through `model`'s units and one backward pass; every
    unit term goes to `on_term`. Returns (gradients of f with respect to the inputs, f)."""
    inputs = tuple(x.detach().requires_grad_(True) for x in inputs)
    with torch.enable_grad(), term_hooks(model, on_term, units) as traced:
        f = traced(forward, *inputs)
        gradients = torch.autograd.grad(f.sum(), inputs)
    return gradients, f.detach()


def full_gradients(model: nn.Module, inputs: torch.Tensor, target, on_term: TermHandler, units=()):
    """One forward and one backward pass of the target logits; every bias term goes to `on_term`.

    Returns (gradient of f with respect to the inputs, f per sample). Parameters' `.grad` and
    `requires_grad` are untouched: the backward asks for the input gradient only.
    """
    check_eval_mode(model)

    def per_image(call: LayerCall, grad: torch.Tensor, bias: torch.Tensor) -> None:
        if len(grad) != len(inputs):
            raise CompletenessError(
                f"FullGrad: the output of {call.name} has {len(grad)} rows for {len(inputs)} images, its "
                "terms are not per image (a unit run on windows or patches of the images): take a module "
                "around it whole (FullGrad(model, units=[...]))"
            )
        on_term(call, grad, bias)

    def selected_logits(x: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        return logits.gather(1, resolve_target(target, logits).view(-1, 1)).squeeze(1)

    (input_grad,), selected = decompose(model, selected_logits, [inputs], per_image, units)
    return input_grad, selected


def bias_total(grad: torch.Tensor, bias: torch.Tensor, bias_dim: int | None) -> torch.Tensor:
    """sum(grad * bias) per sample; for a per-channel bias without materialising the product."""
    if bias_dim is None:
        return (grad * bias).flatten(1).sum(1)
    per_channel = grad.movedim(bias_dim, -1).reshape(len(grad), -1, bias.numel()).sum(1)
    return per_channel @ bias


@dataclass
class FullGradientTerms:
    """The full-gradient decomposition of the target logits of a batch: `output` (N,) equals `input`
    (grad_x f * x, shaped like the inputs) plus every term of `terms`, each summed per sample.

    `terms` holds (name, call_index, tensor) in forward order, one per unit call (per tensor output for
    a unit returning several): name is the module's in `model.named_modules()` or the parameter's in
    `model.named_parameters()`, tensor is grad_{out} f * b shaped like the call's output."""

    output: torch.Tensor
    input: torch.Tensor
    terms: list[tuple[str, int, torch.Tensor]]

    def shares(self) -> tuple[list[str], torch.Tensor]:
        """(names, (N, 1 + layers)): the share of f carried by the input term, then by each named layer
        (its calls summed), in forward order; each row sums to 1."""
        totals: dict[str, torch.Tensor] = {"input": self.input.flatten(1).sum(1)}
        for name, _, tensor in self.terms:
            term = tensor.flatten(1).sum(1)
            totals[name] = totals[name] + term if name in totals else term
        return list(totals), torch.stack(list(totals.values()), 1) / self.output.unsqueeze(1)


def full_gradient_terms(
    model: nn.Module, inputs: torch.Tensor, target=None, units: Sequence[UnitSpec] = ()
) -> FullGradientTerms:
    """Every term of the full-gradient decomposition of `model`'s target logits on `inputs` (target as in
    Captum: None for the predicted class, an int, or one class per sample); see FullGradientTerms. `units`
    names modules to take whole, as FullGrad's."""
    inputs = inputs.detach()
    calls: list[tuple[LayerCall, torch.Tensor]] = []

    def on_term(call: LayerCall, grad: torch.Tensor, bias: torch.Tensor) -> None:
        calls.append((call, grad * call.shaped(bias, grad.ndim)))

    input_grad, selected = full_gradients(model, inputs, target, on_term, units)
    calls.sort(key=lambda item: item[0].order)
    return FullGradientTerms(selected, input_grad * inputs, [(c.name, c.index, t) for c, t in calls])
