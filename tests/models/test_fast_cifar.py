"""model=fast_cifar and its recipe: the whitening stem, the refusals, the per-group learning rates, the
schedule, the weight average that validation and the test see, and the CIFAR-10 presets' configuration."""

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from roar.config import ConfigError, method_names
from roar.data import RandomCropFlip, Split, TensorDataModule
from roar.models import FastCifarNet, ImageClassifier, WarmEMA, triangular
from roar.runtime.cache import Work
from roar.saliency import FullGrad
from roar.stages.training import train_classifier
from tests import dataset_files
from tests.config.test_presets import grid_rows
from tests.conftest import compose_config

IMAGEFOLDER = [
    "dataset=imagefolder", "dataset.root=/nowhere", "dataset.num_classes=10", "dataset.image_size=32"
]  # fmt: skip


def test_the_stem_whitens_the_patches_it_was_initialised_on():
    generator = torch.Generator().manual_seed(0)
    # Correlated channels and neighbouring pixels, as in natural images.
    base = torch.randn(64, 1, 16, 16, generator=generator)
    noise = torch.randn(64, 2, 16, 16, generator=generator)
    images = torch.cat([base, 0.5 * base + noise[:, :1], base.roll(1, dims=3) + 0.3 * noise[:, 1:]], dim=1)
    net = FastCifarNet(3, 10, widths=(8, 8, 8), whitening_eps=1e-9)
    net.init_from_data(images)
    half = net.whiten.out_channels // 2
    responses = nn.functional.conv2d(images, net.whiten.weight[:half])  # the filters, without their bias
    covariance = torch.cov(responses.permute(1, 0, 2, 3).reshape(half, -1))
    assert torch.allclose(covariance, torch.eye(half), atol=1e-3)
    assert torch.equal(net.whiten.weight[half:], -net.whiten.weight[:half])
    assert not net.whiten.weight.requires_grad and net.whiten.bias.requires_grad


def rank_deficient_images(generator: torch.Generator) -> torch.Tensor:
    """Blobs of +-1, the same in every channel: task=leakage's removal masks as a network sees them."""
    blobs = torch.randn(64, 1, 4, 4, generator=generator)
    masks = nn.functional.interpolate(blobs, size=16, mode="bilinear").sign()
    return masks.expand(-1, 3, -1, -1)


def test_directions_the_images_do_not_span_get_no_filter_and_no_copy():
    generator = torch.Generator().manual_seed(0)
    images = rank_deficient_images(generator)
    net = FastCifarNet(3, 10, widths=(32, 8, 8))
    dirac = net[2].weight.detach().clone()
    net.init_from_data(images)
    half = net.whiten.out_channels // 2
    # A 2x2 patch of identical channels spans 4 of the 12 directions.
    spanned = net.whiten.weight[:half].flatten(1).norm(dim=1) > 0
    assert spanned.sum() == 4
    responses = nn.functional.conv2d(images, net.whiten.weight[:half][spanned])
    covariance = torch.cov(responses.permute(1, 0, 2, 3).reshape(4, -1))
    assert torch.allclose(covariance, torch.eye(4), atol=0.05)  # whitened up to whitening_eps
    copies = net[2].weight.detach()[: 2 * half]
    kept = torch.cat([spanned, spanned])
    assert torch.equal(copies[kept], dirac[: 2 * half][kept])
    assert not torch.isclose(copies[~kept], dirac[: 2 * half][~kept]).all(dim=(1, 2, 3)).any()


def test_rank_deficient_images_give_gradients_of_the_usual_size():
    """The stem's copies of directions of no variance used to reach a batch-norm (eps 1e-12) as rounding
    noise, normalised to unit variance: gradients 1e9 times too large, and task=leakage's fits on removal
    masks ended at NaN weights or predicting one class."""
    generator = torch.Generator().manual_seed(0)
    images = rank_deficient_images(generator)
    labels = torch.randint(0, 10, (64,), generator=generator)
    norms = {}
    full_rank = torch.randn(64, 3, 16, 16, generator=generator)
    for name, inputs in {"masks": images, "full rank": full_rank}.items():
        torch.manual_seed(0)
        net = FastCifarNet(3, 10, widths=(32, 8, 8))
        net.init_from_data(inputs)
        nn.functional.cross_entropy(net(inputs), labels).backward()
        norms[name] = max(p.grad.abs().max().item() for p in net.parameters() if p.grad is not None)
    assert norms["masks"] < 100 * norms["full rank"], norms


def test_fullgrad_is_complete_on_a_trained_like_network_in_float64():
    net = FastCifarNet(3, 10, widths=(8, 16, 16))
    net.init_from_data(torch.randn(32, 3, 32, 32))
    generator = torch.Generator().manual_seed(2)
    for norm in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        norm.running_mean.uniform_(-1, 1, generator=generator)
        norm.running_var.uniform_(0.5, 2, generator=generator)
        norm.bias.data.uniform_(-0.5, 0.5, generator=generator)
    net = net.eval().double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=generator)
    assert FullGrad(net).check_completeness(x, rtol=1e-10).max() <= 1e-10


def test_images_the_network_cannot_take_are_refused_in_one_line():
    net = FastCifarNet(3, 10, widths=(8, 8, 8))
    assert FastCifarNet.min_image_size() == 9
    net.check_input(3, 9)
    with pytest.raises(ConfigError, match=r"at least 9x9 pixels .* the dataset's are 8x8"):
        net.check_input(3, 8)
    with pytest.raises(ConfigError, match="built for 3 channels, but the images have 1"):
        net.check_input(1, 32)


def test_digits_are_too_small_for_fast_cifar_and_the_run_stops_before_training(run_roar, tmp_path):
    done = run_roar("model=fast_cifar", "dataset=digits", "logger=none", "hydra.run.dir=run")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("roar: error: model: fast_cifar needs images")
    assert not list((tmp_path / "cache").rglob("*.ckpt"))  # refused before the base model's first step


def test_batch_norm_shifts_learn_faster_with_the_same_decay_per_step(tmp_path):
    cfg = compose_config(tmp_path, "model=fast_cifar", "dataset=cifar10")
    classifier: ImageClassifier = instantiate(cfg.model)
    scaled, rest = classifier.parameter_groups()
    shifts = {id(m.bias) for m in classifier.modules() if isinstance(m, nn.BatchNorm2d)}
    assert {id(p) for p in scaled["params"]} == shifts
    assert not shifts & {id(p) for p in rest["params"]}
    assert all(p.requires_grad for p in rest["params"])  # the frozen stem weights and BN scales are left out
    optimizer = classifier.optimizer_factory([scaled, rest])
    fast, slow = optimizer.param_groups
    assert fast["lr"] == pytest.approx(64 * slow["lr"])
    assert fast["lr"] * fast["weight_decay"] == pytest.approx(slow["lr"] * slow["weight_decay"])


def test_triangular_schedule():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = triangular(optimizer, total_steps=100, start=0.2, peak=0.25, end=0.1)
    rates = []
    for _ in range(101):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.2) and rates[25] == pytest.approx(1.0)
    assert rates[100] == pytest.approx(0.1)
    assert max(rates) == rates[25]
    with pytest.raises(ValueError, match="peak"):
        triangular(optimizer, 10, peak=1.0)


def _tiny_datamodule(n: int = 96) -> TensorDataModule:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 4
    images = torch.rand(n, 3, 16, 16, generator=generator) * 0.3
    for k in range(4):  # each class brightens its own quadrant
        rows, cols = divmod(k, 2)
        images[labels == k, :, rows * 8 : rows * 8 + 8, cols * 8 : cols * 8 + 8] += 0.6
    splits = {name: Split(images[part], labels[part]) for name, part in
              (("train", slice(0, 64)), ("val", slice(64, 80)), ("test", slice(80, 96)))}  # fmt: skip
    return TensorDataModule(splits, 4, batch_size=16, augment=RandomCropFlip(padding=2))


def test_the_kept_weights_are_the_average_and_their_test_accuracy_is_plain(tmp_path):
    cfg = compose_config(
        tmp_path, "model=fast_cifar", "dataset=cifar10", "model.net.widths=[8,16,16]",
        "dataset.num_classes=4", "model.optimizer.lr=0.05", "trainer.max_epochs=3",
    )  # fmt: skip
    datamodule = _tiny_datamodule()
    artifact = train_classifier(cfg.model, cfg.trainer, datamodule, 0, Work(tmp_path / "fit"))
    checkpoint = torch.load(next((tmp_path / "fit" / "checkpoints").glob("epoch=*.ckpt")), weights_only=True)
    # Lightning's weight averaging keeps the raw weights beside the average; the artifact is the average.
    raw, average = checkpoint["current_model_state"], checkpoint["state_dict"]
    assert any(not torch.equal(raw[k], average[k]) for k in average)
    assert all(torch.equal(artifact["state_dict"][k], average[k]) for k in average)
    classifier: ImageClassifier = instantiate(cfg.model)
    classifier.load_state_dict(artifact["state_dict"])
    test = datamodule.splits["test"]
    with torch.no_grad():
        predicted = classifier.eval()(datamodule.prepared(test.images[:])).argmax(1)
    assert artifact["test_acc"] == pytest.approx((predicted == test.labels).float().mean().item())


def test_warm_ema_follows_early_and_averages_late():
    ema = WarmEMA(decay=0.9, power=1.0)
    averaged, current = torch.zeros(1), torch.ones(1)
    ema._progress = 0.0
    assert ema._average(averaged, current, 1).item() == pytest.approx(1.0)
    ema._progress = 1.0
    assert ema._average(averaged, current, 1).item() == pytest.approx(0.1)
    with pytest.raises(ValueError):
        WarmEMA(decay=1.0)


@pytest.mark.parametrize("dataset", [[], IMAGEFOLDER], ids=["cifar10", "imagefolder"])
def test_cifar10_cpu_preset(tmp_path, dataset):
    cfg = compose_config(tmp_path, "experiment=cifar10_cpu", *dataset)
    assert cfg.model.net._target_ == "roar.models.FastCifarNet"
    assert method_names(cfg) == ["fullgrad", "input_gradient", "gradcam", "random"]
    assert list(cfg.roar.fractions) == [0.1, 0.3, 0.5, 0.7, 0.9]
    datamodule = cfg.dataset.datamodule
    assert datamodule.train_size == 10000
    # CIFAR-10's augmentation whichever dataset reads the images.
    assert datamodule.augment.padding == 4 and datamodule.augment.flip
    assert cfg.dataset.name == ("imagefolder" if dataset else "cifar10")


def test_cifar10_fast_preset(tmp_path):
    cfg = compose_config(tmp_path, "experiment=cifar10_fast", "trainer=gpu")
    assert list(cfg.model.net.widths) == [64, 256, 256] and cfg.dataset.datamodule.batch_size == 1024
    assert set(method_names(cfg)) >= {"fullgrad", "simple_fullgrad", "random", "input_gradient", "gradcam"}
    assert list(cfg.seeds) == [0, 1, 2] and cfg.trainer.accelerator == "gpu"


def test_cifar10_cpu_preset_runs_end_to_end_on_an_image_folder(run_roar, tmp_path):
    dataset_files.write_image_folder(tmp_path / "images", classes=3, train=60, test=15, size=32)
    done = run_roar(
        "experiment=cifar10_cpu", "dataset=imagefolder", f"dataset.root={tmp_path / 'images'}",
        "dataset.num_classes=3", "dataset.image_size=32", "dataset.datamodule.train_size=null",
        "dataset.datamodule.val_fraction=0.2", "dataset.datamodule.read_workers=0",
        "model.net.widths=[8,16,16]", "trainer.max_epochs=2", "roar.fractions=[0.5]",
        "roar.proceed_at_chance=true",  # two epochs on 60 images: the wiring is tested, not the accuracy
        "method=[fullgrad,random]", "logger=none", "hydra.run.dir=run",
    )  # fmt: skip
    grid_rows(done, tmp_path / "run")


# --- the benchmark rows of issue 11 (their code paths, on tiny data; the figures come from make bench)


def test_accuracy_over_time_records_one_point_per_epoch_with_the_averaged_weights(tmp_path):
    from benchmarks.cifar import accuracy_over_time, time_to

    cfg = compose_config(
        tmp_path, "model=fast_cifar", "dataset=cifar10", "model.net.widths=[8,16,16]",
        "dataset.num_classes=4", "model.optimizer.lr=0.05", "trainer.max_epochs=3",
    )  # fmt: skip
    curve = accuracy_over_time(cfg, _tiny_datamodule())
    assert len(curve) == 3 and all(0 <= acc <= 1 for _, acc in curve)
    assert 0 < curve[0][0] < curve[1][0] < curve[2][0]
    assert time_to(curve, 0.0) == curve[0][0] and time_to(curve, 1.01) is None


def test_benchmarks_without_images_or_cuda_say_skipped(monkeypatch, tmp_path):
    from benchmarks import cifar, gpu

    monkeypatch.chdir(tmp_path)  # no data/ archive here, and no ../shared beside it
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the bench's 2 threads stay there
    monkeypatch.delenv("ROAR_CIFAR10_JPG", raising=False)
    assert cifar.run() == ["cpu CIFAR-10 accuracy against time: skipped: no CIFAR-10 images"]
    if not torch.cuda.is_available():
        assert all(row.endswith("skipped: no CUDA device") for row in gpu.run())
    assert torch.get_num_threads() == threads


def test_gpu_rows_run_on_any_device():
    from benchmarks import gpu

    rows = gpu.fullgrad_rows(torch.device("cpu"), batch=2, widths=(8, 8, 8))
    assert len(rows) == 2 and all("x the floor" in row for row in rows)
    assert "img/s" in gpu.road_rate(torch.device("cpu"), images=8, repeats=1)
