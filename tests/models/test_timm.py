"""model=timm: timm's models by name, and FullGrad exact on them (timm's own modules: norm-act layers,
squeeze-excitation and other gates, attention, Swin blocks), in float64 with random weights and
randomised batch-norm statistics, like torchvision's in tests/saliency/test_fullgrad_implicit.py."""

import copy
import functools

import pytest
import torch
from torch import nn

from roar.errors import ConfigError
from roar.models import timm_net
from roar.saliency import FullGrad, SimpleFullGrad, full_gradient_terms
from roar.saliency.fullgrad import CompletenessError
from roar.stages import check_model
from tests.config.test_input_checks import _one_error_line
from tests.conftest import compose_config
from tests.saliency.test_fullgrad_implicit import _fullgrad_roar, randomize

# name -> timm_net's image_size (the models built for one input size get the test images' 32).
DECOMPOSABLE = {
    "resnet18": None,
    "convnext_atto": None,
    "mobilenetv3_small_050": None,  # BatchNormAct2d with hard-swish, SqueezeExcite
    "efficientnet_b0": None,
    "seresnet18": None,  # SEModule
    "vit_tiny_patch16_224": 32,  # Attention (fused), cls_token and pos_embed
    "deit_tiny_patch16_224": 32,
    "ecaresnet26t": None,  # EcaModule
    "gcresnext26ts": None,  # GlobalContext
    "skresnet18": None,  # SelectiveKernel
    "resnest14d": None,  # SplitAttn
    "mobilenetv4_hybrid_medium": None,  # MultiQueryAttention2d
    "cait_xxs24_224": 32,  # TalkingHeadAttn, ClassAttn
    "eva02_tiny_patch14_224": 32,  # EvaAttention with rotary embedding, GluMlp
}

pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def _model(name: str, in_channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return randomize(timm_net(name, in_channels, 10, DECOMPOSABLE.get(name)))


def _images(channels: int = 3, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(2, channels, 32, 32, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("name", DECOMPOSABLE)
def test_timm_models_decompose_exactly(name):
    model = copy.deepcopy(_model(name)).double()
    assert FullGrad(model).check_completeness(_images(), rtol=1e-10).max() <= 1e-10


def test_swin_decomposes_exactly_with_its_blocks_taken_whole():
    torch.manual_seed(0)
    net = timm_net("swin_tiny_patch4_window7_224", 3, 10, image_size=32)
    net.set_input_size(window_size=4)  # 8 x 8 patches of a 32 x 32 image: windows of 4 x 4
    model = randomize(net).double()
    assert FullGrad(model).check_completeness(_images(), rtol=1e-10).max() <= 1e-10


def test_a_norm_act_layer_is_one_unit_whose_bias_is_not_the_batch_norm_s():
    """timm's BatchNormAct2d applies its activation inside: taken whole, its term carries the activation
    (the batch-norm's bias alone, at its output, would break completeness)."""
    model = copy.deepcopy(_model("mobilenetv3_small_050")).double()
    terms = full_gradient_terms(model, _images())
    by_name = {name: t for name, index, t in terms.terms if index == 0}
    assert by_name["bn1"].shape == (2, 16, 16, 16)  # the stem's norm-act, a term shaped like its output
    assert not any(name.startswith("bn1.") for name in by_name)  # nothing inside it is a unit


def test_grey_images_and_maps():
    model = _model("efficientnet_b0", in_channels=1)
    x = _images(channels=1, dtype=torch.float32)
    assert model(x).shape == (2, 10)
    for method in (FullGrad(model), SimpleFullGrad(model)):
        maps, delta = method.attribute(x, target=1, return_convergence_delta=True)
        assert maps.shape == (2, 1, 32, 32) and torch.isfinite(maps).all()
        assert (delta.abs() / model(x)[:, 1].abs()).max() < 1e-4


class Windows(nn.Module):
    """A GELU run on the four 2 x 2 windows of each image, stacked along the batch (as Swin's attention and
    MobileViT's transformer run): its terms have 4 rows per image."""

    def __init__(self):
        super().__init__()
        self.conv, self.gelu, self.head = nn.Conv2d(1, 3, 1), nn.GELU(), nn.Linear(12, 2)

    def forward(self, x):
        windows = self.conv(x).unfold(2, 2, 2).unfold(3, 2, 2).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
        return self.head(self.gelu(windows).view(len(x), 4, 12).mean(1))


def test_a_unit_whose_terms_are_not_per_image_is_named():
    with pytest.raises(CompletenessError, match=r"the output of gelu has 8 rows for 2 images"):
        FullGrad(Windows().eval()).check_completeness(torch.randn(2, 1, 4, 4))
    FullGrad(Windows().eval(), units=[Windows]).check_completeness(torch.randn(2, 1, 4, 4))


def test_a_timm_model_that_does_not_decompose_names_where():
    """EdgeNeXt adds a positional encoding it computes from the feature map's shape alone: neither a
    parameter nor an activation, a constant that no term accounts for."""
    model = randomize(timm_net("edgenext_xx_small", 3, 10)).double()
    with pytest.raises(
        CompletenessError, match=r"the forward\(\) of SplitTransposeBlock \(stages\.1\.blocks"
    ):
        FullGrad(model).check_completeness(_images(), rtol=1e-10)


def _timm_config(tmp_path, name: str):
    return compose_config(
        tmp_path, "dataset=synthetic", "dataset.datamodule.image_size=32", "model=timm", f"model.name={name}",
        "method=[random,fullgrad]", "logger=none",
    )  # fmt: skip


def test_roar_refuses_fullgrad_on_a_timm_model_it_does_not_cover_in_one_line(tmp_path):
    images, labels = _images(channels=1, dtype=torch.float32), torch.tensor([0, 1])
    with pytest.raises(ConfigError) as refused:
        check_model(_timm_config(tmp_path, "edgenext_xx_small"), images, labels)
    message = str(refused.value)
    assert message.startswith("method.fullgrad: cannot explain model edgenext_xx_small exactly: ")
    assert "\n" not in message and "SplitTransposeBlock (stages.1.blocks" in message
    check_model(_timm_config(tmp_path, "resnet18"), images, labels)  # a covered one passes


def test_timm_builds_the_stem_for_the_channels_and_the_image_size_where_one_is_taken():
    net = timm_net("resnet18", in_channels=1, num_classes=7)
    assert net.conv1.in_channels == 1 and net.fc.out_features == 7
    assert timm_net("vit_tiny_patch16_224", 2, 3, image_size=32)(torch.randn(1, 2, 32, 32)).shape == (1, 3)
    with pytest.raises(ConfigError, match=r"^model.image_size: timm's 'resnet18' is not built for one input"):
        timm_net("resnet18", 3, 10, image_size=32)


def test_an_unknown_timm_model_is_one_error_line(run_roar, tmp_path):
    line = _one_error_line(run_roar("model=timm", "model.name=resnet5", "method=random", "logger=none"))
    assert line.startswith("roar: error: model.name: timm has no classification model 'resnet5'; e.g. ")
    assert "resnet50" in line  # the names closest to it
    assert not list(tmp_path.glob("cache/*/*/manifest.json"))


def test_roar_runs_fullgrad_on_a_timm_model(tmp_path):
    accuracy = _fullgrad_roar(tmp_path, "mobilenetv3_small_050", model="timm")
    assert set(accuracy) == {0.0, 0.5} and all(0 <= a <= 1 for a in accuracy.values())
