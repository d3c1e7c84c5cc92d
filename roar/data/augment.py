"""Training augmentation of whole batches on the device they already sit on (the GPU, or the CPU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class RandomCropFlip:
    """A random crop after `padding` pixels of zero padding, and a random horizontal flip (if `flip`),
    drawn independently for every image of the batch.

    torchvision's transforms draw one set of parameters per call, which on a batch means one crop for all
    its images; here each image's window (flipped or not) is cut from the padded batch with one gather.
    Batches arrive normalised, so the zero padding is the training mean (also the value removed pixels
    take under `roar.fill=mean`).
    """

    def __init__(self, padding: int = 4, flip: bool = True):
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding = padding
        self.flip = flip

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        device, pad = images.device, self.padding
        padded = F.pad(images, [pad] * 4)
        top = torch.randint(0, 2 * pad + 1, (n, 1), device=device)
        left = torch.randint(0, 2 * pad + 1, (n, 1), device=device)
        columns = torch.arange(width, device=device).expand(n, width)
        if self.flip:
            flipped = torch.rand(n, 1, device=device) < 0.5
            columns = torch.where(flipped, columns.flip(1), columns)
        rows = top + torch.arange(height, device=device)
        columns = left + columns
        batch = torch.arange(n, device=device).view(n, 1, 1)
        # Advanced indices around the channel slice put the channel last: (N, H, W, C), which permuted back to
        # (N, C, H, W) is the channels-last layout the GPU convolutions prefer.
        return padded[batch, :, rows.unsqueeze(2), columns.unsqueeze(1)].permute(0, 3, 1, 2)
