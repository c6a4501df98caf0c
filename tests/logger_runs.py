"""Reading back what sesemi's MLflow and W&B loggers wrote, with each tool's own client or file format."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conftest import read_json


def mlflow_run(run_dir: Path) -> tuple[Any, Any]:
    """The MLflow client of a run dir's tracking store and its MLflow run (the ids kept in ``loggers.json``)."""
    from mlflow import MlflowClient

    kept = read_json(run_dir / "loggers.json")["mlflow"]
    client = MlflowClient(kept["tracking_uri"])
    return client, client.get_run(kept["run_id"])


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of a W&B run file (``run-<id>.wandb``): a LevelDB-style log of 32 KiB blocks, each record a
    7-byte header (checksum, length, type: full, first, middle, last) and a piece of a ``Record`` protobuf."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, path
    block, pos, parts = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # a block's zero-filled tail
            pos += left
            continue
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, or the last piece
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def _key(item: Any) -> str:
    """A history or config item's key: W&B stores some as a path of parts (``nested_key``)."""
    return item.key or "/".join(item.nested_key)


def wandb_history(run_dir: Path) -> tuple[set[str], list[dict], dict]:
    """The W&B offline runs of a run dir, attempt after attempt: their run ids, history rows and config."""
    ids, rows, config = set(), [], {}
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.add(record.run.run_id)
            elif kind == "history":
                rows.append({_key(item): json.loads(item.value_json) for item in record.history.item})
            elif kind == "config":
                config.update({_key(item): json.loads(item.value_json) for item in record.config.update})
    return ids, rows, config


def steps_of(rows: list[dict], key: str) -> list[int]:
    """The ``trainer/global_step`` of each W&B history row that has ``key``, in the order they were logged."""
    return [row["trainer/global_step"] for row in rows if key in row]
