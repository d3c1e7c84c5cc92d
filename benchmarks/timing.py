"""Interleaved timing: on a machine shared with other jobs, alternate the variants (A, B, A, B, ...) and
compare medians, so that load from elsewhere hits every variant alike."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch


def interleaved(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median of the seconds each variant reports (each times its own steady-state part) over `rounds`
    alternating runs."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            times[name].append(run())
    return {name: statistics.median(values) for name, values in times.items()}


def synchronize() -> None:
    """Wait for queued GPU work, so that wall time covers it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def config(*overrides: str):
    """The composed roar configuration (roar/conf/), without running anything."""
    from hydra import compose, initialize_config_dir

    from roar.conf import CONFIG_DIR
    from roar.config.resolvers import register_resolvers

    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=["paths.root_dir=.", "paths.output_dir=.", *overrides])


NO_CUDA = "skipped: no CUDA device"
# The stage cache the benchmarks' datasets are stored in: a temporary folder that lives as long as the
# process (each benchmark decodes its images once).
_CACHE = None


def prepared(cfg):
    """`cfg`'s datamodule with its splits in place (in memory), from a store in a temporary cache."""
    global _CACHE
    import tempfile

    from hydra.utils import instantiate

    from roar.runtime.cache import StageCache

    if _CACHE is None:
        _CACHE = tempfile.TemporaryDirectory(prefix="roar-bench-")
    datamodule = instantiate(cfg.dataset.datamodule)
    datamodule.prepare(StageCache(_CACHE.name), {}, "memory")
    return datamodule
