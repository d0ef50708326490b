"""Work units, the stored plan and its generations, and the run's identity.

A *unit* is a fixed list of inputs that becomes one shard and commits as a whole: exactly-once
means "every unit committed exactly once". The plan (unit -> inputs) is stored with the
dataset before any shard is written and never changed afterwards, so a changed listing can
never reshuffle which inputs belong to a committed shard.

The plan grows by *generations*. Every run lists its source afresh; the inputs whose keys the
plan does not hold yet become new units, numbered after every earlier unit, and are stored as
a new generation:

```
plan/gen-000002/part-000000.parquet   rows of whole units, sorted by unit; row groups of 4096
generations/gen-000002.json           the generation's record: the commit point of its plan
```

The driver never holds the plan in memory: inputs stream from the listing into units and
into partition files of at most `PARTITION_ROWS` rows; what an append needs of the earlier
generations is their keys' 16-byte hashes (one column); a unit reaches a worker as a
`UnitRef` (its number and its partition), and the worker reads that unit's rows alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from itertools import islice
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.sources import InputItem
from schemas.retry import RetryPolicy, call
from schemas.storage import url_to_fs

log = logging.getLogger(__name__)

PLAN_DIR = "plan"
GENERATIONS_DIR = "generations"
LEGACY_PLAN_FILE = "plan.parquet"  # the single plan file of datasets written before generations
RUN_FILE = "run.json"
PARTITION_ROWS = 65_536  # inputs per plan partition file: ~10 MB of parquet, ~60 MB as Python items
ROW_GROUP_ROWS = 4_096  # a worker reading one unit reads one or two row groups (units <= inputs_per_shard)
LISTING_BATCH = 8_192  # listed inputs hashed and looked up together (numpy, not per item)
EXAMPLES = 5  # inputs named in reports of missing or duplicated inputs

PLAN_SCHEMA = pa.schema(
    [
        ("unit", pa.int64()),
        ("key", pa.string()),
        ("key_hash", pa.binary(16)),  # blake2b-128 of the key: what appends compare
        ("location", pa.string()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("size_bytes", pa.int64()),
        ("metadata", pa.string()),
        ("container", pa.string()),
    ]
)


@dataclass(frozen=True)
class Unit:
    index: int  # shard number
    items: tuple[InputItem, ...]

    @property
    def input_bytes(self) -> int:
        return sum(item.size_bytes for item in self.items)


@dataclass(frozen=True)
class UnitRef:
    """A planned unit as it travels to a worker: its number and the plan partition holding it."""

    index: int  # shard number
    partition: str  # path of the partition file relative to the dataset root


def iter_units(
    items: Iterable[InputItem], inputs_per_shard: int, shard_input_bytes: int, first_index: int = 0
) -> Iterator[Unit]:
    """Consecutive groups of at most `inputs_per_shard` inputs and about `shard_input_bytes` of files,
    numbered from `first_index`; streams, holding one unit at a time.

    A container (a WebDataset tar of many inputs) is a unit of its own: it is read as one stream.
    """
    index, current, size = first_index, [], 0
    for item in items:
        full = len(current) >= inputs_per_shard or size + item.size_bytes > shard_input_bytes
        if current and (full or item.container or current[-1].container):
            yield Unit(index, tuple(current))
            index, current, size = index + 1, [], 0
        current.append(item)
        size += item.size_bytes
    if current:
        yield Unit(index, tuple(current))


def make_units(items: list[InputItem], inputs_per_shard: int, shard_input_bytes: int) -> list[Unit]:
    """All units of `items` at once (see iter_units), numbered from 0."""
    return list(iter_units(items, inputs_per_shard, shard_input_bytes))


def key_hashes(keys: Sequence[str]) -> np.ndarray:
    """(N,) array of dtype S16: blake2b-128 of each key.

    128 bits make a collision between two of 10^9 keys a 10^-21 event, so comparing hashes is
    comparing keys, at 16 bytes per input instead of a Python string's ~110.
    """
    return np.array([hashlib.blake2b(k.encode(), digest_size=16).digest() for k in keys], dtype="S16")


def plan_table(units: Iterable[Unit]) -> pa.Table:
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
    hashes = key_hashes([r["key"] for r in rows])
    for row, digest in zip(rows, hashes, strict=True):
        row["key_hash"] = bytes(digest).ljust(16, b"\0")  # numpy S16 drops trailing NULs
    return pa.Table.from_pylist(rows, schema=PLAN_SCHEMA)


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


def write_partition(fs: Any, path: str, units: Sequence[Unit]) -> None:
    """One plan partition (whole units, in unit order), written aside and moved into place."""
    fs.makedirs(path.rpartition("/")[0], exist_ok=True)
    tmp = f"{path.rpartition('/')[0]}/.{path.rpartition('/')[2]}.tmp"
    with fs.open(tmp, "wb") as handle:
        pq.write_table(plan_table(units), handle, row_group_size=ROW_GROUP_ROWS)
    fs.mv(tmp, path)


def load_unit(
    partition_url: str, storage_options: dict[str, Any], index: int, policy: RetryPolicy | None = None
) -> Unit:
    """Worker side: unit `index` read from its plan partition (only the row groups that hold it),
    retried whole on a transient storage error."""
    fs, path = url_to_fs(partition_url, storage_options, policy)

    def read() -> pa.Table:
        with fs.open(path, "rb") as handle:
            return pq.read_table(handle, filters=[("unit", "=", index)], use_threads=False)

    table = call(read, f"read the plan of unit {index}", fs.policy)[0]
    units = units_from_table(table)
    if len(units) != 1:
        raise ValueError(f"plan partition {partition_url} does not hold unit {index}")
    return units[0]


@dataclass(frozen=True)
class Partition:
    path: str  # relative to the dataset root
    first_unit: int
    last_unit: int
    rows: int


@dataclass(frozen=True)
class Generation:
    """One append: the inputs one run found new in its source, as units numbered after the rest."""

    number: int  # 1, 2, ...
    created_at: str  # UTC, ISO 8601
    run_id: str
    source: str  # the source path or URI listed
    source_kind: str
    inputs_listed: int  # inputs the listing held
    inputs_new: int  # of them, not yet in the dataset: planned here
    inputs_missing: int  # inputs of earlier generations from this source that the listing lacked
    first_unit: int
    units: int
    partitions: tuple[Partition, ...] = ()
    inputs_retried: int = 0  # of inputs_new, planned before and failed (see PlanStore.append's `retry`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Generation:
        parts = tuple(Partition(**p) for p in data.get("partitions", ()))
        return cls(**{**data, "partitions": parts})


@dataclass
class AppendReport:
    """What listing the source against the plan found (and, unless a dry run, stored)."""

    generation: Generation | None  # None: nothing new
    inputs_listed: int = 0
    inputs_new: int = 0
    inputs_retried: int = 0  # of inputs_new: planned before, failed, planned again
    units_new: int = 0
    inputs_missing: int = 0
    missing_examples: list[str] = field(default_factory=list)  # locations, at most EXAMPLES


def _digests(array: pa.FixedSizeBinaryArray) -> np.ndarray:
    """A fixed_size_binary(16) arrow array as (N,) S16, without a Python object per row."""
    return np.frombuffer(array.buffers()[1], dtype="S16", count=len(array), offset=array.offset * 16).copy()


def _with_flag(digests: np.ndarray, flag: bool) -> np.ndarray:
    """A copy of (N,) S16 hashes with the lowest bit of the last byte set to `flag`.

    That bit carries "planned from this run's source" inside the 16 bytes, so the sorted hash
    array needs no companion array and no argsort; 127 bits stay for comparing keys.
    """
    out = np.array(digests, dtype="S16", copy=True)
    last = out.view(np.uint8).reshape(-1, 16)[:, 15]
    last &= 0xFE
    last |= int(flag)
    return out


def generation_name(number: int) -> str:
    return f"gen-{number:06d}"


class PlanStore:
    """The plan of one dataset: its generations, partitions, and what is left to do."""

    def __init__(self, fs: Any, root: str, legacy_source: str | None = None) -> None:
        self.fs, self.root = fs, root.rstrip("/")
        self.legacy_source = legacy_source  # the card's source, for a plan written before generations

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    # --- reading ---------------------------------------------------------------------------
    def generations(self) -> list[Generation]:
        """Committed generations in order (a legacy single-file plan reads as generation 1)."""
        try:
            paths = sorted(self.fs.ls(self.path(GENERATIONS_DIR), detail=False))
        except FileNotFoundError:
            paths = []
        found = [self._legacy_generation()] if self.fs.exists(self.path(LEGACY_PLAN_FILE)) else []
        for path in paths:
            name = path.rsplit("/", 1)[-1]
            if name.startswith("gen-") and name.endswith(".json"):
                with self.fs.open(path, "r") as handle:
                    found.append(Generation.from_dict(json.load(handle)))
        return found

    def _legacy_generation(self) -> Generation:
        with self.fs.open(self.path(LEGACY_PLAN_FILE), "rb") as handle:
            units = pq.read_table(handle, columns=["unit"]).column("unit").to_numpy()
        first, last = (int(units.min()), int(units.max())) if len(units) else (0, -1)
        part = Partition(LEGACY_PLAN_FILE, first, last, len(units))
        source = self.legacy_source or ""
        return Generation(1, "", "", source, "", len(units), len(units), 0, first, last - first + 1, (part,))

    def next_unit(self, generations: Sequence[Generation]) -> int:
        return max((g.first_unit + g.units for g in generations), default=0)

    def pending(self, committed: set[int], generations: Sequence[Generation] | None = None) -> list[UnitRef]:
        """References to every planned unit without a committed shard, in unit order."""
        refs = []
        for generation in self.generations() if generations is None else generations:
            for part in generation.partitions:
                refs += [
                    UnitRef(n, part.path)
                    for n in range(part.first_unit, part.last_unit + 1)
                    if n not in committed
                ]
        return refs

    def unit_hashes(self, refs: Sequence[UnitRef]) -> np.ndarray:
        """(N,) S16, sorted: key hashes of the inputs of the units `refs` (read a partition at a time)."""
        wanted: dict[str, list[int]] = {}
        for ref in refs:
            wanted.setdefault(ref.partition, []).append(ref.index)
        found = [np.empty(0, "S16")]
        for partition, units in wanted.items():
            data = self.fs.cat_file(self.path(partition))
            table = pq.read_table(pa.BufferReader(data), columns=["unit", "key"], use_threads=False)
            mine = np.isin(table.column("unit").to_numpy(), np.array(units))
            found.append(key_hashes([k for k, m in zip(table.column("key").to_pylist(), mine) if m]))
        return np.sort(np.concatenate(found))

    def existing_hashes(self, generations: Sequence[Generation], source: str) -> np.ndarray:
        """(N,) S16, sorted: the key hash of every planned input, with its last bit replaced by
        "planned from `source`" (see _with_flag). 16 bytes per input, no index array."""
        known = np.empty(sum(p.rows for g in generations for p in g.partitions), "S16")
        at = 0
        for generation in generations:
            for part in generation.partitions:
                with self.fs.open(self.path(part.path), "rb") as handle:
                    schema = pq.read_schema(handle)
                    handle.seek(0)
                    if "key_hash" in schema.names:
                        column = pq.read_table(handle, columns=["key_hash"], use_threads=False).column(0)
                        digests = _digests(column.combine_chunks())
                    else:  # a legacy plan: hash its keys here
                        keys = pq.read_table(handle, columns=["key"], use_threads=False).column(0)
                        digests = key_hashes(keys.to_pylist())
                if at + len(digests) > len(known):
                    raise ValueError(
                        f"plan partition {part.path} holds more rows than its generation records"
                    )
                known[at : at + len(digests)] = _with_flag(digests, generation.source == source)
                at += len(digests)
        known = known[:at]
        known.sort()  # in place: the flag is the lowest bit, so a key's two flagged forms sort together
        return known

    # --- appending -------------------------------------------------------------------------
    def append(
        self,
        items: Iterable[InputItem],
        *,
        source: str,
        source_kind: str,
        run_id: str,
        inputs_per_shard: int,
        shard_input_bytes: int,
        dry_run: bool = False,
        retry: np.ndarray | None = None,
    ) -> AppendReport:
        """List `items` against the plan; store the new ones as a new generation (unless `dry_run`).

        `retry`: sorted key hashes (`key_hashes`) of planned inputs that failed and must be planned
        again; listed, they count as new (a new unit: committed shards are never rewritten).

        Memory: 17 bytes per planned input and 16 per new one, plus one partition of items.
        The generation's record is written last: a run killed before it leaves partitions
        that `remove_uncommitted` deletes, and the next run plans those inputs again.
        """
        generations = self.generations()
        known = self.existing_hashes(generations, source)
        seen = np.zeros(len(known), np.uint8)
        number = len(generations) + 1
        report = AppendReport(generation=None)
        new_hashes: list[np.ndarray] = []
        again = _with_flag(retry, False) if retry is not None and len(retry) else None

        def new_items() -> Iterator[InputItem]:
            iterator = iter(items)
            while batch := list(islice(iterator, LISTING_BATCH)):
                digests = key_hashes([item.key for item in batch])
                report.inputs_listed += len(batch)
                if len(known):
                    unflagged = _with_flag(digests, False)
                    pos = np.minimum(np.searchsorted(known, unflagged), len(known) - 1)
                    found = _with_flag(known[pos], False) == unflagged
                    np.add.at(seen, pos[found], 1)
                    twice = found & (seen[pos] > 1)
                    if twice.any():
                        item = batch[int(np.argmax(twice))]
                        raise ValueError(f"the source lists the input {item.location} (key {item.key}) twice")
                    if again is not None:
                        hit = np.minimum(np.searchsorted(again, unflagged), len(again) - 1)
                        retried = found & (again[hit] == unflagged)
                        report.inputs_retried += int(retried.sum())
                        found &= ~retried
                else:
                    found = np.zeros(len(batch), bool)
                new_hashes.append(digests[~found])
                yield from (item for item, old in zip(batch, found, strict=True) if not old)

        first_unit = self.next_unit(generations)
        folder = f"{PLAN_DIR}/{generation_name(number)}"
        partitions: list[Partition] = []
        buffered: list[Unit] = []

        def flush() -> None:
            if buffered and not dry_run:
                path = f"{folder}/part-{len(partitions):06d}.parquet"
                write_partition(self.fs, self.path(path), buffered)
                rows = sum(len(u.items) for u in buffered)
                partitions.append(Partition(path, buffered[0].index, buffered[-1].index, rows))
            buffered.clear()

        rows = 0
        try:
            for unit in iter_units(new_items(), inputs_per_shard, shard_input_bytes, first_unit):
                buffered.append(unit)
                report.units_new += 1
                report.inputs_new += len(unit.items)
                rows += len(unit.items)
                if rows >= PARTITION_ROWS:
                    flush()
                    rows = 0
            flush()
            self._refuse_duplicates(new_hashes, folder, dry_run)
        except BaseException:
            if not dry_run and self.fs.exists(self.path(folder)):
                self.fs.rm(self.path(folder), recursive=True)
            raise
        same_source = known.view(np.uint8).reshape(-1, 16)[:, 15] & 1 == 1
        missing = same_source & (seen == 0)
        report.inputs_missing = int(missing.sum())
        if report.inputs_missing:
            report.missing_examples = self._locations_of(
                _with_flag(known[missing], False), generations, source
            )
        if report.inputs_new and not dry_run:
            report.generation = Generation(
                number=number,
                created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                run_id=run_id,
                source=source,
                source_kind=source_kind,
                inputs_listed=report.inputs_listed,
                inputs_new=report.inputs_new,
                inputs_missing=report.inputs_missing,
                first_unit=first_unit,
                units=report.units_new,
                partitions=tuple(partitions),
                inputs_retried=report.inputs_retried,
            )
            self._write_generation(report.generation)
        return report

    def _refuse_duplicates(self, new_hashes: list[np.ndarray], folder: str, dry_run: bool) -> None:
        digests = np.empty(sum(len(c) for c in new_hashes), "S16")
        at = 0
        while new_hashes:  # copied chunk by chunk, each freed as it goes: 16 bytes per new input at peak
            chunk = new_hashes.pop(0)
            digests[at : at + len(chunk)] = chunk
            at += len(chunk)
        digests.sort()
        repeated = digests[1:][digests[1:] == digests[:-1]]
        if not len(repeated):
            return
        if dry_run:
            raise ValueError(f"the source lists {len(repeated)} input(s) twice (same key)")
        table = self._read_rows(folder, columns=["key", "key_hash", "location"])
        twice = [r for r in table.to_pylist() if r["key_hash"] == bytes(repeated[0]).ljust(16, b"\0")]
        names = " and ".join(r["location"] for r in twice)
        raise ValueError(f"inputs {names} share the key {twice[0]['key'] if twice else '?'}")

    def _read_rows(self, folder: str, columns: list[str]) -> pa.Table:
        paths = sorted(self.fs.ls(self.path(folder), detail=False))
        tables = []
        for path in paths:
            with self.fs.open(path, "rb") as handle:
                tables.append(pq.read_table(handle, columns=columns, use_threads=False))
        return pa.concat_tables(tables) if tables else pa.table({c: [] for c in columns})

    def _locations_of(self, digests: np.ndarray, generations: Sequence[Generation], source: str) -> list[str]:
        """Locations of the first few planned inputs whose key hashes are in `digests` (sorted)."""
        out: list[str] = []
        for generation in generations:
            if generation.source != source:
                continue
            for part in generation.partitions:
                with self.fs.open(self.path(part.path), "rb") as handle:
                    table = pq.read_table(handle, columns=["key", "location"], use_threads=False)
                keys = table.column("key").to_pylist()
                mine = _with_flag(key_hashes(keys), False)
                pos = np.minimum(np.searchsorted(digests, mine), len(digests) - 1)
                for location, hit in zip(table.column("location").to_pylist(), digests[pos] == mine):
                    if hit:
                        out.append(location)
                        if len(out) == EXAMPLES:
                            return out
        return out

    def _write_generation(self, generation: Generation) -> None:
        path = self.path(GENERATIONS_DIR, f"{generation_name(generation.number)}.json")
        self.fs.makedirs(self.path(GENERATIONS_DIR), exist_ok=True)
        tmp = f"{self.path(GENERATIONS_DIR)}/.{generation_name(generation.number)}.json.tmp"
        with self.fs.open(tmp, "w") as handle:
            json.dump(generation.to_dict(), handle, indent=2)
        self.fs.mv(tmp, path)

    def remove_uncommitted(self) -> list[str]:
        """Partition folders of generations whose record was never written (a killed append)."""
        committed = {generation_name(g.number) for g in self.generations()}
        try:
            folders = self.fs.ls(self.path(PLAN_DIR), detail=False)
        except FileNotFoundError:
            return []
        doomed = [f for f in folders if f.rstrip("/").rsplit("/", 1)[-1] not in committed]
        for folder in doomed:
            self.fs.rm(folder, recursive=True)
        return doomed


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
