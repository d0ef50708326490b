"""Work units and the run's identity, stored with the dataset so reruns resume exactly.

A *unit* is a fixed list of inputs that becomes one shard and commits as a whole: exactly-once
means "every unit committed exactly once". The plan (unit -> inputs) is written to the dataset
on the first run and read back on every rerun, so a changed listing can never reshuffle which
inputs belong to a committed shard.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.sources import InputItem

PLAN_FILE = "plan.parquet"
RUN_FILE = "run.json"


@dataclass(frozen=True)
class Unit:
    index: int  # shard number
    items: tuple[InputItem, ...]

    @property
    def input_bytes(self) -> int:
        return sum(item.size_bytes for item in self.items)


def make_units(items: list[InputItem], inputs_per_shard: int, shard_input_bytes: int) -> list[Unit]:
    """Consecutive groups of at most `inputs_per_shard` inputs and about `shard_input_bytes` of files.

    A container (a WebDataset tar of many inputs) is a unit of its own: it is read as one stream.
    """
    units: list[Unit] = []
    current: list[InputItem] = []
    size = 0
    for item in items:
        full = len(current) >= inputs_per_shard or size + item.size_bytes > shard_input_bytes
        if current and (full or item.container or current[-1].container):
            units.append(Unit(len(units), tuple(current)))
            current, size = [], 0
        current.append(item)
        size += item.size_bytes
    if current:
        units.append(Unit(len(units), tuple(current)))
    return units


def plan_table(units: list[Unit]) -> pa.Table:
    rows = [
        {
            "unit": unit.index,
            "key": item.key,
            "location": item.location,
            "start": item.start,
            "end": item.end,
            "size_bytes": item.size_bytes,
            "metadata": json.dumps(item.metadata, sort_keys=True),
            "container": item.container,
        }
        for unit in units
        for item in unit.items
    ]
    schema = pa.schema(
        [
            ("unit", pa.int64()),
            ("key", pa.string()),
            ("location", pa.string()),
            ("start", pa.float64()),
            ("end", pa.float64()),
            ("size_bytes", pa.int64()),
            ("metadata", pa.string()),
            ("container", pa.string()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def units_from_table(table: pa.Table) -> list[Unit]:
    grouped: dict[int, list[InputItem]] = {}
    for row in table.to_pylist():
        item = InputItem(
            key=row["key"],
            location=row["location"],
            start=row["start"],
            end=row["end"],
            size_bytes=row["size_bytes"],
            metadata=json.loads(row["metadata"]),
            container=row.get("container"),
        )
        grouped.setdefault(row["unit"], []).append(item)
    return [Unit(index, tuple(grouped[index])) for index in sorted(grouped)]


def write_plan(fs: Any, root: str, units: list[Unit]) -> None:
    """Store the plan atomically (written aside, then moved into place)."""
    tmp = f"{root}/.{PLAN_FILE}.tmp"
    with fs.open(tmp, "wb") as handle:
        pq.write_table(plan_table(units), handle)
    fs.mv(tmp, f"{root}/{PLAN_FILE}")


def read_plan(fs: Any, root: str) -> list[Unit] | None:
    path = f"{root}/{PLAN_FILE}"
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as handle:
        return units_from_table(pq.read_table(handle))


@dataclass(frozen=True)
class RunIdentity:
    """What makes two runs write the same samples; a rerun must match it to resume."""

    tokenizer: dict[str, Any]  # schemas.card.TokenizerIdentity as a dict
    seed: int | None  # initialisation of an untrained model; None with a checkpoint
    fields: dict[str, Any]
    segment: dict[str, Any]

    def differences(self, other: RunIdentity) -> list[str]:
        """Human-readable list of what differs, e.g. "checkpoint_sha256: 1a2b... != 3c4d..."."""
        mine, theirs = asdict(self), asdict(other)
        return [
            f"{name}: {mine[name]!r} (existing) != {theirs[name]!r} (this run)"
            for name in mine
            if mine[name] != theirs[name]
        ]


def write_identity(fs: Any, root: str, identity: RunIdentity) -> None:
    with fs.open(f"{root}/{RUN_FILE}", "w") as handle:
        json.dump(asdict(identity), handle, indent=2, sort_keys=True)


def read_identity(fs: Any, root: str) -> RunIdentity | None:
    path = f"{root}/{RUN_FILE}"
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as handle:
        return RunIdentity(**json.load(handle))
