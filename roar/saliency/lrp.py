"""Layer-wise relevance propagation (Bach et al., 2015) through zennit (Anders et al., 2021).

`composite` names zennit's rule set (zennit.composites.COMPOSITES), by default `epsilon_plus_flat`: the
flat rule at the first layer, the z+ rule (alpha 1, beta 0) at every other convolution, the epsilon rule
(1e-6) at dense layers, and the gradient through activations and pooling (as the layer map of
zennit.composites.layer_map_base says). Canonizers rewrite the model for the rules while it is being
explained and restore it afterwards: `auto` merges each batch-norm into the neighbouring convolution
(zennit's SequentialMergeBatchNorm) and, for a torchvision ResNet, also makes each residual addition a
module (ResNetCanonizer); a list of zennit canonizer class names (from zennit.canonizers or
zennit.torchvision) chooses them explicitly, [] none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import zennit.canonizers
import zennit.composites
import zennit.torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from zennit.attribution import Gradient


def canonizer(name: str) -> zennit.canonizers.Canonizer:
    for module in (zennit.canonizers, zennit.torchvision):
        cls = getattr(module, name, None)
        if isinstance(cls, type) and issubclass(cls, zennit.canonizers.Canonizer):
            return cls()
    raise ValueError(f"no zennit canonizer {name!r} (in zennit.canonizers or zennit.torchvision)")


class LRP:
    """Relevance of every input value for the target logit, (N, C, H, W)."""

    def __init__(self, model: nn.Module, composite: str = "epsilon_plus_flat", canonizers="auto"):
        if composite not in zennit.composites.COMPOSITES:
            known = ", ".join(sorted(zennit.composites.COMPOSITES))
            raise ValueError(f"composite must be one of {known}, got {composite!r}")
        if canonizers != "auto":
            for name in canonizers:  # unknown names fail here, before any model runs
                canonizer(name)
        self.model, self.composite, self.canonizers = model, composite, canonizers

    def _canonizers(self) -> list:
        if self.canonizers != "auto":
            return [canonizer(name) for name in self.canonizers]
        residual = any(isinstance(m, (BasicBlock, Bottleneck)) for m in self.model.modules())
        if residual:
            return [zennit.torchvision.ResNetCanonizer()]
        return [zennit.canonizers.SequentialMergeBatchNorm()]

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        composite = zennit.composites.COMPOSITES[self.composite](canonizers=self._canonizers())

        def selected(logits: torch.Tensor) -> torch.Tensor:
            # The relevance put into the output: the target logit itself (so that a conservative rule set
            # distributes f(x)), zero for the other classes.
            classes = logits.argmax(1) if target is None else torch.as_tensor(target, device=logits.device)
            one_hot = F.one_hot(classes.view(-1).expand(len(logits)), logits.shape[1]).to(logits.dtype)
            return logits * one_hot

        with Gradient(self.model, composite) as attributor:
            _, relevance = attributor(inputs.detach(), selected)
        return relevance
