"""A fast-training ReLU network for small images, after Keller Jordan's airbench (CIFAR-10 to 94 % in seconds
on a GPU), made exactly decomposable by FullGrad: ReLU instead of GELU, and no layer outside conv, linear,
batch-norm, ReLU and max-pooling. docs/cifar10.md says why each piece is there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from roar.errors import ConfigError

# A patch direction whose variance is below this share of the largest carries no signal: rounding noise
# (float64 covariance of float32 images; CIFAR-10's smallest share is 1.2e-5).
NULL_DIRECTION = 1e-9


class ScaledLinear(nn.Linear):
    """A linear layer whose output is multiplied by a fixed `scale`: airbench's head (a linear layer, then
    x * 1/9) as one module, which FullGrad sees as the bias-free linear map it is."""

    def __init__(self, in_features: int, out_features: int, scale: float):
        super().__init__(in_features, out_features, bias=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale)


def frozen_scale_batch_norm(channels: int, momentum: float) -> nn.BatchNorm2d:
    """Batch-norm with its scale fixed at 1 (only the shift learns): a following ReLU makes the scale
    redundant with the next convolution's weights, and fixing it lets the shift take a large learning rate."""
    norm = nn.BatchNorm2d(channels, momentum=momentum, eps=1e-12)
    norm.weight.requires_grad_(False)
    return norm


def conv_group(in_channels: int, out_channels: int, bn_momentum: float) -> list[nn.Module]:
    """conv -> max-pool -> BN -> ReLU -> conv -> BN -> ReLU (pooling first: the normalisation runs on a
    quarter of the positions)."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        frozen_scale_batch_norm(out_channels, bn_momentum),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        frozen_scale_batch_norm(out_channels, bn_momentum),
        nn.ReLU(),
    ]


class FastCifarNet(nn.Sequential):
    """A 2x2 patch-whitening convolution (its weights fixed from the training data's patch covariance,
    `init_from_data`; its bias learns), ReLU, three conv groups of `widths` channels each halving the
    resolution, a global max-pool and a scaled linear head. The convolutions after the stem start as
    identities on their first input channels (Dirac initialisation), so the untrained network passes the
    whitened image through."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: tuple[int, int, int] = (64, 256, 256),
        whitening_kernel: int = 2,
        whitening_eps: float = 5e-4,
        bn_momentum: float = 0.4,
        head_scale: float = 1 / 9,
    ):
        whitened = 2 * in_channels * whitening_kernel**2  # every patch direction, with both signs
        whiten = nn.Conv2d(in_channels, whitened, whitening_kernel)
        whiten.weight.requires_grad_(False)
        layers: list[nn.Module] = [whiten, nn.ReLU()]
        channels = whitened
        for width in widths:
            layers += conv_group(channels, width, bn_momentum)
            channels = width
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), ScaledLinear(channels, num_classes, head_scale)]
        super().__init__(*layers)
        self.whitening_eps = whitening_eps
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d) and conv is not whiten:
                nn.init.dirac_(conv.weight.data[: conv.in_channels])

    @property
    def whiten(self) -> nn.Conv2d:
        return self[0]

    @staticmethod
    def min_image_size(whitening_kernel: int = 2, groups: int = 3) -> int:
        """The smallest side the network takes: the stem's valid convolution, then one 2x2 pool per group."""
        return whitening_kernel - 1 + 2**groups

    def check_input(self, channels: int, size: int) -> None:
        """One line, before any training, for images this network cannot take."""
        kernel = self.whiten.kernel_size[0]
        if channels != self.whiten.in_channels:
            raise ConfigError(
                f"model: fast_cifar's whitening stem was built for {self.whiten.in_channels} channels, "
                f"but the images have {channels}"
            )
        if size < self.min_image_size(kernel):
            raise ConfigError(
                f"model: fast_cifar needs images of at least {self.min_image_size(kernel)}x"
                f"{self.min_image_size(kernel)} pixels (a {kernel}x{kernel} whitening stem and three 2x2 "
                f"poolings); the dataset's are {size}x{size}"
            )

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the stem's filters to whiten `images`' patches (normalised training images (N, C, H, W)):
        the eigenvectors of the patch covariance, each divided by the square root of its eigenvalue, with
        both signs, so that after the ReLU every direction of variation survives on one side."""
        kernel = self.whiten.kernel_size[0]
        patches = F.unfold(images.double(), kernel).transpose(1, 2).reshape(-1, images.shape[1] * kernel**2)
        eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(patches.T))
        filters = eigenvectors.T / torch.sqrt(eigenvalues + self.whitening_eps).unsqueeze(1)
        # Images whose patches span fewer directions than the stem has (task=leakage's masks, the same in
        # every channel; grey images stored as RGB) leave directions of no variance. Their filters would
        # pass rounding noise that the Dirac-initialised channel behind them copies into a batch-norm with
        # eps 1e-12: normalised to unit variance, it takes gradients up to 1e6 times too large and the fit
        # ends at NaN or predicting one class. Such a direction gets no filter, and the channels that would
        # copy it a random start instead; full-rank images (every CIFAR-10 fit) are unaffected.
        null = eigenvalues <= NULL_DIRECTION * eigenvalues.max()
        filters[null] = 0
        filters = filters.reshape(-1, images.shape[1], kernel, kernel).to(self.whiten.weight)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
        copies = self[2].weight[: 2 * len(null)]  # the channels nn.init.dirac_ made copies of the stem's
        for channel in torch.cat([null, null]).nonzero().flatten().tolist()[: len(copies)]:
            nn.init.kaiming_uniform_(copies[channel : channel + 1], a=5**0.5)  # nn.Conv2d's own init
