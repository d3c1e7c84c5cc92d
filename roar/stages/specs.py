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

# Dataset values that decide where the data is read from and how fast, never what a model sees: left out
# of every key, so that a run in memory and one on shards (or with other worker counts) share a cache.
READING = ("storage", "workers", "datamodule.read_workers", "datamodule.on_device")


def _plain(node) -> object:
    return OmegaConf.to_container(node, resolve=True)


def dataset_spec(cfg: DictConfig) -> dict:
    """The dataset's configuration, less READING."""
    spec = _plain(cfg.dataset)
    for key in READING:
        parent, _, leaf = key.rpartition(".")
        node = spec.get(parent, {}) if parent else spec
        if isinstance(node, dict):
            node.pop(leaf, None)
    return spec


def cpu_threads(trainer_cfg: DictConfig) -> dict:
    """`{"cpu_threads": n}` where a stage computes on the CPU, else nothing. The intra-op thread count
    decides how convolutions and matrix products split their sums, so another count rounds differently;
    over a training those last bits grow into different weights, maps and accuracies (docs/threads.md)."""
    return {"cpu_threads": torch.get_num_threads()} if device_of(trainer_cfg).type == "cpu" else {}


def training_spec(cfg: DictConfig, seed: int, data: dict | None) -> dict:
    """What determines a trained model: dataset, model and optimiser, trainer, seed, the removal applied to
    the data (None for the unmodified data) and, on the CPU, the thread count."""
    return {
        "dataset": dataset_spec(cfg),
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
    if "fine_tune_of" in data:  # task=fidelity: the base model fine-tuned on randomly removed pixels
        removal = data["random_removal"]
        what = f"fine-tuned, up to {100 * removal['max_fraction']:.3g}% removed at random"
        return {"name": f"{what}, seed {seed}", "seed": seed, "fill": removal["fill"]}
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


# Targets whose code is versioned by a release (roar's by roar.runtime.cache.FORMAT_VERSION, Captum's by
# its own): their source is not hashed into the keys.
RELEASED = ("roar.", "captum.")


def saliency_spec(cfg: DictConfig, method: str) -> dict:
    """What determines a method's maps (and removal codes): the base model, the method's target and
    parameters, how its maps are ranked and, on the CPU, the thread count. A target of the user's own code
    adds the hash of its module's source, so that editing the method recomputes its maps and cells instead
    of reusing stale ones."""
    params = _plain(cfg.method[method])
    target = params.pop("_target_")
    # 0, 0.0 or no blur_sigma at all: the same unblurred maps, one key.
    params["blur_sigma"] = float(params.get("blur_sigma") or 0.0)
    spec = {
        "base": spec_key(training_spec(cfg, cfg.seed, None)),
        "method": method,
        "target": target,
        "params": params,
        "reduce": method_reduction(cfg, method),
        **cpu_threads(cfg.trainer),
    }
    if not target.startswith(RELEASED) and (source := saliency.source_hash(target)) is not None:
        spec["source"] = source
    # A seeded method, or one in a noise ensemble, draws noise batch by batch: the batching shapes its maps.
    if "seed" in params or params.get("noise") is not None:
        spec["batch_size"] = cfg.roar.saliency_batch_size
        # Its noise is one stream per shard of a split (roar.stages.saliency.shard_seed), not one per method.
        spec["noise_streams"] = "per shard"
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
