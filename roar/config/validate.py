"""Checks on a composed configuration, run before any compute: one clear line per mistake."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from roar.config.schema import schema_error
from roar.errors import ConfigError, first_line


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
    """Every value's type and range (roar/config/schema.py), then what the schema cannot see: which methods
    exist and take their parameters, and the values that only work together."""
    for key in _missing_keys(cfg):
        raise ConfigError(f"{key}: required (???); give it on the command line, e.g. {key}=...")
    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:  # e.g. an interpolation to a key that does not exist
        raise ConfigError(f"{error.full_key}: {first_line(error)}") from None
    dataset = values.get("dataset") or {}
    # None: to be read from data that is not there (an image folder that does not exist).
    if None in (dataset.get("num_classes", 0), dataset.get("channels", 0)):
        raise ConfigError(f"dataset: not found; {dataset.get('datamodule', {}).get('missing', 'no data')}")
    problem = schema_error(values)
    if problem is not None:
        raise ConfigError(problem)
    # A dataset whose files are not there (and are not to be downloaded) is refused now, before a run
    # directory, a logger or a GPU is asked for; torchvision's classes say the same, later.
    missing = dataset.get("datamodule", {}).get("missing")
    root = dataset.get("root")
    if missing and root and not dataset.get("download") and not Path(root).exists():
        raise ConfigError(f"dataset: Dataset not found or corrupted; {missing}")

    methods = method_names(cfg)
    _check(bool(methods), "method: select at least one saliency method, e.g. method=[fullgrad,random]")
    # Here, not at the top: the method registry loads every attribution library (Captum, zennit), which only
    # a configuration being checked needs, not whatever imports roar.config.
    from roar import saliency

    for name in methods:
        # Its target imports and takes its parameters; roar's own classes also check their values.
        try:
            saliency.check_params(cfg.method[name])
        except (TypeError, ValueError) as error:
            raise ConfigError(f"method.{name}: {error}") from None

    # Fraction 0 of ROAR is the unmodified data, always part of the grid: a grid needs one more.
    _check(
        cfg.roar.mode != "roar" or any(f > 0 for f in cfg.roar.fractions),
        "roar.fractions: give at least one fraction above 0 (0 is the unmodified data, always included)",
    )
    _check(
        "oracle" not in methods or bool(cfg.dataset.get("ground_truth")),
        f"method: oracle returns the true informative pixels and needs a dataset that knows them "
        f"(dataset=synthetic); dataset={cfg.dataset.name} does not",
    )
    accelerator = cfg.trainer.get("accelerator", "cpu")
    _check(
        accelerator not in ("gpu", "cuda") or torch.cuda.is_available(),
        f"trainer.accelerator: {accelerator}, but no CUDA device is visible; use trainer=cpu",
    )


def check_writable(cfg: DictConfig) -> None:
    """The run directory and the stage cache can be written: a read-only one is refused here rather than
    after the first training, when its result would have nowhere to go. A directory not made yet is
    judged by the closest one that exists, where it will be made; nothing is left behind."""
    for key in ("output_dir", "cache_dir"):
        directory = Path(cfg.paths[key]).absolute()
        existing = next(d for d in (directory, *directory.parents) if d.exists())
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as error:
            raise ConfigError(f"paths.{key}: cannot write to {directory}: {error.strerror}") from None


def check_group_choices(overrides: list[str], config_dir: Path) -> None:
    """Reject `group=option` overrides naming an option that has no file under `config_dir/group/`.

    Hydra would reject them too, but with a page of text; this says it in one line, before anything runs.
    """
    if any(o.startswith("hydra.searchpath") for o in overrides):
        return  # options may come from elsewhere; Hydra checks them
    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")])
    except OverrideParseException as error:
        raise ConfigError(f"cannot parse the overrides: {first_line(error)}") from None
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


def first_difference(a, b, prefix: str = "") -> str:
    """Where two nested configurations (plain dicts) first differ, as `key.path (a vs b)`: what a refusal to
    compare or merge runs names."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')} ({a!r} vs {b!r})"
