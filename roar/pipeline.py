"""The stages every task is built from: base model -> saliency maps -> retrained models on modified data.

Each stage is a function of (config, upstream artifacts) returning an artifact, keyed in the cache by the
configuration values that determine it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from roar import saliency
from roar.cache import StageCache, Work, spec_key
from roar.config import method_names
from roar.console import GridProgress, outcome
from roar.data import TensorDataModule
from roar.data.datamodule import SPLITS, unit_range
from roar.errors import ConfigError
from roar.removal import IMAGE_FILLS, fill_value, ranking_reduction, removal_mask, remove
from roar.report import fit_logger
from roar.saliency.fullgrad import CompletenessError
from roar.training import build_classifier, device_of, load_classifier, train_classifier

log = logging.getLogger(__name__)


def _plain(node) -> object:
    return OmegaConf.to_container(node, resolve=True)


def cpu_threads(trainer_cfg: DictConfig) -> dict:
    """`{"cpu_threads": n}` where a stage computes on the CPU, else nothing. The intra-op thread count
    decides how convolutions and matrix products split their sums, so another count rounds differently;
    over a training those last bits grow into different weights, maps and accuracies (docs/threads.md)."""
    return {"cpu_threads": torch.get_num_threads()} if device_of(trainer_cfg).type == "cpu" else {}


def load_data(cfg: DictConfig) -> TensorDataModule:
    """The dataset, once the model and the selected methods have been tried on two of its images: a model
    that cannot take them, or that a method cannot explain exactly, is refused before anything trains."""
    datamodule: TensorDataModule = instantiate(cfg.dataset.datamodule)
    check_model(cfg, datamodule.normalize(datamodule.splits["train"].images[:2].cpu()),
                datamodule.splits["train"].labels[:2].cpu())  # fmt: skip
    return datamodule


# How far check_model moves each parameter off its initialisation before checking a method's exactness.
OFF_INITIALISATION = 0.1


def check_model(cfg: DictConfig, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise ConfigError if a freshly built `cfg.model` fails on `images` or does not give one logit per
    class, or if a selected method that checks its own exactness (FullGrad's completeness:
    `check_completeness`) fails on it. Works on an untrained model: whether a decomposition adds up depends
    on the layers, not on the weights, but an initialisation can hide where it breaks (a layer scale of
    1e-6 makes a block's own non-linear term too small to see), so the check runs on a copy whose
    parameters are moved off it (OFF_INITIALISATION). The global random state is left as it was."""
    name = cfg.model.get("name") or cfg.model.net._target_.rpartition(".")[2]
    shape = "x".join(map(str, images.shape[1:]))
    with torch.random.fork_rng():
        net = build_classifier(cfg.model).net.eval()
    if hasattr(net, "check_input"):  # a network that says itself which images it takes (fast_cifar)
        net.check_input(images.shape[1], min(images.shape[2:]))
    try:
        with torch.no_grad():
            logits = net(images)
    except Exception as error:  # whatever the model's forward raises on them: it cannot take these images
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"model: {name} cannot take the {shape} images of dataset={cfg.dataset.name}: {reason}"
        ) from None
    expected = (len(images), cfg.dataset.num_classes)
    if tuple(logits.shape) != expected:
        raise ConfigError(
            f"model: {name} gives outputs of shape {tuple(logits.shape)} for {len(images)} images of "
            f"dataset={cfg.dataset.name}, not one logit per class {expected}"
        )
    # In float64 a decomposition that holds adds up to ~1e-15: any residual above rtol is the model's.
    exact_net, exact_images = _off_initialisation(copy.deepcopy(net).double()), images.double()
    for method in method_names(cfg):
        attribution = saliency.create(cfg.method[method], exact_net).attribution
        if not hasattr(attribution, "check_completeness"):
            continue
        try:
            attribution.check_completeness(exact_images, labels)
        except CompletenessError as error:
            raise ConfigError(f"method.{method}: cannot explain model {name} exactly: {error}") from None


def _off_initialisation(net: torch.nn.Module) -> torch.nn.Module:
    """`net` with OFF_INITIALISATION times standard normal noise (a fixed seed) added to every parameter."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in net.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(noise.to(parameter.device) * OFF_INITIALISATION)
    return net


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


def train_stage(
    cfg: DictConfig,
    cache: StageCache,
    datamodule: TensorDataModule | Callable[[], TensorDataModule],
    seed: int,
    data=None,
    progress: GridProgress | None = None,
    logger=None,
) -> dict:
    """The trained model's record (cached). `datamodule` may be a function that builds it: it is then
    built only if the stage is computed, so a cache hit skips work such as ROAD's imputation. `progress`
    counts it as a cell of the grid and logs its line. A fit sends its curves to the job's `logger` (W&B)
    as it trains, labelled with what it trains."""
    about = training_about(seed, data)
    # A fit in spawned worker processes (trainer=ddp) would reach the W&B run through wandb's attach; with
    # wandb 0.31 such a fit never returned from its workers here. Its curves stay in its CSV log only.
    spawned = "spawn" in str(cfg.trainer.get("strategy", ""))
    trained = cache.get_or_compute(
        "train",
        training_spec(cfg, seed, data),
        lambda work: train_classifier(
            cfg.model,
            cfg.trainer,
            datamodule if isinstance(datamodule, TensorDataModule) else datamodule(),
            seed,
            work,
            about["name"],
            None if spawned else fit_logger(logger, about["name"]),
        ),
        about,
    )
    if progress is not None:
        progress.cell(about["name"], cache.events[-1], trained)
    return trained


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
    # their targets (roar's changes are versioned by roar.cache.FORMAT_VERSION, Captum's by its release).
    if method not in saliency.available() or saliency.named_config(method)["_target_"] != target:
        spec["target"] = target
        if (source := saliency.source_hash(target)) is not None:
            spec["source"] = source
    if "seed" in params:  # a seeded method draws its noise batch by batch: the batching shapes its maps
        spec["batch_size"] = cfg.roar.saliency_batch_size
    return spec


def method_reduction(cfg: DictConfig, method: str) -> str:
    return ranking_reduction(cfg.roar.rank_by, cfg.roar.signed, cfg.method[method].get("reduce", "abs_sum"))


def compute_maps(
    method: saliency.PixelSaliency, datamodule: TensorDataModule, batch_size: int, desc: str
) -> dict:
    """Per-pixel saliency (N, H, W), or per element (N, C, H, W), of every split, for the true label of
    each image; the dataset's ground truth, where it has one, goes along for the oracle."""
    maps = {}
    total = sum(len(datamodule.splits[s]) for s in SPLITS)
    # Drawn on a terminal only (disable=None): a log file gets the stage's one line instead.
    with tqdm(total=total, desc=desc, unit="img", disable=None) as progress:
        for split in SPLITS:
            images, labels = datamodule.splits[split].images, datamodule.splits[split].labels
            truth = datamodule.ground_truth[split] if datamodule.ground_truth else None
            chunks = []
            for start in range(0, len(labels), batch_size):
                part = slice(start, start + batch_size)
                batch = datamodule.normalize(images[part].to(method.device))
                known = truth[part] if truth is not None else None
                chunks.append(method.pixel_maps(batch, labels[part], known).cpu())
                progress.update(len(batch))
            maps[split] = torch.cat(chunks)
    return maps


def saliency_stage(cfg: DictConfig, cache: StageCache, method: str, base: dict, datamodule) -> dict:
    def compute(work: Work) -> dict:
        net = load_classifier(cfg.model, base).net.to(device_of(cfg.trainer))
        explainer = saliency.create(cfg.method[method], net, reduce=method_reduction(cfg, method))
        return compute_maps(explainer, datamodule, cfg.roar.saliency_batch_size, desc=f"saliency: {method}")

    about = {"name": f"{method} saliency maps", "method": method, "seed": cfg.seed}
    maps = cache.get_or_compute("saliency", saliency_spec(cfg, method), compute, about)
    log.info("%s: %s", about["name"], outcome(cache.events[-1]))
    return maps


# Images per method in the check before any saliency stage: enough for a batch, cheap for any method.
CHECK_IMAGES = 4


class MethodError(ConfigError):
    """A method that fails on the base model; one line naming it and what is wrong."""


def check_methods(
    cfg: DictConfig, base: dict, datamodule: TensorDataModule, cache: StageCache | None
) -> None:
    """Run every selected method once, on the first CHECK_IMAGES validation images and the base model, as
    its saliency stage would: a method that raises, or returns attributions of the wrong shape, on another
    device or not finite, stops the run (MethodError) before any stage runs over the dataset or any model
    is retrained. Methods whose maps `cache` already holds are not run (None: every method is)."""
    methods = [
        m for m in method_names(cfg) if cache is None or not cache.has("saliency", saliency_spec(cfg, m))
    ]
    if not methods:
        return
    net = load_classifier(cfg.model, base).net.to(device_of(cfg.trainer))
    val = datamodule.splits["val"]
    images = datamodule.normalize(val.images[:CHECK_IMAGES].to(device_of(cfg.trainer)))
    truth = datamodule.ground_truth["val"][:CHECK_IMAGES] if datamodule.ground_truth else None
    for method in methods:
        try:
            explainer = saliency.create(cfg.method[method], net, reduce=method_reduction(cfg, method))
            explainer.pixel_maps(images, val.labels[:CHECK_IMAGES], truth)
        except saliency.ContractError as error:
            raise MethodError(f"method.{method}: {error}") from None
        except Exception as error:  # a user's code may raise anything: one line, not a traceback
            lines = str(error).strip().splitlines()
            reason = f": {lines[0]}" if lines else ""
            raise MethodError(f"method.{method}: raised {type(error).__name__}{reason}") from None


def removal_masks(maps: dict, fraction: float, generator: torch.Generator, mode: str = "roar") -> dict:
    """Per split, the entries to remove (roar/removal.py), ties broken by `generator`."""
    return {split: removal_mask(maps[split], fraction, generator, mode) for split in SPLITS}


def removed_datamodule(
    datamodule: TensorDataModule,
    maps: dict,
    fraction: float,
    seed: int,
    mode: str = "roar",
    fill: str = "mean",
) -> TensorDataModule:
    """The dataset with the top `fraction` of each image's pixels removed (`mode=roar`) or all but them
    (`kar`), filled with `fill` (roar/removal.py); `seed` breaks ranking ties and draws ROAD's noise.
    Mean and zero fills are applied per batch on the training device; the fills computed from the images
    (blur, ROAD's imputation) once, here."""
    generator = torch.Generator().manual_seed(seed)
    # Every mask is drawn before any noise: the masks are the same whatever the fill.
    masks = removal_masks(maps, fraction, generator, mode)
    if fill in IMAGE_FILLS:
        images = {
            split: remove(
                unit_range(datamodule.splits[split].images), masks[split], fill, datamodule.mean, generator
            )
            for split in SPLITS
        }
        return datamodule.with_images(images)
    return datamodule.with_removal(masks, fill=fill_value(fill, datamodule.mean))


def mask_spec(cfg: DictConfig, method: str, fraction: float) -> dict:
    """What determines the removal masks: the saliency maps (ranked as roar.rank_by/signed say), the
    fraction and the mode."""
    return {"method": method, "saliency": spec_key(saliency_spec(cfg, method)),
            "fraction": fraction, "mode": cfg.roar.mode}  # fmt: skip


def removal_spec(cfg: DictConfig, method: str, fraction: float) -> dict:
    """What determines a modified dataset: the masks and how the removed pixels are filled."""
    return {**mask_spec(cfg, method, fraction), "fill": cfg.roar.fill}
