"""Run every benchmark module listed in BENCHMARKS (or those named on the command line), print its rows and
record them in benchmarks/results.jsonl (benchmarks/results.py), replacing that module's earlier records."""

from __future__ import annotations

import importlib
import sys

import torch

from benchmarks import results

# Each module has run() -> list of printable rows.
BENCHMARKS: list[str] = [
    "fullgrad", "baselines", "road", "training", "threads", "datapath", "cifar", "quantus", "storage", "gpu",
]  # fmt: skip


def main(names: list[str]) -> None:
    threads = torch.get_num_threads()
    for name in names or BENCHMARKS:
        torch.set_num_threads(threads)  # a module may change it for its own rows
        module = importlib.import_module(f"benchmarks.{name}")
        where = results.context(threads)  # the load average as the module starts, before its own threads
        print(f"== {name}")
        rows = module.run()
        for row in rows:
            print(row)
        # Module by module: a crash in a later module keeps the rows measured before it.
        results.replace_module(name, results.records(name, rows, where))


if __name__ == "__main__":
    main(sys.argv[1:])
