"""The checks before any compute: the model takes the data and every selected method explains it, on a few
images, so that a model or method that cannot work stops the run in one line before anything trains."""

from __future__ import annotations

import copy

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from roar import saliency
from roar.config import method_names
from roar.data import TensorDataModule
from roar.errors import ConfigError, first_line
from roar.runtime.cache import StageCache
from roar.saliency.fullgrad import CompletenessError
from roar.stages.saliency import codes_stored
from roar.stages.specs import dataset_spec, method_reduction
from roar.stages.training import build_classifier, device_of, load_classifier


def load_data(cfg: DictConfig, cache: StageCache) -> TensorDataModule:
    """The dataset, in memory or read from the store's shards (`dataset.storage`; decoded into the store
    first where it is not there yet), once the model and the selected methods have been tried on two of its
    images: a model that cannot take them, or that a method cannot explain exactly, is refused before
    anything trains."""
    datamodule: TensorDataModule = instantiate(cfg.dataset.datamodule)
    datamodule.workers = cfg.dataset.get("workers", 2)
    datamodule.prepare(cache, dataset_spec(cfg), cfg.dataset.get("storage", "auto"))
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
        raise ConfigError(
            f"model: {name} cannot take the {shape} images of dataset={cfg.dataset.name}: {first_line(error)}"
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
    is retrained. Methods whose removal codes `cache` already holds are not run (None: every method is)."""
    methods = [m for m in method_names(cfg) if cache is None or not codes_stored(cfg, cache, m, datamodule)]
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
            reason = f": {first_line(error)}" if str(error).strip() else ""
            raise MethodError(f"method.{method}: raised {type(error).__name__}{reason}") from None
