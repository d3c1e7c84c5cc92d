"""What the saliency benchmarks share: CIFAR-sized torchvision models, the floor pass, interleaved timing and
peak memory measured in a fresh process.

The floor is one forward pass and the backward pass of the target logits to the input, on the same batch:
every gradient method costs at least that.

Time: the floor and a method run interleaved (floor, method, floor, method, ...) after a warm-up call of
each, and the ratio is of the medians, so that load from other processes hits both alike.

Memory: each measurement runs in a fresh process (`python -m benchmarks.<module> --memory MODEL METHOD`)
that builds the model and the batch, calls the method once to warm up, reads its resident set (VmRSS),
resets the kernel's peak-RSS counter (writing 5 to /proc/self/clear_refs), calls the method again and
reports the peak (VmHWM) minus that baseline: the memory one call needs on top of the model, the batch and
the libraries. glibc's mmap threshold is pinned (MALLOC_MMAP_THRESHOLD_), so that freed tensors go back to
the kernel and the warm-up cannot pre-pay the measured call's memory.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torchvision
from torch import nn

BATCH, SHAPE, THREADS, CLASSES = 64, (3, 32, 32), 2, 10
MODELS = ("vgg11_bn", "resnet18")
# Networks with implicit biases (GELU, SiLU, LayerNorm, squeeze-excitation, attention), measured on a batch
# of their own: 32 x 3 x 64 x 64. vit_small: a ViT-S-sized transformer (6 layers, 384 wide, 6 heads) on
# 8 x 8 patches, 64 tokens and a class token.
MODERN_MODELS = ("convnext_tiny", "efficientnet_b0", "vit_small")
MODERN_BATCH, MODERN_SHAPE = 32, (3, 64, 64)

Call = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def build_model(name: str) -> nn.Module:
    """torchvision's `name` with random weights, 10 classes, non-trivial batch-norm statistics, eval mode."""
    torch.manual_seed(0)
    if name == "vit_small":
        model = torchvision.models.VisionTransformer(
            MODERN_SHAPE[-1], 8, num_layers=6, num_heads=6, hidden_dim=384, mlp_dim=1536, num_classes=CLASSES
        )
    else:
        model = getattr(torchvision.models, name)(num_classes=CLASSES)
    if name.startswith("vgg"):  # 32x32 inputs leave 512x1x1 features
        model.avgpool = nn.Identity()
        model.classifier[0] = nn.Linear(512, model.classifier[0].out_features)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def batch(model_name: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """The batch a model is measured on: BATCH x SHAPE, or MODERN_BATCH x MODERN_SHAPE for MODERN_MODELS."""
    size, shape = (MODERN_BATCH, MODERN_SHAPE) if model_name in MODERN_MODELS else (BATCH, SHAPE)
    generator = torch.Generator().manual_seed(1)
    return torch.randn(size, *shape, generator=generator), torch.arange(size) % CLASSES


def floor(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One forward pass and the backward pass of the target logits to the input."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    return torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), x)[0]


def interleaved_medians(
    model: nn.Module,
    calls: dict[str, Call],
    repeats: int,
    runs_per_round: dict[str, int] | None = None,
    model_name: str = "",
) -> dict[str, tuple[float, float]]:
    """name -> (median wall seconds, median CPU seconds of this process) over `repeats` interleaved rounds of
    `calls` on `batch(model_name)`, after one warm-up call of each. `runs_per_round` calls some of them
    several times a round: a cheap reference next to a slow method gets enough samples for a steady median."""
    x, target = batch(model_name)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    for call in calls.values():
        call(model, x, target)
    for _ in range(repeats):
        for name, call in calls.items():
            for _ in range((runs_per_round or {}).get(name, 1)):
                wall, cpu = time.perf_counter(), time.process_time()
                call(model, x, target)
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: tuple(statistics.median(column) for column in zip(*t)) for name, t in times.items()}


def time_ratio(model: nn.Module, method: Call, repeats: int, floor_runs: int = 1) -> tuple[float, float]:
    """(median wall seconds of `method`, that over the median wall seconds of the floor), with `floor_runs`
    floor calls in every round."""
    calls = {"floor": floor, "method": method}
    medians = interleaved_medians(model, calls, repeats, {"floor": floor_runs})
    return medians["method"][0], medians["method"][0] / medians["floor"][0]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def measure_peak_here(model: nn.Module, method: Call, model_name: str = "") -> float:
    """MiB of peak RSS one call of `method` on `batch(model_name)` adds to this process (run it in a fresh
    process)."""
    x, target = batch(model_name)
    method(model, x, target)
    baseline = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    method(model, x, target)
    return (_status_kib("VmHWM") - baseline) / 1024


def peak_memory_mib(module: str, model_name: str, method: str) -> float:
    """`measure_peak_here` for `method` on `model_name`, in a fresh `python -m module --memory` process."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "OMP_NUM_THREADS": str(THREADS)}
    done = subprocess.run(
        [sys.executable, "-m", module, "--memory", model_name, method],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(done.stdout.split()[-1])


def main(call_of: Callable[[str], Call], run: Callable[[], list[str]]) -> None:
    """A saliency benchmark module's entry point: its rows, or, with `--memory MODEL METHOD` (how
    `peak_memory_mib` calls it), the peak memory of one call of `call_of(METHOD)` on MODEL."""
    if sys.argv[1:2] == ["--memory"]:
        torch.set_num_threads(THREADS)
        _, model_name, method = sys.argv[1:]
        print(f"{measure_peak_here(build_model(model_name), call_of(method), model_name):.1f}")
    else:
        print("\n".join(run()))
