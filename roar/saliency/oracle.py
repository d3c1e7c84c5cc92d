"""A ground-truth control: the saliency of a pixel is 1 where it decides the label, 0 elsewhere.

Only datasets that know their informative pixels (dataset=synthetic) can feed it; on those, the oracle
is the best any method can do, so ROAR at the informative area's fraction must reach chance with it.
"""

from __future__ import annotations

import torch


class Oracle:
    # PixelSaliency passes the dataset's ground truth only to methods that ask for it.
    uses_ground_truth = True

    def __init__(self, model=None):
        pass

    def attribute(self, inputs: torch.Tensor, target=None, ground_truth: torch.Tensor | None = None):
        if ground_truth is None:
            raise ValueError(
                "the oracle needs the dataset's ground-truth masks (only dataset=synthetic has them)"
            )
        return ground_truth.to(device=inputs.device, dtype=inputs.dtype).unsqueeze(1)
