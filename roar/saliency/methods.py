"""How a method config becomes an attribution: one path for roar's methods, Captum's and a user's own.

A method is a config `method.<name>` holding `_target_` and its parameters (and optionally `noise`, the
noisy copies of each image its attributions are combined over, `reduce`, how its channels become one value
per pixel, and `blur_sigma`, a Gaussian blur of its maps). The target is either

- a class built as `cls(model, **params)` with Captum's `attribute(inputs, target=...)` (every
  `captum.attr` attribution and every roar method), or
- a function called as `fn(model, inputs, targets, **params)` that returns the attributions.

roar's own methods are such configs in `roar/conf/method/`; nothing lists them in code.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from torch import nn

from roar.conf import CONFIG_DIR
from roar.errors import first_line
from roar.saliency.base import PixelSaliency
from roar.saliency.noise import NoiseEnsemble

METHOD_DIR = CONFIG_DIR / "method"
# The keys of a method config that are not parameters of its target but say what becomes of its
# attributions: the noise ensemble they are computed in (NoiseEnsemble), how channels are combined, and the
# blur of the maps (PixelSaliency).
MAP_OPTIONS = ("noise", "reduce", "blur_sigma")


class FunctionAttribution:
    """A function `fn(model, inputs, targets, **params) -> attributions` behind Captum's interface."""

    def __init__(self, fn: Callable, model: nn.Module, **params):
        # Unknown or missing parameters fail here, when the method is built, not on the first batch.
        inspect.signature(fn).bind(model, None, None, **params)
        self.fn, self.model, self.params = fn, model, params

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        return self.fn(self.model, inputs, target, **self.params)


def resolve_target(path: str):
    """The class or function a `_target_` names; ValueError (one line) if it cannot be imported."""
    try:
        target = get_object(path)
    except Exception as error:  # Hydra wraps ImportError, AttributeError, ... in its own messages
        raise ValueError(f"_target_ {path!r} cannot be imported: {first_line(error)}") from None
    if not callable(target):
        raise ValueError(f"_target_ {path!r} is neither a class nor a function")
    return target


def available() -> list[str]:
    """The method names roar ships (roar/conf/method/<name>.yaml holding a `_target_`; presets list
    methods)."""
    return sorted(path.stem for path in METHOD_DIR.glob("*.yaml") if _is_method_file(path))


def _is_method_file(path: Path) -> bool:
    node = OmegaConf.load(path).get(path.stem)
    return isinstance(node, DictConfig) and "_target_" in node


def named_config(name: str) -> dict:
    """The parameters roar ships for the method `name` (roar/conf/method/<name>.yaml), with the run's `seed`
    at its default (0) where a parameter refers to it."""
    path = METHOD_DIR / f"{name}.yaml"
    if not path.is_file() or not _is_method_file(path):
        raise ValueError(f"unknown saliency method {name!r}; available: {', '.join(available())}")
    # roar/conf/config.yaml's seed: the only run-level value a packaged method refers to.
    root = OmegaConf.merge({"seed": 0}, OmegaConf.load(path))
    return OmegaConf.to_container(root[name], resolve=True)


def split_config(config: Mapping) -> tuple[str, dict, dict]:
    """(target path, parameters, the MAP_OPTIONS it sets) of a method config."""
    config = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else dict(config)
    if "_target_" not in config:
        raise ValueError(
            "no _target_: a method config names its class or function, e.g. _target_: mypkg.MyMethod"
        )
    path = config.pop("_target_")
    return path, config, {key: config.pop(key) for key in MAP_OPTIONS if key in config}


def build(target, model: nn.Module, params: dict):
    """The attribution of `target` (a class, or a function) for `model` with `params`."""
    if inspect.isclass(target):
        return target(model, **params)
    return FunctionAttribution(target, model, **params)


def check_params(config: Mapping) -> None:
    """Check a method config before any model exists: its target imports and takes these parameters.

    roar's own classes are built on a stand-in model, as their constructors check values (a baseline that
    does not exist, n_samples=0) without touching it; another class may need the real model, so only its
    signature is checked here and it is built first in the check on one batch (roar.stages.checks).
    """
    path, params, map_options = split_config(config)
    if "reduce" in map_options:
        PixelSaliency.check_reduce(map_options["reduce"])
    if "blur_sigma" in map_options:
        PixelSaliency.check_blur_sigma(map_options["blur_sigma"])
    target = resolve_target(path)
    built = None
    if inspect.isclass(target) and path.startswith("roar."):
        built = target(nn.Identity(), **params)
    elif inspect.isclass(target):
        inspect.signature(target).bind(nn.Identity(), **params)
    else:
        inspect.signature(target).bind(nn.Identity(), None, None, **params)
    if map_options.get("noise") is not None:
        try:
            NoiseEnsemble(built, nn.Identity(), **map_options["noise"])
        except (TypeError, ValueError) as error:
            raise type(error)(f"noise: {error}") from None


def source_hash(path: str) -> str | None:
    """SHA-256 (20 hex digits) of the source file of the module that defines the target `path`, so that a
    cache key changes when the method's code does; None for a target without a source file."""
    module = sys.modules.get(resolve_target(path).__module__)
    source = getattr(module, "__file__", None)
    if source is None or not Path(source).is_file():
        return None
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()[:20]


def create(
    method,
    model: nn.Module,
    reduce: str | None = None,
    blur_sigma: float | None = None,
    noise: dict | None = None,
    **params,
) -> PixelSaliency:
    """A method for `model` (already in eval mode), with per-pixel maps on the model's device.

    `method` is a name roar ships (`"fullgrad"`: its roar/conf/method/ parameters, overridden by `params`), a
    config with `_target_` (a dict or DictConfig, as `cfg.method.<name>`), a class `cls(model, **params)`,
    a function `fn(model, inputs, targets, **params)`, or an attribution already built (an object with
    `attribute(inputs, target=...)`; then no `params`). `reduce` (default: the config's, else abs_sum) names
    how channels become one value per pixel (roar.saliency.REDUCTIONS); `blur_sigma` (default: the config's,
    else 0, none) blurs the maps; `noise` (default: the config's, else none), the keyword arguments of a
    NoiseEnsemble such as `{"type": "smoothgrad", "n_samples": 25, "noise_level": 0.15, "seed": 0}`, averages
    the method over noisy copies of each image.
    """
    configured = {}
    if isinstance(method, str):
        method = named_config(method)
    if isinstance(method, Mapping):
        path, configured_params, configured = split_config(method)
        target, params = resolve_target(path), {**configured_params, **params}
    else:
        target = method
    if hasattr(target, "attribute") and not inspect.isclass(target):
        if params:
            raise TypeError(f"an attribution already built takes no parameters; got {sorted(params)}")
        attribution = target
    else:
        attribution = build(target, model, params)
    noise = configured.get("noise") if noise is None else noise
    if noise is not None:
        attribution = NoiseEnsemble(attribution, model, **noise)
    device = next(model.parameters(), torch.empty(0)).device
    reduce = reduce or configured.get("reduce", "abs_sum")
    blur_sigma = configured.get("blur_sigma", 0.0) if blur_sigma is None else blur_sigma
    return PixelSaliency(attribution, device=device, reduce=reduce, blur_sigma=blur_sigma)
