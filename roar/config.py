"""Checks on a composed configuration, run before any compute: one clear line per mistake."""

from __future__ import annotations

from numbers import Integral, Real
from pathlib import Path

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from roar import saliency
from roar.removal import FILLS, MODES, RANK_BY


class ConfigError(ValueError):
    """A configuration value that cannot work; its message is one line naming the key."""


def method_names(cfg: DictConfig) -> list[str]:
    """The saliency methods selected with `method=...` (each method's config sits under its own name)."""
    return list(cfg.method.keys()) if cfg.get("method") else []


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _missing_keys(node: DictConfig | ListConfig, path: str = ""):
    """Keys left at `???`, without resolving interpolations (which would fail on them first)."""
    for key in node.keys() if isinstance(node, DictConfig) else range(len(node)):
        full = f"{path}.{key}" if path else str(key)
        if OmegaConf.is_missing(node, key):
            yield full
        elif not OmegaConf.is_interpolation(node, key) and isinstance(node[key], (DictConfig, ListConfig)):
            yield from _missing_keys(node[key], full)


def validate(cfg: DictConfig) -> None:
    for key in _missing_keys(cfg):
        raise ConfigError(f"{key}: required (???); give it on the command line, e.g. {key}=...")
    methods = method_names(cfg)
    _check(bool(methods), "method: select at least one saliency method, e.g. method=[fullgrad,random]")
    for name in methods:
        _check(
            name in saliency.METHODS,
            f"method: unknown saliency method {name!r}; available: {', '.join(sorted(saliency.METHODS))}",
        )
        # Constructing a method checks its parameters (names, choices, ranges); no model is needed for that.
        try:
            saliency.create(name, nn.Identity(), **cfg.method[name])
        except (TypeError, ValueError) as error:
            raise ConfigError(f"method.{name}: {error}") from None

    _check_fractions(cfg.roar.fractions, "roar.fractions", "[0, 1)", lambda f: 0 <= f < 1)
    _check_evaluation(cfg, methods)

    _check(
        isinstance(cfg.seeds, ListConfig) and len(cfg.seeds) > 0,
        "seeds: give a non-empty list, e.g. seeds=[0,1]",
    )
    seeds = [cfg.seed, *cfg.seeds]
    for seed in seeds:
        _check(isinstance(seed, Integral) and seed >= 0, f"seed: {seed!r} is not a non-negative integer")

    accelerator = cfg.trainer.get("accelerator", "cpu")
    _check(
        accelerator not in ("gpu", "cuda") or torch.cuda.is_available(),
        f"trainer.accelerator: {accelerator}, but no CUDA device is visible; use trainer=cpu",
    )

    _check_explain(cfg.explain)

    epochs = cfg.trainer.get("max_epochs")
    _check(
        isinstance(epochs, Integral) and epochs >= 1,
        f"trainer.max_epochs: {epochs!r} must be a positive integer",
    )


def _check_fractions(fractions, key: str, interval: str, inside) -> None:
    _check(isinstance(fractions, ListConfig) and len(fractions) > 0, f"{key}: give a non-empty list")
    for fraction in fractions:
        _check(
            isinstance(fraction, Real) and not isinstance(fraction, bool) and inside(fraction),
            f"{key}: {fraction!r} is outside {interval}",
        )


# explain.target: which class each gallery map explains.
EXPLAIN_TARGETS = ("label", "predicted")


def _check_explain(options: DictConfig) -> None:
    n = options.num_images
    _check(
        isinstance(n, Integral) and not isinstance(n, bool) and n >= 1,
        f"explain.num_images: {n!r} must be a positive integer",
    )
    _check(
        options.target in EXPLAIN_TARGETS,
        f"explain.target: {options.target!r} is not one of {', '.join(EXPLAIN_TARGETS)}",
    )


def _check_evaluation(cfg: DictConfig, methods: list[str]) -> None:
    """How pixels are ranked, removed and filled (roar.*, and a task's own fractions and fill)."""
    for key, choices in (("rank_by", RANK_BY), ("mode", MODES), ("fill", FILLS)):
        value = cfg.roar.get(key)
        _check(value in choices, f"roar.{key}: {value!r} is not one of {', '.join(choices)}")
    for key in ("signed", "proceed_at_chance"):
        _check(isinstance(cfg.roar.get(key), bool), f"roar.{key}: {cfg.roar.get(key)!r} is not true/false")
    # Fraction 0 of ROAR is the unmodified data, always part of the grid: a grid needs one more.
    _check(
        cfg.roar.mode != "roar" or any(f > 0 for f in cfg.roar.fractions),
        "roar.fractions: give at least one fraction above 0 (0 is the unmodified data, always included)",
    )
    if "fractions" in cfg.task:
        _check_fractions(cfg.task.fractions, "task.fractions", "(0, 1)", lambda f: 0 < f < 1)
    if "fill" in cfg.task:
        _check(cfg.task.fill in FILLS, f"task.fill: {cfg.task.fill!r} is not one of {', '.join(FILLS)}")
    _check(
        "oracle" not in methods or bool(cfg.dataset.get("ground_truth")),
        f"method: oracle returns the true informative pixels and needs a dataset that knows them "
        f"(dataset=synthetic); dataset={cfg.dataset.get('name')} does not",
    )


def check_group_choices(overrides: list[str], config_dir: Path) -> None:
    """Reject `group=option` overrides naming an option that has no file under `config_dir/group/`.

    Hydra would reject them too, but with a page of text; this says it in one line, before anything runs.
    """
    if any(o.startswith("hydra.searchpath") for o in overrides):
        return  # options may come from elsewhere; Hydra checks them
    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")])
    except OverrideParseException as error:
        raise ConfigError(f"cannot parse the overrides: {str(error).splitlines()[0]}") from None
    parsed = [o for o in parsed if not o.is_delete()]
    for override in parsed:
        group = override.key_or_group
        # hydra/... groups also live in Hydra's and its plugins' packages; Hydra checks those itself.
        if override.package or group.startswith("hydra") or not (config_dir / group).is_dir():
            continue
        available = sorted(p.stem for p in (config_dir / group).glob("*.yaml"))
        for choice in _choices(override.value()):
            if choice is not None and str(choice) not in available:
                raise ConfigError(f"{group}: no option {choice!r}; available: {', '.join(available)}")


def _choices(value) -> list:
    if isinstance(value, (list, ListConfig)):
        return [c for v in value for c in _choices(v)]
    if hasattr(value, "list"):  # a sweep such as method=fullgrad,random
        return [c for v in value.list for c in _choices(v)]
    if isinstance(value, Glob):  # a sweep over options by pattern: Hydra expands it
        return []
    return [value]
