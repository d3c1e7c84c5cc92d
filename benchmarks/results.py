"""The rows `make bench` measured, as data: benchmarks/results.jsonl, one JSON record per printed row.

Each record holds the module, the row as the module printed it, and where and when it was measured: the
commit (and whether tracked files differed from it), the date (UTC), the CPU model, its cores, torch's thread
count, the load average (1, 5 and 15 minutes) when the module started, and the GPU where CUDA was visible.
Running a module replaces that module's records and keeps every other module's, so the file always holds
the latest run of each. Rows that say `skipped: ...` (no CUDA device, no CIFAR-10 images) are printed but not
recorded: a row not measured is simply not in the file.

The docs quote a row between two markers, `<!-- bench MODULE: SELECTOR -->FIGURE<!-- /bench -->` (HTML
comments: a rendered page shows FIGURE alone; no `|`, which would split a table's cell). SELECTOR is a piece
of text found in exactly one of MODULE's rows, and every number of FIGURE must appear in that row. While
MODULE has no records, FIGURE must begin with `not measured`. tests/docs/test_bench_figures.py checks every
quote in the README and docs/ against the committed file (`check_quote`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("results.jsonl")
REPO = Path(__file__).resolve().parent.parent
SKIPPED = "skipped: "
NOT_MEASURED = "not measured"
FIELDS = ("module", "row", "commit", "dirty", "date", "cpu", "cores", "threads", "load_average")
QUOTE = re.compile(r"<!-- bench (\w+): (.+?) -->(.*?)<!-- /bench -->", re.DOTALL)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))


def context(threads: int) -> dict:
    """Where and when a module is measured, taken as it starts."""
    where = {
        "commit": _git("rev-parse", "--short=12", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if torch.cuda.is_available():
        where["gpu"] = torch.cuda.get_device_name()
    return where


def records(module: str, rows: list[str], where: dict) -> list[dict]:
    """One record per measured row (rows that say they were skipped are left out)."""
    return [{"module": module, "row": row, **where} for row in rows if SKIPPED not in row]


def load(path: Path = RESULTS) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def replace_module(module: str, new: list[dict], path: Path = RESULTS) -> None:
    """Write `new` as `module`'s records: the other modules' records stay, in their order, and the module's
    take the place of its old ones (at the end if it had none)."""
    kept = load(path)
    first = next((i for i, r in enumerate(kept) if r["module"] == module), len(kept))
    others = [r for r in kept if r["module"] != module]
    position = sum(1 for r in kept[:first] if r["module"] != module)
    merged = others[:position] + new + others[position:]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in merged))


def check_quote(figure: str, module: str, selector: str, results: list[dict]) -> str | None:
    """Why a quoted figure does not match the file (None when it does)."""
    rows = [r["row"] for r in results if r["module"] == module]
    if not rows:
        if figure.strip().strip("*").startswith(NOT_MEASURED):
            return None
        return f"{figure!r} quotes {module}, which has no row in {RESULTS.name}: say {NOT_MEASURED!r}"
    matching = [row for row in rows if selector in row]
    if len(matching) != 1:
        return f"{len(matching)} rows of {module} contain {selector!r} (one expected)"
    numbers = _numbers(figure)
    if not numbers:
        return f"{figure!r}: no figure quoted from {module}'s row {matching[0]!r}"
    missing = [n for n in numbers if n not in _numbers(matching[0])]
    if missing:
        return f"{figure!r}: {', '.join(missing)} not in {module}'s row {matching[0]!r}"
    return None


def _numbers(text: str) -> list[str]:
    """The numbers of a text, thousands separators dropped (the docs write 32 800 or 10,000; rows 32800)."""
    return re.findall(r"\d+(?:\.\d+)?", re.sub(r"(?<=\d)[ ,\u2009\u202f](?=\d{3}(?!\d))", "", text))


def quotes(text: str) -> list[tuple[str, str, str]]:
    """(module, selector, figure) of every bench quote in a page, outside code (where a page shows the
    syntax itself)."""
    return QUOTE.findall(re.sub(r"`[^`\n]*`", "", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)))
