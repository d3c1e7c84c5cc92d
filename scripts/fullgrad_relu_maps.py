"""Regenerate tests/saliency/fullgrad_relu_maps.pt: the FullGrad maps of the implementation before implicit
biases, which the ReLU networks' maps must still equal (tests/saliency/test_fullgrad_implicit.py).

    .venv/bin/python -m scripts.fullgrad_relu_maps [COMMIT]      # default 21b9b08, the test names it

The models and batches are the test's own (tests.saliency.test_fullgrad: model_named, random_batch, targets
arange % 3), built here with the current code and handed, pickled, to a process that imports `roar` from
COMMIT's tree (`git archive`, so the clone needs that commit's history) and computes, with one thread as the
test does: FullGrad (layer and channel rescale), SimpleFullGrad, SmoothFullGrad with 2 samples, and
FullGrad's completeness delta. The file then holds that commit's maps on the machine the script ran on;
another CPU's float32 kernels give slightly other values, which the test's tolerances allow for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "tests" / "saliency" / "fullgrad_relu_maps.pt"
COMMIT = "21b9b08"
NAMES = ("small_cnn", "resnet18", "vgg11_bn")

# Runs with COMMIT's roar first on sys.path: argv[1] the pickled inputs, argv[2] the output file.
OLD_MAPS = """
import sys
import torch
from roar.saliency import FullGrad, SimpleFullGrad, SmoothFullGrad

torch.set_num_threads(1)
maps = {}
for name, (model, x, target) in torch.load(sys.argv[1], weights_only=False).items():
    maps[f"{name}/fullgrad"] = FullGrad(model).attribute(x, target)
    maps[f"{name}/fullgrad_channel"] = FullGrad(model, rescale="channel").attribute(x, target)
    maps[f"{name}/simple_fullgrad"] = SimpleFullGrad(model).attribute(x, target)
    maps[f"{name}/smooth_fullgrad"] = SmoothFullGrad(model, num_samples=2).attribute(x, target)
    maps[f"{name}/delta"] = FullGrad(model).attribute(x, target, return_convergence_delta=True)[1]
torch.save({key: value.detach() for key, value in maps.items()}, sys.argv[2])
"""


def inputs() -> dict[str, tuple]:
    """The test's models, batches and targets."""
    from tests.saliency.test_fullgrad import model_named, random_batch

    batches = {name: random_batch(name) for name in NAMES}
    return {name: (model_named(name), x, torch.arange(len(x)) % 3) for name, x in batches.items()}


def regenerate(commit: str = COMMIT, output: Path = OUTPUT) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", commit, "roar"], cwd=REPO, capture_output=True,
                                 check=True)  # fmt: skip
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        pickled = Path(tmp) / "inputs.pt"
        torch.save(inputs(), pickled)
        # The old tree alone on PYTHONPATH, and not run from the checkout: `import roar` must find COMMIT's.
        env = {**os.environ, "PYTHONPATH": tmp, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-c", OLD_MAPS, str(pickled), str(output)], cwd=tmp, env=env,
                       check=True)  # fmt: skip
    print(f"wrote {output}: the maps of {commit}")


if __name__ == "__main__":
    regenerate(*sys.argv[1:2])
