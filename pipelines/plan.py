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

The driver's memory does not grow with the number of inputs: the listing streams into a
local temporary file; listed and planned inputs are compared by their keys' 16-byte hashes a
bucket at a time, from local temporary files (`pipelines.spill`); the new inputs stream from
the listing's file into units and into partition files of at most `PARTITION_ROWS` rows. A
unit reaches a worker as a `UnitRef` (its number and its partition), and the worker reads
that unit's rows alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from itertools import islice
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from losatok_input.sources import InputItem
from losatok_storage.filesystem import retrying, url_to_fs
from losatok_storage.retry import RetryPolicy, call, iter_resuming
from losatok_storage.secrets import redact_text
from pipelines.spill import HashBuckets, ItemSpill, hash_starts, item_of_row, to_items

log = logging.getLogger(__name__)

PLAN_DIR = "plan"
GENERATIONS_DIR = "generations"
LEGACY_PLAN_FILE = "plan.parquet"  # the single plan file of datasets written before generations
RUN_FILE = "run.json"
PARTITION_ROWS = 65_536  # inputs per plan partition file: ~10 MB of parquet, ~60 MB as Python items
ROW_GROUP_ROWS = 4_096  # a worker reading one unit reads one or two row groups (units <= 4x inputs_per_shard)
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


# A unit may hold up to this many times `inputs_per_shard` spans of one file: the decode stage
# reads a file once per unit (torchcodec 0.11 reaches a span by decoding from the file's start),
# so a file whose spans are cut across k units costs about (k + 1) / 2 decodes of it.
FILE_SPANS_PER_UNIT = 4


def file_groups(items: Iterable[InputItem], limit: int) -> Iterator[list[InputItem]]:
    """Consecutive items of one location (the spans of one file), at most `limit` a group;
    a container is a group of its own. Holds one group at a time."""
    group: list[InputItem] = []
    for item in items:
        if group and (len(group) >= limit or item.container or item.location != group[-1].location):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def iter_units(
    items: Iterable[InputItem], inputs_per_shard: int, shard_input_bytes: int, first_index: int = 0
) -> Iterator[Unit]:
    """Consecutive groups of at most `inputs_per_shard` inputs and about `shard_input_bytes` of files,
    numbered from `first_index`; streams, holding one unit at a time.

    The spans of one file stay in one unit: a unit ends before a file's spans rather than in
    their middle, and grows past `inputs_per_shard` (up to FILE_SPANS_PER_UNIT times it) for a
    file with more spans; only a file with more still is cut. A container (a WebDataset tar or
    parquet row group of many inputs) is a unit of its own: it is read as one stream.
    """
    index, current, size = first_index, [], 0
    for group in file_groups(items, FILE_SPANS_PER_UNIT * inputs_per_shard):
        group_size = sum(item.size_bytes for item in group)
        full = len(current) + len(group) > inputs_per_shard or size + group_size > shard_input_bytes
        if current and (full or group[0].container or current[-1].container):
            yield Unit(index, tuple(current))
            index, current, size = index + 1, [], 0
        current.extend(group)
        size += group_size
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
        grouped.setdefault(row["unit"], []).append(item_of_row(row))
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


# kinds of hash entries; planned sort first. RETRY: a planned input that failed and is planned
# again when listed (PlanStore.append's `retry`)
PLANNED_ELSEWHERE, PLANNED_HERE, LISTED, RETRY = 0, 1, 2, 3


@dataclass
class _Comparison:
    """What comparing a listing with the plan found."""

    new: np.ndarray  # (ceil(N / 8),) uint8, np.packbits order: bit i set when listed input i is new
    retried: int = 0  # of the new, planned before and marked RETRY
    missing: int = 0  # planned inputs of this source that the listing lacks
    missing_rows: list[int] = field(default_factory=list)  # plan rows of the first EXAMPLES of them
    # the key listed twice whose second listing comes first: its two listing positions, and
    # whether the key is planned already; None: no key is listed twice
    repeat: tuple[int, int, bool] | None = None


def _compare(buckets: Iterable[np.ndarray], listed: int) -> _Comparison:
    """Compare `listed` inputs with the plan, bucket by bucket (see pipelines.spill).

    A listed input is new when neither a planned input (unless marked RETRY) nor an earlier
    listed one has its key; a planned input of this source is missing when no listed one has
    its key. Every result is the
    same whatever the number of buckets: a repeat is the one whose second listing comes first,
    missing rows are the lowest.
    """
    out = _Comparison(new=np.zeros(-(-listed // 8), np.uint8))
    for entries in buckets:  # (M,) spill.ENTRY, sorted by hash, then kind, then seq
        group = np.cumsum(hash_starts(entries)) - 1  # (M,) the entry's hash, numbered in the bucket
        kind, seq = entries["kind"], entries["seq"]
        is_listed = kind == LISTED
        planned = np.zeros(len(entries), bool)  # per hash
        planned[group[kind < LISTED]] = True
        again = np.zeros(len(entries), bool)  # per hash: failed, to be planned again
        again[group[kind == RETRY]] = True
        heard = np.zeros(len(entries), bool)  # per hash
        heard[group[is_listed]] = True
        # planned entries sort before listed ones: a listed entry after a listed one of its hash repeats it
        repeat = np.zeros(len(entries), bool)
        repeat[1:] = is_listed[1:] & is_listed[:-1] & (group[1:] == group[:-1])
        first = is_listed & ~repeat
        retried = first & planned[group] & again[group]
        out.retried += int(retried.sum())
        new = seq[(first & ~planned[group]) | retried]
        np.bitwise_or.at(out.new, new >> 3, (0x80 >> (new & 7)).astype(np.uint8))
        missing = (kind == PLANNED_HERE) & ~heard[group]
        out.missing += int(missing.sum())
        out.missing_rows = sorted(out.missing_rows + np.sort(seq[missing])[:EXAMPLES].tolist())[:EXAMPLES]
        if repeat.any():
            at = np.flatnonzero(repeat)[np.argmin(seq[repeat])]
            if out.repeat is None or seq[at] < out.repeat[1]:
                out.repeat = (int(seq[at - 1]), int(seq[at]), bool(planned[group[at]]))
    return out


def _repeat_message(listed: ItemSpill, first: int, second: int, planned: bool) -> str:
    earlier, later = listed.item(first), listed.item(second)
    if planned:
        return f"the source lists the input {later.location} (key {later.key}) twice"
    return f"inputs {earlier.location} and {later.location} share the key {later.key}"


def _kept(listed: ItemSpill, new: np.ndarray) -> Iterator[InputItem]:
    """The listed items whose bit is set in `new` (see _Comparison), in listing order."""
    for start, batch in listed.batches():
        first, stop = start // 8, -(-(start + len(batch)) // 8)
        bits = np.unpackbits(new[first:stop])[start - 8 * first :][: len(batch)]  # (len(batch),)
        if bits.any():  # only new items become Python objects: an append of little costs little
            yield from to_items(batch.filter(bits.astype(bool)))


def generation_name(number: int) -> str:
    return f"gen-{number:06d}"


class PlanStore:
    """The plan of one dataset: its generations, partitions, and what is left to do."""

    def __init__(self, fs: Any, root: str, legacy_source: str | None = None) -> None:
        self.fs, self.root = retrying(fs), root.rstrip("/")  # every storage call retried
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
                found.append(Generation.from_dict(json.loads(self.fs.cat_file(path))))  # retried whole
        return found

    def _legacy_generation(self) -> Generation:
        data = pa.BufferReader(self.fs.cat_file(self.path(LEGACY_PLAN_FILE)))
        units = pq.read_table(data, columns=["unit"], use_threads=False).column("unit").to_numpy()
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

        `retry`: key hashes (`key_hashes`) of planned inputs that failed and are planned again
        when listed: they count as new (new units: committed shards are never rewritten).

        Memory does not grow with the number of inputs, listed or planned: the listing is kept
        in a local temporary file, and the key hashes of listed and planned inputs are compared
        a bucket at a time (`pipelines.spill`); what stays in memory is one bit per listed
        input and one partition of items. Temporary files go whether this returns or raises.
        The generation's record is written last: a run killed before it leaves partitions that
        `remove_uncommitted` deletes, and the next run plans those inputs again.
        """
        source = redact_text(source)  # stored in the generation's record: never a credential
        generations = self.generations()
        report = AppendReport(generation=None)
        with tempfile.TemporaryDirectory(prefix="losatok-plan-") as scratch:
            with ItemSpill(os.path.join(scratch, "listed.arrow")) as listed, HashBuckets(scratch) as entries:
                iterator = iter(items)
                while batch := list(islice(iterator, LISTING_BATCH)):
                    positions = np.arange(listed.count, listed.count + len(batch))
                    entries.add(key_hashes([item.key for item in batch]), positions, LISTED)
                    listed.write(batch)
                partitions = self._add_planned(generations, source, entries)
                if retry is not None and len(retry):
                    entries.add(retry, 0, RETRY)
            report.inputs_listed = listed.count
            found = _compare(entries.buckets(), listed.count)
            report.inputs_retried = found.retried
            if found.repeat is not None:
                raise ValueError(_repeat_message(listed, *found.repeat))
            report.inputs_missing = found.missing
            report.missing_examples = [self._location_of(row, partitions) for row in found.missing_rows]
            number = len(generations) + 1
            first_unit = self.next_unit(generations)
            new = _kept(listed, found.new)
            written = self._write_units(
                new, number, first_unit, inputs_per_shard, shard_input_bytes, dry_run, report
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
                partitions=tuple(written),
                inputs_retried=report.inputs_retried,
            )
            self._write_generation(report.generation)
        return report

    def _add_planned(
        self, generations: Sequence[Generation], source: str, entries: HashBuckets
    ) -> list[tuple[int, str]]:
        """Add the key hash of every planned input to `entries`, numbered by plan row (generation
        by generation, partition by partition); returns each partition's (first row, path)."""
        partitions, row = [], 0
        for generation in generations:
            kind = PLANNED_HERE if redact_text(generation.source) == source else PLANNED_ELSEWHERE
            for part in generation.partitions:
                partitions.append((row, part.path))
                path = self.path(part.path)
                # streamed a batch at a time; a read cut by an outage goes on where it stopped
                for digests in iter_resuming(
                    lambda path=path: self.fs.open(path, "rb"), _plan_digests, f"read {path}", self.fs.policy
                ):
                    entries.add(digests, np.arange(row, row + len(digests)), kind)
                    row += len(digests)
        return partitions

    def _location_of(self, row: int, partitions: Sequence[tuple[int, str]]) -> str:
        """The location of plan row `row` (see _add_planned), reading the one row group holding it."""
        first, path = partitions[bisect_right([p[0] for p in partitions], row) - 1]
        offset = row - first
        with self.fs.open(self.path(path), "rb") as handle:
            plan = pq.ParquetFile(handle)
            for group in range(plan.num_row_groups):
                rows = plan.metadata.row_group(group).num_rows
                if offset < rows:
                    table = plan.read_row_group(group, columns=["location"], use_threads=False)
                    return table.column(0)[offset].as_py()
                offset -= rows
        raise ValueError(f"plan partition {path} holds no row {row - first}")

    def _write_units(
        self,
        items: Iterable[InputItem],
        number: int,
        first_unit: int,
        inputs_per_shard: int,
        shard_input_bytes: int,
        dry_run: bool,
        report: AppendReport,
    ) -> list[Partition]:
        """Group `items` into units numbered from `first_unit` and write them as the partitions of
        generation `number` (counted in `report`; a dry run counts only). On any error the
        generation's folder is removed."""
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
            for unit in iter_units(items, inputs_per_shard, shard_input_bytes, first_unit):
                buffered.append(unit)
                report.units_new += 1
                report.inputs_new += len(unit.items)
                rows += len(unit.items)
                if rows >= PARTITION_ROWS:
                    flush()
                    rows = 0
            flush()
        except BaseException:
            if not dry_run and self.fs.exists(self.path(folder)):
                self.fs.rm(self.path(folder), recursive=True)
            raise
        return partitions

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

    tokenizer: dict[str, Any]  # losatok_data.card.TokenizerIdentity as a dict
    seed: int | None  # initialisation of an untrained model; None with a checkpoint
    fields: dict[str, Any]
    segment: dict[str, Any]

    def differences(self, other: RunIdentity) -> list[str]:
        """Human-readable list of what differs, a line per setting, e.g.
        "segment.cut: 'equal' (existing) != 'pause' (this run)"."""

        def flat(identity: RunIdentity) -> dict[str, Any]:
            out = {}
            for name, value in asdict(identity).items():
                if isinstance(value, dict):
                    out |= {f"{name}.{key}": item for key, item in value.items()}
                else:
                    out[name] = value
            return out

        mine, theirs = flat(self), flat(other)
        return [
            f"{name}: {mine.get(name)!r} (existing) != {theirs.get(name)!r} (this run)"
            for name in sorted(mine.keys() | theirs.keys())
            if mine.get(name) != theirs.get(name)
        ]


def write_identity(fs: Any, root: str, identity: RunIdentity) -> None:
    with fs.open(f"{root}/{RUN_FILE}", "w") as handle:
        json.dump(asdict(identity), handle, indent=2, sort_keys=True)


# what a dataset's `run.json` written before a segmentation option existed meant by it
LEGACY_SEGMENT = {"cut": "equal", "max_silent_fraction": 1.0}


def read_identity(fs: Any, root: str) -> RunIdentity | None:
    path = f"{root}/{RUN_FILE}"
    if not fs.exists(path):
        return None
    identity = json.loads(fs.cat_file(path))
    identity["segment"] = {**LEGACY_SEGMENT, **identity["segment"]}
    return RunIdentity(**identity)


def _plan_digests(handle: Any) -> Iterator[np.ndarray]:
    """The 16-byte key hashes of a plan partition's rows, PARTITION_ROWS at a time, in row order
    (a plan written before key hashes were stored has its keys hashed here)."""
    plan = pq.ParquetFile(handle)
    column = "key_hash" if "key_hash" in plan.schema_arrow.names else "key"
    for batch in plan.iter_batches(PARTITION_ROWS, columns=[column], use_threads=False):
        values = batch.column(0)
        yield _digests(values) if column == "key_hash" else key_hashes(values.to_pylist())
