"""Read back what an offline W&B run logged, from its `run-<id>.wandb` file.

The file is a LevelDB-style log (W&B's own `:W&B` header, 32 KiB blocks, records split into FULL / FIRST /
MIDDLE / LAST chunks behind a 7-byte header) of `wandb_internal_pb2.Record` protobufs; wandb >= 0.31 no
longer ships a Python reader, so this is one, over wandb's own protobuf classes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER = 32768, 7
FULL, LAST = 1, 4


def records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    position, payload = HEADER, b""
    while position + HEADER <= len(data):
        if BLOCK - position % BLOCK < HEADER:  # a block's tail too short for a header is padding
            position += BLOCK - position % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        payload += data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            yield record
            payload = b""


def run_files(run_dir: Path) -> list[Path]:
    """Every offline W&B run under `run_dir`/wandb, in the order they were started."""
    return sorted(
        (run_dir / "wandb").glob("offline-run-*/run-*.wandb"),
        key=lambda p: run_info(p).start_time.ToNanoseconds(),
    )


def run_file(run_dir: Path) -> Path:
    """The job's (or roar-report's) offline W&B run under `run_dir`/wandb: the one that is not a seed run."""
    (path,) = [p for p in run_files(run_dir) if run_info(p).job_type != "seed"]
    return path


def seed_runs(run_dir: Path) -> list[Path]:
    """The seed runs (`roar.report.SeedCurves`) under `run_dir`/wandb."""
    return [p for p in run_files(run_dir) if run_info(p).job_type == "seed"]


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def history(path: Path) -> list[dict]:
    """Every `log` call of the run: {key: value}."""
    return [_items(r.history.item) for r in records(path) if r.WhichOneof("record_type") == "history"]


def run_info(path: Path) -> wandb_internal_pb2.RunRecord:
    return next(r.run for r in records(path) if r.WhichOneof("record_type") == "run")


def step_metrics(path: Path) -> dict[str, str]:
    """metric -> the metric it is plotted against, as the run defined them (`define_metric`)."""
    return {r.metric.name: r.metric.step_metric for r in records(path)
            if r.WhichOneof("record_type") == "metric" and r.metric.name}  # fmt: skip


def config(path: Path) -> dict:
    """The run's configuration, as logged: given to `wandb.init` (in the run record), then updated (later
    updates win; W&B's own entries under `_wandb/`)."""
    values = {}
    for r in records(path):
        if r.WhichOneof("record_type") == "run":
            values |= _items(r.run.config.update)
        elif r.WhichOneof("record_type") == "config":
            values |= _items(r.config.update)
    return values
