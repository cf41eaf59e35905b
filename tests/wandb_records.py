"""Read back what wandb wrote offline: `run-*.wandb` is a LevelDB-style log of protobuf Records.

Framing: a 7-byte file header (":W&B", magic, version), then 32 KiB blocks of records, each with
a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last); a block tail shorter
than a header is zero padding.
"""

import json
import struct
from pathlib import Path

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a wandb data file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        space = BLOCK - pos % BLOCK
        if space < HEADER:
            pos += space
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0:  # zero padding up to the next block
            pos += space
            continue
        if pos + HEADER + length > len(data):
            return  # a record still being written
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk


def records(path: Path):
    from wandb.proto import wandb_internal_pb2

    for raw in raw_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def history(path: Path) -> list[dict]:
    """Every logged row, as {key: value}."""
    return [
        {_key(item): json.loads(item.value_json) for item in r.history.item}
        for r in records(path)
        if r.WhichOneof("record_type") == "history"
    ]


def summary(path: Path) -> dict:
    out = {}
    for r in records(path):
        if r.WhichOneof("record_type") == "summary":
            for item in r.summary.update:
                out[_key(item)] = json.loads(item.value_json)
    return out


def config(path: Path) -> dict:
    out = {}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        updates = r.config.update if kind == "config" else r.run.config.update if kind == "run" else []
        for item in updates:
            out[_key(item)] = json.loads(item.value_json)
    return out


def run_file(folder: Path, timeout: float = 60.0) -> Path:
    """The run's data file, once wandb's service has written its final (exit) record."""
    import time

    (path,) = Path(folder).glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.monotonic() + timeout
    while not any(r.WhichOneof("record_type") == "exit" for r in records(path)):
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout} s"
        time.sleep(0.2)
    return path
