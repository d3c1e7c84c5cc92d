"""Noise ensembles: any attribution over noisy copies of each image, through Captum's NoiseTunnel. Its three
`nt_type`s: SmoothGrad (the mean; Smilkov et al., 2017), SmoothGrad-squared (the mean square; Hooker et al.,
2019) and VarGrad (the variance; Adebayo et al., 2018).

NoiseTunnel does the ensembling: it copies the batch, expands the targets with it, calls the method on
`samples_per_pass` copies of the batch at a time (its `nt_samples_batch_size`) and keeps only the running
sum and sum of squares, so peak memory stays near one call of the method on that many copies, whatever
`n_samples` is. roar replaces only how it draws the noise (`_add_noise_to_input`): NoiseTunnel draws from
the global RNG (a fixed seed would need the global state reseeded) with one absolute sigma for the whole
batch. Here sigma is a fraction (`noise_level`) of each image's own value range (max - min), as in SmoothGrad
and Hooker et al.'s code, and the noise comes from a CPU generator the method owns, seeded by `seed`: maps
are reproducible, the same on any device, and the global RNG is left alone. The noise is drawn one copy of
the batch at a time, so `samples_per_pass` changes speed and memory, never the noise (only the order in
which the sums are rounded).
"""

from __future__ import annotations

import captum.attr
import torch
from captum.log import log_usage
from torch import nn

# NoiseTunnel's nt_type: how the attributions of the noisy copies are combined.
NOISE_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


def per_image_sigma(inputs: torch.Tensor, level: float) -> torch.Tensor:
    """`level` times each image's value range (max - min), shaped to broadcast over the image."""
    spread = inputs.flatten(1).amax(1) - inputs.flatten(1).amin(1)
    return (level * spread).view(-1, *[1] * (inputs.ndim - 1))


def check_noise(type: str, n_samples: int, noise_level: float, samples_per_pass: int) -> None:
    """ValueError (one line) unless the values make a noise ensemble."""
    if type not in NOISE_TYPES:
        raise ValueError(f"type must be one of {NOISE_TYPES}, got {type!r}")
    if n_samples < 1 or samples_per_pass < 1:
        raise ValueError(
            f"n_samples and samples_per_pass must be >= 1, got {n_samples} and {samples_per_pass}"
        )
    if noise_level < 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}")


class _CaptumAttribution(captum.attr.Attribution):
    """Any attribution with Captum's `attribute(inputs, target=...)` (a roar class, a user's function) as the
    Captum `Attribution` NoiseTunnel wraps: NoiseTunnel calls the undecorated `attribute.__wrapped__`, which
    Captum's `log_usage` decorator provides."""

    def __init__(self, attribution, model: nn.Module):
        super().__init__(model)
        self.attribution = attribution

    @log_usage()
    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        if isinstance(target, torch.Tensor) and target.numel() == 1:
            # NoiseTunnel repeats a target of several images with their copies, but passes the target of a
            # one-image batch as it is, which not every method broadcasts over the copies.
            target = target.reshape(1).expand(len(inputs))
        # NoiseTunnel calls the method under torch.no_grad(): Captum's gradient methods turn gradients back
        # on themselves, roar's own and a user's need not.
        with torch.enable_grad():
            return self.attribution.attribute(inputs.detach().requires_grad_(), target=target)


class _SeededNoiseTunnel(captum.attr.NoiseTunnel):
    """Captum's NoiseTunnel drawing its noise from `generator`, with one sigma per image."""

    def __init__(self, attribution: captum.attr.Attribution, generator: torch.Generator):
        super().__init__(attribution)
        self.generator = generator

    def _add_noise_to_input(self, input: torch.Tensor, stdev: torch.Tensor, nt_samples_partition: int):
        """`nt_samples_partition` noisy copies of every image, each image's copies next to each other (the
        layout NoiseTunnel expands targets to and reduces over); `stdev` holds one sigma per image."""
        copies = [
            torch.randn(input.shape, generator=self.generator, dtype=input.dtype)
            for _ in range(nt_samples_partition)
        ]
        noise = torch.stack(copies, dim=1).to(input.device) * stdev.unsqueeze(1)
        return input.repeat_interleave(nt_samples_partition, dim=0) + noise.flatten(0, 1)


class NoiseEnsemble:
    """`attribution`'s attributions over `n_samples` noisy copies of each image (noise std: `noise_level`
    times the image's max - min), combined as `type` says: their mean (smoothgrad), mean square
    (smoothgrad_sq) or variance (vargrad). `samples_per_pass` copies of the batch go through the method at
    a time."""

    def __init__(
        self,
        attribution,
        model: nn.Module,
        type: str,
        n_samples: int = 25,
        noise_level: float = 0.15,
        seed: int = 0,
        samples_per_pass: int = 1,
    ):
        check_noise(type, n_samples, noise_level, samples_per_pass)
        if getattr(attribution, "uses_ground_truth", False):
            raise ValueError("the oracle's maps are the dataset's ground truth, which no noise moves")
        self.type, self.n_samples, self.noise_level = type, n_samples, noise_level
        self.samples_per_pass = samples_per_pass
        # One stream per method object, drawn on the CPU (as random's and SmoothFullGrad's): the same seed
        # gives the same maps on any device.
        generator = torch.Generator().manual_seed(seed)
        self.tunnel = _SeededNoiseTunnel(_CaptumAttribution(attribution, model), generator)

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        inputs = inputs.detach()
        attributions = self.tunnel.attribute(
            inputs,
            nt_type=self.type,
            nt_samples=self.n_samples,
            nt_samples_batch_size=self.samples_per_pass,
            stdevs=(per_image_sigma(inputs, self.noise_level),),
            target=target,
        )
        # NoiseTunnel's variance, E[a^2] - E[a]^2, rounds to just below 0 where the copies agree.
        return attributions.clamp_min(0) if self.type == "vargrad" else attributions


class _SignedGradient:
    """The signed input gradient df_t/dx (Captum's Saliency without its absolute value): what SmoothGrad and
    its kin combine."""

    def __init__(self, model: nn.Module):
        self.saliency = captum.attr.Saliency(model)

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        return self.saliency.attribute(inputs, target=target, abs=False)


class NoisyGradients(NoiseEnsemble):
    """A noise ensemble of the signed input gradient, its parameters at the top level of its config (as
    `smoothgrad`, `smoothgrad_sq` and `vargrad` have had them since before any method could take `noise`)."""

    TYPE: str

    def __init__(
        self,
        model: nn.Module,
        n_samples: int = 50,
        noise_level: float = 0.15,
        seed: int = 0,
        samples_per_pass: int = 1,
    ):
        gradient = _SignedGradient(model)
        super().__init__(gradient, model, self.TYPE, n_samples, noise_level, seed, samples_per_pass)


class SmoothGrad(NoisyGradients):
    """The mean gradient over the noisy copies."""

    TYPE = "smoothgrad"


class SmoothGradSquared(NoisyGradients):
    """The mean squared gradient over the noisy copies."""

    TYPE = "smoothgrad_sq"


class VarGrad(NoisyGradients):
    """The variance of the gradient over the noisy copies."""

    TYPE = "vargrad"
