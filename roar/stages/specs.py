"""The cache keys of the stages: what determines each artifact (roar/runtime/cache.py hashes these specs).

A trained model is determined by the dataset, model, trainer, seed and the removal applied to its data; a
method's maps by the base model, the method's parameters and how its maps are ranked; a modified dataset by
the maps, the fraction, the mode and the fill. On the CPU the thread count is part of every key
(`cpu_threads`)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from roar import saliency
from roar.removal import ranking_reduction
from roar.runtime.cache import spec_key
from roar.stages.training import device_of


def _plain(node) -> object:
    return OmegaConf.to_container(node, resolve=True)


def cpu_threads(trainer_cfg: DictConfig) -> dict:
    """`{"cpu_threads": n}` where a stage computes on the CPU, else nothing. The intra-op thread count
    decides how convolutions and matrix products split their sums, so another count rounds differently;
    over a training those last bits grow into different weights, maps and accuracies (docs/threads.md)."""
    return {"cpu_threads": torch.get_num_threads()} if device_of(trainer_cfg).type == "cpu" else {}


def training_spec(cfg: DictConfig, seed: int, data: dict | None) -> dict:
    """What determines a trained model: dataset, model and optimiser, trainer, seed, the removal applied to
    the data (None for the unmodified data) and, on the CPU, the thread count."""
    return {
        "dataset": _plain(cfg.dataset),
        "model": _plain(cfg.model),
        "trainer": _plain(cfg.trainer),
        "seed": seed,
        "data": data,
        **cpu_threads(cfg.trainer),
    }


def training_about(seed: int, data: dict | None) -> dict:
    """How stages.csv and the progress lines name a training: a readable name, then its method, fraction,
    seed and fill (blank where they do not apply: the unmodified data has no method)."""
    if data is None:
        return {"name": f"unmodified, seed {seed}", "seed": seed}
    kept = "kept" if data["mode"] == "kar" else "removed"
    what = f"{data['method']} {100 * data['fraction']:.3g}% {kept}"
    if "input" in data:  # the leakage task trains on the removal masks alone, not on filled images
        what += f" ({data['input']} only)"
    about = {
        "method": data["method"],
        "fraction": data["fraction"],
        "seed": seed,
        "fill": data.get("fill", ""),
    }
    return {"name": f"{what}, seed {seed}", **about}


def saliency_spec(cfg: DictConfig, method: str) -> dict:
    params = _plain(cfg.method[method])
    target = params.pop("_target_")
    if not params.get("blur_sigma"):  # unblurred maps keep the keys they had before maps could be blurred
        params.pop("blur_sigma", None)
    spec = {
        "base": spec_key(training_spec(cfg, cfg.seed, None)),
        "method": method,
        "params": params,
        "reduce": method_reduction(cfg, method),
        **cpu_threads(cfg.trainer),
    }
    # A user's method (a name roar does not ship, or a shipped name pointed at another target) adds its
    # target and the hash of its module's source, so that editing the method recomputes its maps and cells
    # instead of reusing stale ones; the methods roar ships keep the keys they had before methods named
    # their targets (roar's changes are versioned by roar.runtime.cache.FORMAT_VERSION, Captum's by its
    # release).
    if method not in saliency.available() or saliency.named_config(method)["_target_"] != target:
        spec["target"] = target
        if (source := saliency.source_hash(target)) is not None:
            spec["source"] = source
    # A seeded method, or one in a noise ensemble, draws noise batch by batch: the batching shapes its maps.
    if "seed" in params or params.get("noise") is not None:
        spec["batch_size"] = cfg.roar.saliency_batch_size
    return spec


def method_reduction(cfg: DictConfig, method: str) -> str:
    return ranking_reduction(cfg.roar.rank_by, cfg.roar.signed, cfg.method[method].get("reduce", "abs_sum"))


def mask_spec(cfg: DictConfig, method: str, fraction: float) -> dict:
    """What determines the removal masks: the saliency maps (ranked as roar.rank_by/signed say), the
    fraction and the mode."""
    return {"method": method, "saliency": spec_key(saliency_spec(cfg, method)),
            "fraction": fraction, "mode": cfg.roar.mode}  # fmt: skip


def removal_spec(cfg: DictConfig, method: str, fraction: float) -> dict:
    """What determines a modified dataset: the masks and how the removed pixels are filled."""
    return {**mask_spec(cfg, method, fraction), "fill": cfg.roar.fill}
