"""Compare the figure summaries the scripts regenerated with the committed ones (`make figures-check`).

    python -m scripts.figures.compare COMMITTED REGENERATED     # e.g. docs/ and a temporary directory

Every summary file (`*.summary.md`, `agreement_*.md`) in either directory must be in both, and every figure
(`*.png`) a script writes must be committed. Two summaries agree when their text outside the numbers is
identical and every number is within one unit of its last printed digit (1e-4 for `0.4174`, 0.01 for
`0.87`; integers, such as ranks and seed counts, exactly). Why that tolerance: on the same machine and
thread count a run is deterministic, so a regenerated summary is identical to the byte; where the floats
underneath differ only in their last bits (another CPU's kernels), a value can still round to the
neighbouring printed digit, and nothing less than one unit of that digit separates such a change from a
real one. A real change — other maps, another training, a number edited by hand by more than that — fails.
Retraining amplifies float differences far beyond the last bit, though: one thread instead of two moves
the digits FullGrad perturbation AUC from 0.4174 to 0.4126, so the check holds for the machine class and
thread count the figures were made with (the scripts pin two threads), not across arbitrary CPUs.
The PNGs are not compared: their pixels depend on matplotlib's version, and they draw the numbers checked.
"""

from __future__ import annotations

import re
import sys
from decimal import Decimal
from pathlib import Path

SUMMARIES = ("*.summary.md", "agreement_*.md")
# A number as the reports print it: -0.2800, −0.47 (a typographic minus), 0.962, 1.8e-07, 3.
NUMBER = re.compile(r"[-−]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _value(token: str) -> Decimal:
    return Decimal(token.replace("−", "-"))


def _unit(token: str) -> Decimal:
    """One unit of the token's last printed digit (1e-4 for 0.4174, 1e-8 for 1.8e-07); 0 for an integer
    (a rank, a count of seeds or replicates: those are exact)."""
    mantissa, _, exponent = token.partition("e")
    decimals = len(mantissa.partition(".")[2])
    if not decimals and not exponent:
        return Decimal(0)
    return Decimal(1).scaleb(-decimals + int(exponent or 0))


def _tokens(text: str) -> tuple[list[str], list[str]]:
    """The text between the numbers (one more piece than numbers), and the numbers."""
    return NUMBER.split(text), NUMBER.findall(text)


def compare_text(committed: str, regenerated: str) -> list[str]:
    """What differs, line by line: text outside the numbers, or a number beyond one unit of its last digit."""
    differences = []
    old_lines, new_lines = committed.splitlines(), regenerated.splitlines()
    if len(old_lines) != len(new_lines):
        differences.append(f"{len(old_lines)} lines committed, {len(new_lines)} regenerated")
    for number, (old, new) in enumerate(zip(old_lines, new_lines), start=1):
        (old_text, old_numbers), (new_text, new_numbers) = _tokens(old), _tokens(new)
        if old_text != new_text:
            differences.append(f"line {number}: text differs:\n  committed:   {old}\n  regenerated: {new}")
            continue
        for a, b in zip(old_numbers, new_numbers):
            if abs(_value(a) - _value(b)) > max(_unit(a), _unit(b)):
                differences.append(f"line {number}: {a} committed, {b} regenerated:\n  committed:   {old}\n"
                                   f"  regenerated: {new}")  # fmt: skip
                break
    return differences


def compare_directories(committed: Path, regenerated: Path) -> list[str]:
    """Every difference between the committed summaries and figures and the regenerated ones."""

    def summaries(directory: Path) -> set[str]:
        return {path.name for pattern in SUMMARIES for path in directory.glob(pattern)}

    problems = []
    old, new = summaries(committed), summaries(regenerated)
    problems += [f"{name}: committed, but no figure script writes it" for name in sorted(old - new)]
    problems += [f"{name}: regenerated, but not committed" for name in sorted(new - old)]
    uncommitted = [p.name for p in sorted(regenerated.glob("*.png")) if not (committed / p.name).exists()]
    problems += [f"{name}: regenerated, but not committed" for name in uncommitted]
    for name in sorted(old & new):
        differences = compare_text((committed / name).read_text(), (regenerated / name).read_text())
        problems += [f"{name}: {difference}" for difference in differences]
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    committed, regenerated = map(Path, argv)
    problems = compare_directories(committed, regenerated)
    for problem in problems:
        print(problem)
    compared = len({p.name for pattern in SUMMARIES for p in regenerated.glob(pattern)})
    if problems:
        print(f"figures-check: {len(problems)} difference(s) between {committed} and {regenerated}; "
              f"`make figures` republishes them")  # fmt: skip
        return 1
    print(f"figures-check: {compared} summaries of {committed} agree with {regenerated}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
