"""FullGrad against its floor: one forward + input-gradient backward on the same batch.

CIFAR-sized inputs (64 x 3 x 32 x 32, two CPU threads), torchvision's vgg11_bn (classifier resized for
512 x 1 x 1 features) and resnet18, 10 classes, random weights. Targets: time and peak memory <= 1.3x
the floor's.

Time: the methods run interleaved (floor, FullGrad, floor, FullGrad, ...) after warm-up; the ratio is of
the medians of wall time. On a shared machine other processes inflate every wall time, and a method with
more parallel regions more (each waits for both threads to be scheduled), so the bench also reports the
ratio of CPU time with one thread: the work done, which other processes barely change.

Memory: every measurement runs in a fresh process (`python -m benchmarks.fullgrad MODEL METHOD`) that
builds the model and batch, runs the method once to warm up, records its resident set, resets the
kernel's peak-RSS counter (/proc/self/clear_refs), runs the method again and reports peak RSS minus that
baseline. glibc's mmap threshold is pinned (MALLOC_MMAP_THRESHOLD_) so that freed tensors go
back to the kernel and the warm-up cannot pre-pay the measured run's memory.

The authors' algorithm is re-implemented (not copied) for reference: module backward hooks paired with
biases by registration order, psi on every layer tensor, every channel upsampled before the sum.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from roar.saliency import FullGrad
from roar.saliency.fullgrad import effective_bias

BATCH, SHAPE, THREADS, CLASSES = 64, (3, 32, 32), 2, 10
MODELS = ("vgg11_bn", "resnet18")
REPEATS = 15
AUTHORS_REPEATS = 3
TARGET_RATIO = 1.3
WALL, CPU = 0, 1  # the clocks of _interleaved_medians


def build_model(name: str) -> nn.Module:
    """torchvision's `name` for 3 x 32 x 32 inputs and 10 classes, random weights, in eval mode."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=CLASSES)
    if name.startswith("vgg"):  # 32x32 inputs leave 512x1x1 features
        model.avgpool = nn.Identity()
        model.classifier[0] = nn.Linear(512, model.classifier[0].out_features)
    for m in model.modules():  # non-trivial batch-norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, *SHAPE, generator=generator), torch.arange(BATCH) % CLASSES


def floor(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One forward pass and the backward pass of the target logits to the input."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    return torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), x)[0]


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


def _interleaved_medians(model, x, target, names: list[str], repeats: int) -> dict[str, tuple[float, float]]:
    """name -> (median wall seconds, median CPU seconds of the process) over `repeats` interleaved runs."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for name in names:  # warm-up
        METHODS[name](model, x, target)
    for _ in range(repeats):
        for name in names:
            wall, cpu = time.perf_counter(), time.process_time()
            METHODS[name](model, x, target)
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: tuple(statistics.median(column) for column in zip(*t)) for name, t in times.items()}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_memory_mib(model_name: str, method: str) -> float:
    """Peak RSS of one call of `method` above the process's resident set before it, in a fresh process."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "OMP_NUM_THREADS": str(THREADS)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.fullgrad", model_name, method],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(done.stdout.split()[-1])


def _measure_memory_here(model_name: str, method: str) -> None:
    torch.set_num_threads(THREADS)
    model, (x, target) = build_model(model_name), batch()
    METHODS[method](model, x, target)
    baseline = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak resident set, to the current one
    METHODS[method](model, x, target)
    print((_status_kib("VmHWM") - baseline) / 1024)


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
        medians = _interleaved_medians(model, x, target, ["floor", "fullgrad"], REPEATS)
        reference = _interleaved_medians(model, x, target, ["floor", "authors"], AUTHORS_REPEATS)
        # One thread's CPU time: the work done, insensitive to other processes on a shared machine.
        torch.set_num_threads(1)
        one_thread = _interleaved_medians(model, x, target, ["floor", "fullgrad"], REPEATS)
        memory = {method: peak_memory_mib(name, method) for method in ("floor", "fullgrad")}
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
    return rows


if __name__ == "__main__":
    _measure_memory_here(*sys.argv[1:])
