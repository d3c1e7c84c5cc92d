"""Run every benchmark module listed in BENCHMARKS (or those named on the command line) and print its rows."""

from __future__ import annotations

import importlib
import sys

# Each module has run() -> list of printable rows; modules are added as the benchmarks are written.
BENCHMARKS: list[str] = ["fullgrad", "baselines", "road", "training", "datapath"]


def main(names: list[str]) -> None:
    for name in names or BENCHMARKS:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"== {name}")
        for row in module.run():
            print(row)
    if not (names or BENCHMARKS):
        print("no benchmarks registered yet")


if __name__ == "__main__":
    main(sys.argv[1:])
