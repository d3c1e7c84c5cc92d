"""The GPU data path, exercised on the CPU device: uint8 batches cut on the device the data sit on, per-image
crop and flip, removal applied in the batch, channels-last, bf16, torch.compile, and the GPU/DDP configs."""

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from pytorch_lightning import Trainer
from torch import nn

from roar.config import ConfigError, validate
from roar.data import RandomCropFlip, Split, TensorDataModule
from roar.removal import mask_of_codes, removal_codes, replace_pixels
from roar.runtime.cache import StageCache, Work
from roar.stages import removed_datamodule, training
from roar.stages.training import build_classifier, train_classifier
from tests import dataset_files
from tests.conftest import compose_config


def _datamodule(n: int = 64, size: int = 8, augment=None) -> TensorDataModule:
    generator = torch.Generator().manual_seed(0)
    splits = {
        name: Split(
            torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator),
            torch.arange(n) % 4,
        )  # fmt: skip
        for name in ("train", "val", "test")
    }
    return TensorDataModule(splits, num_classes=4, batch_size=16, augment=augment)


def _windows(image: torch.Tensor, padding: int) -> list[torch.Tensor]:
    """Every crop of the zero-padded image, flipped or not."""
    padded = F.pad(image, [padding] * 4)
    _, h, w = image.shape
    crops = [padded[:, r : r + h, c : c + w] for r in range(2 * padding + 1) for c in range(2 * padding + 1)]
    return crops + [crop.flip(2) for crop in crops]


def test_crop_flip_draws_an_independent_window_per_image():
    images = torch.randn(32, 3, 8, 8)
    torch.manual_seed(0)
    out = RandomCropFlip(padding=2, flip=True)(images)
    assert out.shape == images.shape
    chosen = []
    for image, result in zip(images, out):
        matches = [i for i, window in enumerate(_windows(image, 2)) if torch.equal(window, result)]
        assert matches, "every output is a (flipped) window of its padded input"
        chosen.append(matches[0])
    assert len(set(chosen)) > 8  # per-image draws, not one crop for the whole batch
    assert any(c >= 25 for c in chosen) and any(c < 25 for c in chosen)  # some flipped, some not
    torch.manual_seed(0)
    assert torch.equal(out, RandomCropFlip(padding=2, flip=True)(images))  # seeded by torch's generator


def test_crop_flip_without_padding_or_flip_is_the_identity():
    images = torch.randn(4, 3, 8, 8)
    assert torch.equal(RandomCropFlip(padding=0, flip=False)(images), images)


def test_batches_stay_uint8_until_the_device_and_are_cut_from_the_resident_tensors():
    dm = _datamodule()
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (16, 3, 8, 8)  # a quarter of float32's bytes
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    dm.trainer = trainer
    dm.setup("fit")
    assert all(split.images[:1].device == trainer.strategy.root_device for split in dm.splits.values())
    normalised, _ = dm.on_after_batch_transfer((images, labels), 0)
    assert normalised.dtype == torch.float32
    assert torch.allclose(normalised, (images / 255 - dm.mean.view(1, -1, 1, 1)) / dm.std.view(1, -1, 1, 1))


def test_augmentation_applies_to_training_batches_only():
    dm = _datamodule(augment=RandomCropFlip(padding=2))
    batch = next(iter(dm.val_dataloader()))
    plain = dm.normalize(batch[0])
    dm.trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    dm.trainer.validating = True
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)[0], plain)
    dm.trainer.training = True
    assert not torch.equal(dm.on_after_batch_transfer(batch, 0)[0], plain)


def test_removal_in_the_batch_equals_removing_from_the_stored_images():
    dm = _datamodule()
    codes = {
        name: removal_codes(torch.rand(len(split), 8, 8), 3, source=name) for name, split in dm.splits.items()
    }
    modified = removed_datamodule(dm, codes, fraction=0.4, seed=3)
    # The images are stored once, unmodified; only the codes are new, one byte per pixel.
    assert modified.splits["train"].images is dm.splits["train"].images
    images, labels, batch_codes = next(iter(modified.test_dataloader()))
    removed = mask_of_codes(batch_codes, 0.4)
    assert batch_codes.dtype == torch.uint8 and (removed.flatten(1).sum(1) == round(0.4 * 64)).all()
    batch, _ = modified.on_after_batch_transfer((images, labels, batch_codes), 0)
    # What the old path computed: fill the raw images with the training mean, then normalise.
    expected = dm.normalize(replace_pixels(images.float() / 255, removed, dm.mean))
    assert torch.allclose(batch, expected, atol=1e-6)
    assert (batch.permute(1, 0, 2, 3)[:, removed] == 0).all()  # the mean is zero to the network


def _tiny_mnist(tmp_path, *overrides):
    dataset_files.write_mnist(tmp_path / "data", train=200, test=50)
    cfg = compose_config(
        tmp_path, "dataset=mnist", f"dataset.root={tmp_path / 'data'}", "trainer.max_epochs=2",
        "dataset.datamodule.batch_size=32", *overrides,
    )  # fmt: skip
    datamodule = instantiate(cfg.dataset.datamodule)
    datamodule.prepare(StageCache(tmp_path / "cache"), {}, "memory")
    return cfg, datamodule


class _FitProbe:
    """Records, at every training-time call of the network's first conv, the autocast state, the dtype of
    its output and the memory format of its input and weight: what the fit really ran with."""

    def __init__(self, net: nn.Module):
        self.calls: list[dict] = []
        next(m for m in net.modules() if isinstance(m, nn.Conv2d)).register_forward_hook(self._record)

    def _record(self, conv, args, output):
        if conv.training:  # the fit's training steps, not validation, test or the per-image test pass
            self.calls.append({
                "autocast": torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"),
                "output": output.dtype,
                "input_channels_last": args[0].is_contiguous(memory_format=torch.channels_last),
                "weight_channels_last": conv.weight.is_contiguous(memory_format=torch.channels_last),
            })  # fmt: skip


@pytest.mark.parametrize(
    ("memory_format", "precision", "augment", "expected"),
    [
        ("channels_last", "bf16-mixed", "{_target_: roar.data.RandomCropFlip, padding: 2, flip: true}",
         (torch.bfloat16, torch.bfloat16, True)),
        # The contrast, which shows that the probe tells them apart. Without augmentation: RandomCropFlip
        # returns its batch channels-last, whatever memory_format says.
        ("contiguous", "32-true", "null", (False, torch.float32, False)),
    ],
)  # fmt: skip
def test_training_runs_in_the_precision_and_memory_format_configured(
    tmp_path, monkeypatch, memory_format, precision, augment, expected
):
    # Three channels: a one-channel batch is channels-last and contiguous at once, so only colour images
    # show which layout the fit gave its input.
    dataset_files.write_image_folder(tmp_path / "data", classes=4, train=160, test=32, size=16)
    cfg = compose_config(
        tmp_path, "dataset=imagefolder", f"dataset.root={tmp_path / 'data'}", "dataset.num_classes=4",
        "dataset.channels=3", "dataset.image_size=16",
        "dataset.datamodule.read_workers=0", "dataset.datamodule.batch_size=32", "trainer.max_epochs=2",
        f"model.memory_format={memory_format}", f"trainer.precision={precision}",
        f"dataset.datamodule.augment={augment}",
    )  # fmt: skip
    dm = instantiate(cfg.dataset.datamodule)
    dm.prepare(StageCache(tmp_path / "cache"), {}, "memory")
    probes = []

    def probed(model_cfg):
        classifier = build_classifier(model_cfg)
        probes.append(_FitProbe(classifier.net))
        return classifier

    monkeypatch.setattr(training, "build_classifier", probed)
    codes = {name: removal_codes(torch.rand(len(split), 16, 16)) for name, split in dm.splits.items()}
    modified = removed_datamodule(dm, codes, fraction=0.3, seed=0)
    trained = train_classifier(cfg.model, cfg.trainer, modified, 0, Work(tmp_path / "work"), "test")
    # The fit's classifier and the one test_correctness loads the kept weights into (eval mode: no calls).
    calls = [call for probe in probes for call in probe.calls]
    autocast, output, channels_last = expected
    assert len(calls) == 2 * len(modified.train_dataloader())  # every training step of both epochs
    for call in calls:
        assert (call["autocast"], call["output"]) == (autocast, output)
        assert call["input_channels_last"] == call["weight_channels_last"] == channels_last
    weights = trained["state_dict"]["net.0.weight"]
    assert weights.dtype == torch.float32  # mixed precision keeps float32 weights
    assert 0 <= trained["val_acc"] <= 1 and 0 <= trained["test_acc"] <= 1


@pytest.mark.slow
def test_torch_compile_trains_and_keeps_the_eager_weight_names(tmp_path):
    cfg, dm = _tiny_mnist(tmp_path, "model.compile=true", "model.net.widths=[4,8]")
    trained = train_classifier(cfg.model, cfg.trainer, dm, 0, Work(tmp_path / "work"), "test")
    eager = instantiate(cfg.model).state_dict()
    assert set(trained["state_dict"]) == set(eager)


@pytest.mark.slow
def test_ddp_spawns_workers_that_each_train_on_their_share(tmp_path):
    # sync_batchnorm needs CUDA; gloo runs the same DDP code paths on the CPU.
    cfg, dm = _tiny_mnist(
        tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
        "trainer.sync_batchnorm=false", "trainer.max_epochs=3",
    )  # fmt: skip
    trained = train_classifier(cfg.model, cfg.trainer, dm, 0, Work(tmp_path / "work"), "ddp")
    # The checkpoint chosen in a worker comes back with its weights and score.
    assert set(trained["state_dict"]) == set(instantiate(cfg.model).state_dict())
    assert trained["val_acc"] > 0.3 and trained["test_acc"] > 0.3  # chance is 0.1
    # Each worker took half of the training batches per epoch: 180 images in batches of 32 are 6 batches
    # in one process, 3 per worker in two (the kept checkpoint's name counts the optimizer steps).
    (kept,) = (tmp_path / "work" / "checkpoints").glob("epoch=*.ckpt")
    epoch, step = (int(part.split("=")[1]) for part in kept.stem.split("-"))
    assert step == 3 * (epoch + 1)


def test_gpu_and_ddp_configs_compose(tmp_path):
    gpu = compose_config(tmp_path, "trainer=gpu").trainer
    assert (gpu.accelerator, gpu.precision, gpu.benchmark) == ("gpu", "bf16-mixed", True)
    ddp = compose_config(tmp_path, "trainer=ddp").trainer
    assert (ddp.accelerator, ddp.strategy, ddp.devices, ddp.precision) == (
        "gpu",
        "ddp_spawn",
        -1,
        "bf16-mixed",
    )
    assert compose_config(tmp_path, "dataset=cifar10").dataset.datamodule.on_device is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when no GPU is visible")
def test_gpu_trainer_without_a_gpu_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="trainer.accelerator: gpu, but no CUDA device is visible"):
        validate(compose_config(tmp_path, "trainer=gpu"))


@pytest.mark.parametrize(("memory_format", "channels_last"), [("auto", False), ("channels_last", True),
                                                              ("contiguous", False)])  # fmt: skip
def test_memory_format_auto_means_channels_last_only_on_a_cuda_device(tmp_path, memory_format, channels_last):
    cfg = compose_config(tmp_path, "model=small_cnn", "dataset=cifar10")
    classifier = instantiate(cfg.model, memory_format=memory_format)
    classifier.trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    classifier.setup("fit")
    assert classifier.net[0].weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert classifier.channels_last == channels_last
