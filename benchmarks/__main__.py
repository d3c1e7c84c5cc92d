"""Run every benchmark module listed in BENCHMARKS (or those named on the command line) and print its rows."""

from __future__ import annotations

import importlib
import sys

import torch

# Each module has run() -> list of printable rows.
BENCHMARKS: list[str] = [
    "fullgrad", "baselines", "road", "training", "threads", "datapath", "cifar", "quantus", "storage", "gpu",
]  # fmt: skip


def main(names: list[str]) -> None:
    threads = torch.get_num_threads()
    for name in names or BENCHMARKS:
        torch.set_num_threads(threads)  # a module may change it for its own rows
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"== {name}")
        for row in module.run():
            print(row)


if __name__ == "__main__":
    main(sys.argv[1:])
