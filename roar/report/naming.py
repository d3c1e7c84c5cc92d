"""How a job names itself to the experiment logger: its W&B group and run name, and a flat, readable
configuration.

Names say what ran: the task, dataset and model (Hydra's choices for those groups) and the methods.
`${sweep:name}` is a single run's `roar · digits · small_cnn · fullgrad, random`, or a multirun job's number
and overrides (`3: roar · digits · small_cnn · method=fullgrad,seed=1`). `${sweep:group}` gathers the runs
of one experiment: a single run's name, or a multirun's `roar · digits · small_cnn · sweep`, followed by the
run (or sweep) directory's name. That last part keeps two experiments with the same methods but other
settings (epochs, fractions) apart: W&B aggregates the runs of a group into one curve with a band, so a
group must never mix experiments. Every job of a sweep shares its group, and so does the `roar-report` run
over it (`sweep_group`).

`${unique_dir:PATH}` names the run and sweep directories (roar/conf/hydra/default.yaml): PATH, or PATH_1,
PATH_2, ... where PATH is taken, so that runs started in the same second never share a directory.

The resolvers are registered by roar/config/resolvers.py."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from roar.config import method_names


def experiment_name(choices: Mapping[str, str], *details: str) -> str:
    """`roar · digits · small_cnn · <details>`: the task, dataset and model chosen, then `details`."""
    return " · ".join([choices["task"], choices["dataset"], choices["model"], *details])


def run_name(choices: Mapping[str, str], methods: Iterable[str]) -> str:
    return experiment_name(choices, ", ".join(methods))


def sweep_group(choices: Mapping[str, str], sweep_dir: str) -> str:
    return f"{experiment_name(choices, 'sweep')} ({sweep_dir})"


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_and_group_name(key: str, _root_: DictConfig) -> str:
    """`${sweep:name}` or `${sweep:group}` of the configuration being composed."""
    hydra = HydraConfig.get()
    choices = hydra.runtime.choices
    multirun = hydra.mode == RunMode.MULTIRUN
    if key == "group":
        if multirun:
            return sweep_group(choices, Path(hydra.sweep.dir).name)
        return f"{run_name(choices, method_names(_root_))} ({Path(hydra.run.dir).name})"
    if key == "name":
        if multirun:
            return f"{hydra.job.num}: {experiment_name(choices, hydra.job.override_dirname)}"
        return run_name(choices, method_names(_root_))
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
