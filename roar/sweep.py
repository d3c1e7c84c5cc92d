"""How a job names itself to the experiment logger: its W&B group and run name, and a flat, readable
configuration.

`${sweep:group}` is the name of the multirun's sweep directory (every job of a sweep shares it, and so
does the `roar-report` run over it) or, for a single run, of its run directory; `${sweep:name}` is the
job's number and overrides (`3: method=fullgrad,seed=1`), or null for a single run (W&B then picks one).

`${unique_dir:PATH}` names the run and sweep directories (conf/hydra/default.yaml): PATH, or PATH_1, PATH_2,
... where PATH is taken, so that runs started in the same second never share a directory.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from roar.config import method_names


def _sweep(key: str) -> str | None:
    hydra = HydraConfig.get()
    multirun = hydra.mode == RunMode.MULTIRUN
    if key == "group":
        return Path(hydra.sweep.dir if multirun else hydra.run.dir).name
    if key == "name":
        return f"{hydra.job.num}: {hydra.job.override_dirname}" if multirun else None
    raise ValueError(f"${{sweep:{key}}}: unknown key; use group or name")


def unique_dir(path: str) -> str:
    """`path`, or the first of `path`_1, `path`_2, ... not yet taken, created on the spot: creating a
    directory is atomic, also on a shared filesystem, so two processes never get the same one."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    candidate, suffix = path, 0
    while True:
        try:
            Path(candidate).mkdir()
            return candidate
        except FileExistsError:
            suffix += 1
            candidate = f"{path}_{suffix}"


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("sweep", _sweep, replace=True)
    # Cached, as Hydra's `now`: every later look-up of the run directory gives the one created first (Hydra
    # carries the cache over to each job of a sweep).
    OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True, replace=True)


def flat_config(cfg: DictConfig) -> dict:
    """The resolved configuration as one level of dotted keys (`model.optimizer.lr`), plus `methods`, the
    selected method names: W&B's run table and filters read it directly."""
    flat = {"methods": ",".join(method_names(cfg))}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            if key == "_partial_":  # how to build the object, not what it is
                continue
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat
