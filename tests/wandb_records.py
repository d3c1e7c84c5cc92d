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


def run_file(run_dir: Path) -> Path:
    """The single offline W&B run under `run_dir`/wandb."""
    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    return path


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def history(path: Path) -> list[dict]:
    """Every `log` call of the run: {key: value}."""
    return [_items(r.history.item) for r in records(path) if r.WhichOneof("record_type") == "history"]


def run_info(path: Path) -> wandb_internal_pb2.RunRecord:
    return next(r.run for r in records(path) if r.WhichOneof("record_type") == "run")


def config(path: Path) -> dict:
    """The run's configuration, as logged (later updates win; W&B's own entries under `_wandb/`)."""
    values = {}
    for r in records(path):
        if r.WhichOneof("record_type") == "config":
            values |= _items(r.config.update)
    return values
