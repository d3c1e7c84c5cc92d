"""FullGrad against its floor: one forward + input-gradient backward on the same batch.

CIFAR-sized inputs (64 x 3 x 32 x 32, two CPU threads), torchvision's vgg11_bn (classifier resized for
512 x 1 x 1 features) and resnet18, 10 classes, random weights. Targets: time and peak memory <= 1.3x
the floor's. Networks with implicit biases (convnext_tiny, efficientnet_b0, a small ViT: MODERN_MODELS)
on 32 x 3 x 64 x 64: targets time <= 2.5x and peak memory <= 1.5x the floor's (an implicit bias costs
one forward-mode product of its unit).

Time: the methods run interleaved (floor, FullGrad, floor, FullGrad, ...) after warm-up; the ratio is of
the medians of wall time. On a shared machine other processes inflate every wall time, and a method with
more parallel regions more (each waits for both threads to be scheduled), so the bench also reports the
ratio of CPU time with one thread: the work done, which other processes barely change.

Memory: peak RSS of one call above the resident set before it, in a fresh process per measurement
(benchmarks/measure.py).

The authors' algorithm is re-implemented (not copied) for reference: module backward hooks paired with
biases by registration order, psi on every layer tensor, every channel upsampled before the sum.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.measure import (
    BATCH,
    MODELS,
    MODERN_BATCH,
    MODERN_MODELS,
    MODERN_SHAPE,
    SHAPE,
    THREADS,
    batch,
    build_model,
    floor,
    interleaved_medians,
    main,
    peak_memory_mib,
)
from roar.saliency import FullGrad
from roar.saliency.decomposition import effective_bias

REPEATS = 15
AUTHORS_REPEATS = 3
TARGET_RATIO = 1.3
MODERN_REPEATS = 7
MODERN_TARGETS = (2.5, 1.5)  # time, peak memory
WALL, CPU = 0, 1  # the clocks of interleaved_medians


def fullgrad(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return FullGrad(model).attribute(x, target=target)


def authors_fullgrad(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The authors' algorithm: gradients collected by module backward hooks in backward order, paired
    with the biases of `model.modules()` reversed; psi per layer tensor; every channel upsampled."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    biases = [b for b in map(effective_bias, layers) if b is not None]
    grads: list[torch.Tensor] = []
    # Module (non-full) backward hooks, as the authors: full ones reject ReLU(inplace=True).
    hooks = [m.register_backward_hook(lambda m, gi, go: grads.append(go[0])) for m in layers
             if effective_bias(m) is not None]  # fmt: skip
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*non-full backward hook.*")
            x = x.detach().requires_grad_(True)
            logits = model(x)
            (input_grad,) = torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), x)
    finally:
        for hook in hooks:
            hook.remove()

    def psi(t):
        t = t.abs()
        t = t - t.flatten(1).amin(1).view(-1, *[1] * (t.ndim - 1))
        return t / (t.flatten(1).amax(1).view(-1, *[1] * (t.ndim - 1)) + 1e-6)

    cam = psi(input_grad * x).sum(1, keepdim=True)
    for grad, bias in zip(reversed(grads), biases):
        if grad.ndim == 4:
            term = psi(grad * bias.view(1, -1, 1, 1))
            cam += F.interpolate(term, size=SHAPE[1:], mode="bilinear", align_corners=True).sum(1, True)
    return cam


METHODS = {"floor": floor, "fullgrad": fullgrad, "authors": authors_fullgrad}


def _ratio(medians: dict[str, tuple[float, float]], name: str, clock: int) -> float:
    return medians[name][clock] / medians["floor"][clock]


def run() -> list[str]:
    rows = [f"batch {BATCH}x{'x'.join(map(str, SHAPE))}, {THREADS} threads, medians of {REPEATS} interleaved "
            f"runs (the authors': {AUTHORS_REPEATS}); memory: peak RSS above the pre-call baseline, fresh "
            f"process per measurement; load average at start {os.getloadavg()[0]:.1f}"]  # fmt: skip
    for name in MODELS:
        model, (x, target) = build_model(name), batch()
        torch.testing.assert_close(  # the bench times the same maps the tests check
            fullgrad(model, x, target), authors_fullgrad(model, x, target), rtol=1e-4, atol=1e-4
        )
        torch.set_num_threads(THREADS)
        medians = interleaved_medians(model, {"floor": floor, "fullgrad": fullgrad}, REPEATS)
        reference = interleaved_medians(model, {"floor": floor, "authors": authors_fullgrad}, AUTHORS_REPEATS)
        # One thread's CPU time: the work done, insensitive to other processes on a shared machine.
        torch.set_num_threads(1)
        one_thread = interleaved_medians(model, {"floor": floor, "fullgrad": fullgrad}, REPEATS)
        memory = {method: peak_memory_mib(__name__, name, method) for method in ("floor", "fullgrad")}
        time_ratio, memory_ratio = _ratio(medians, "fullgrad", WALL), memory["fullgrad"] / memory["floor"]
        verdict = "ok" if max(time_ratio, memory_ratio) <= TARGET_RATIO else f"MISSES {TARGET_RATIO}x"
        rows += [
            f"{name}: floor {1e3 * medians['floor'][WALL]:.1f} ms, {memory['floor']:.1f} MiB | "
            f"fullgrad {1e3 * medians['fullgrad'][WALL]:.1f} ms, {memory['fullgrad']:.1f} MiB",
            f"{name}: fullgrad / floor: time {time_ratio:.2f}x, peak memory {memory_ratio:.2f}x "
            f"(target <= {TARGET_RATIO}x: {verdict}); 1-thread CPU time "
            f"{_ratio(one_thread, 'fullgrad', CPU):.2f}x; authors' algorithm: time "
            f"{_ratio(reference, 'authors', WALL):.1f}x",
        ]
    return rows + modern_rows()


def modern_rows(names=MODERN_MODELS) -> list[str]:
    """FullGrad against its floor on the networks with implicit biases."""
    rows = [f"batch {MODERN_BATCH}x{'x'.join(map(str, MODERN_SHAPE))}, {THREADS} threads, medians of "
            f"{MODERN_REPEATS} interleaved runs; load average at start {os.getloadavg()[0]:.1f}"]  # fmt: skip
    time_target, memory_target = MODERN_TARGETS
    for name in names:
        model = build_model(name)
        torch.set_num_threads(THREADS)
        medians = interleaved_medians(
            model, {"floor": floor, "fullgrad": fullgrad}, MODERN_REPEATS, model_name=name
        )
        torch.set_num_threads(1)
        one_thread = interleaved_medians(
            model, {"floor": floor, "fullgrad": fullgrad}, MODERN_REPEATS, model_name=name
        )
        memory = {method: peak_memory_mib(__name__, name, method) for method in ("floor", "fullgrad")}
        time_ratio, memory_ratio = _ratio(medians, "fullgrad", WALL), memory["fullgrad"] / memory["floor"]
        verdict = "ok" if time_ratio <= time_target and memory_ratio <= memory_target else "MISSES"
        rows += [
            f"{name}: floor {1e3 * medians['floor'][WALL]:.1f} ms, {memory['floor']:.1f} MiB | "
            f"fullgrad {1e3 * medians['fullgrad'][WALL]:.1f} ms, {memory['fullgrad']:.1f} MiB",
            f"{name}: fullgrad / floor: time {time_ratio:.2f}x, peak memory {memory_ratio:.2f}x (targets <= "
            f"{time_target}x, {memory_target}x: {verdict}); 1-thread CPU time "
            f"{_ratio(one_thread, 'fullgrad', CPU):.2f}x; load average at the end {os.getloadavg()[0]:.1f}",
        ]
    return rows


if __name__ == "__main__":
    main(METHODS.get, run)
