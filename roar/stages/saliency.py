"""The saliency stage: a method's maps of every image of a split, on the base model, ranked on the device as
soon as they are computed and stored as one-byte removal codes (roar/removal/masks.py), shard by shard.

What a ROAR grid needs of a map is which fraction of its image's ranking each pixel falls in: one byte per
pixel, on the 1 % grid, instead of four for the float map, and no ranking per cell (each cell's mask is one
comparison per batch). Each shard of a split's codes is a cache artifact of its own, so jobs that need a
method's codes (a sweep over fractions, a SLURM array) compute its shards together and a killed job loses
at most one. Float maps are kept only where a task needs them (`map_stage`: the test images of
task=perturbation).

Shards cut a split at fixed positions (roar/data/arrays.py `shard_rows`) and each is computed in batches of
`roar.saliency_batch_size` from its start, whether the split is in memory or on disk: a seeded method's
noise (drawn batch by batch) is then the same either way.
"""

from __future__ import annotations

import logging
import zlib
from functools import cache as once

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from roar import saliency
from roar.data import TensorDataModule
from roar.data.arrays import Rows, ShardedArray, shard_bounds, shard_rows, write_npy
from roar.data.datamodule import SPLITS
from roar.removal import removal_codes
from roar.removal.keys import MASK32, mix32
from roar.runtime.cache import StageCache, Work, spec_key
from roar.runtime.console import outcome
from roar.stages.specs import method_reduction, saliency_spec
from roar.stages.training import device_of, load_classifier

log = logging.getLogger(__name__)

# What a shard of the saliency stage holds: removal codes (uint8), or the float maps themselves.
KINDS = {"codes": "uint8", "maps": "float32"}


def explain_rows(
    explainer: saliency.PixelSaliency,
    datamodule: TensorDataModule,
    split: str,
    start: int,
    stop: int,
    batch_size: int,
    codes_seed: int | None = None,
    progress=None,
) -> torch.Tensor:
    """The maps of images `start`..`stop` of `split` (batches of `batch_size` from `start`), for their
    labels, on the CPU; with `codes_seed`, their removal codes instead, ranked where the maps were
    computed, ties broken per image from (codes_seed, its source and id; roar/removal/keys.py)."""
    data = datamodule.splits[split]
    truth = datamodule.ground_truth[split] if datamodule.ground_truth else None
    out = []
    for first in range(start, stop, batch_size):
        positions = torch.arange(first, min(first + batch_size, stop))
        batch = datamodule.normalize(data.images[positions].to(explainer.device))
        known = truth[positions] if truth is not None else None
        maps = explainer.pixel_maps(batch, data.labels[positions], known)
        if codes_seed is not None:
            maps = removal_codes(maps, codes_seed, data.images.ids[positions], data.images.source)
        out.append(maps.cpu())
        if progress is not None:
            progress.update(len(positions))
    return torch.cat(out)


def shard_seed(seed: int, split: str, shard: int) -> int:
    """The seed a seeded method (random, SmoothGrad, a noise ensemble) draws one shard's noise from: a hash
    of its configured seed, the split and the shard. Its generator is drawn from in sequence, so a stream
    carried from shard to shard would make a shard's maps depend on which job computed which shards before
    it; a stream per shard makes them depend on nothing outside it."""
    mixed = mix32(torch.tensor([(seed ^ zlib.crc32(f"{split}/{shard}".encode())) & MASK32]))
    return int(mixed.item())


def explainer_of(cfg: DictConfig, method: str, net, split: str, shard: int) -> saliency.PixelSaliency:
    """`method` on `net`, its noise (if it draws any) seeded for this shard alone (`shard_seed`)."""
    params = OmegaConf.to_container(cfg.method[method], resolve=True)
    reseeded = {}
    if "seed" in params:
        reseeded["seed"] = shard_seed(params["seed"], split, shard)
    if isinstance(params.get("noise"), dict) and "seed" in params["noise"]:
        reseeded["noise"] = {**params["noise"], "seed": shard_seed(params["noise"]["seed"], split, shard)}
    return saliency.create(params, net, reduce=method_reduction(cfg, method), **reseeded)


def split_spec(cfg: DictConfig, method: str, split: str, kind: str) -> dict:
    """What determines `method`'s `kind` for the images of `split` (stages.csv's key for them; each shard
    adds its rows)."""
    return {"saliency": saliency_spec(cfg, method), "split": split, "kind": kind}


def shard_specs(
    cfg: DictConfig, method: str, datamodule: TensorDataModule, split: str, kind: str
) -> tuple[list[tuple[int, int]], list[dict]]:
    """The rows and the cache specs of the shards of `method`'s `kind` for `split`."""
    images = datamodule.splits[split].images
    per_shard = shard_rows(images[:1].numel())
    bounds = shard_bounds(len(images), per_shard)
    common = split_spec(cfg, method, split, kind)
    return bounds, [{**common, "rows": per_shard, "shard": s} for s in range(len(bounds))]


def codes_stored(cfg: DictConfig, cache: StageCache, method: str, datamodule: TensorDataModule) -> bool:
    """Whether every shard of `method`'s removal codes is in the cache already."""
    return all(
        cache.has("saliency", spec)
        for split in SPLITS
        for spec in shard_specs(cfg, method, datamodule, split, "codes")[1]
    )


def split_shards(
    cfg: DictConfig,
    cache: StageCache,
    method: str,
    base: dict,
    datamodule: TensorDataModule,
    split: str,
    kind: str,
) -> Rows:
    """The `kind` ("codes" or "maps") of `method` for every image of `split`, row i for image i: in memory
    where the split's images are, else on disk, shard by shard."""
    data = datamodule.splits[split]
    images = data.images
    bounds, specs = shard_specs(cfg, method, datamodule, split, kind)
    batch_size = cfg.roar.saliency_batch_size
    # Loaded only if a shard is computed here; each shard gets its own explainer (its own noise stream).
    net = once(lambda: load_classifier(cfg.model, base).net.to(device_of(cfg.trainer)))
    # Drawn on a terminal only (disable=None): a log file gets the stage's one line instead.
    progress = tqdm(total=len(data), desc=f"{kind}: {method} ({split})", unit="img", disable=None)

    def write(i: int, work: Work) -> dict:
        start, stop = bounds[i]
        seed = cfg.seed if kind == "codes" else None
        explainer = explainer_of(cfg, method, net(), split, i)
        rows = explain_rows(explainer, datamodule, split, start, stop, batch_size, seed, progress)
        write_npy(work.dir / f"{kind}.npy", rows)
        return {"rows": stop - start, "shape": list(rows.shape[1:])}

    about = {"name": f"{method} {'removal codes' if kind == 'codes' else 'saliency maps'} ({split})",
             "method": method, "seed": cfg.seed}  # fmt: skip
    with progress:
        shards = cache.fill("saliency", specs, write, about, spec_key(split_spec(cfg, method, split, kind)))
    log.info("%s: %s", cache.events[-1]["name"], outcome(cache.events[-1]))
    array = ShardedArray([s.dir / f"{kind}.npy" for s in shards], [s.meta["rows"] for s in shards],
                         tuple(shards[0].meta["shape"]), KINDS[kind])  # fmt: skip
    return Rows(array.load() if images.resident else array)


def code_stage(
    cfg: DictConfig, cache: StageCache, method: str, base: dict, datamodule: TensorDataModule
) -> dict[str, Rows]:
    """The removal codes of `method` for every split (cached, shard by shard)."""
    return {split: split_shards(cfg, cache, method, base, datamodule, split, "codes") for split in SPLITS}


def map_stage(
    cfg: DictConfig, cache: StageCache, method: str, base: dict, datamodule: TensorDataModule, split: str
) -> Rows:
    """The float maps of `method` for the images of `split` (cached, shard by shard)."""
    return split_shards(cfg, cache, method, base, datamodule, split, "maps")
