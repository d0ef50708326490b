"""The shard index: one parquet row per sample, one fragment file per shard.

`index/shard-*.parquet` reads as one table with pyarrow (`pyarrow.dataset`), pandas
(`pd.read_parquet(folder)`) or DuckDB (`SELECT * FROM 'index/*.parquet'`). Aggregated per
shard it gives sample counts and seconds, which a training loader needs to split shards
evenly across ranks and to know exactly how many samples make an epoch.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from losatok_data.checksums import DEFAULT_CHECKSUM
from losatok_data.layout import DatasetLayout, shard_name, shard_number
from losatok_data.sample import LatentSample
from losatok_data.versioning import SCHEMA_VERSION
from losatok_storage.filesystem import open_atomic, read_parquet_file, unwrap
from losatok_storage.retry import call

VERSION_KEY = b"losatok.schema_version"
KIND_KEY = b"losatok.kind"
CHECKSUM_KEY = b"losatok.checksum"  # the algorithm of the `checksums` column (schema 1.1 on)

INDEX_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),  # "shard-000000"
        pa.field("frame_count", pa.int64(), nullable=False),  # T, latent frames
        pa.field("duration", pa.float64(), nullable=False),  # seconds
        pa.field("source", pa.string(), nullable=False),  # audio location
        pa.field("offset", pa.float64(), nullable=False),  # seconds into the source
        pa.field("id", pa.string()),
        pa.field("text", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("language", pa.string()),
        pa.field("speaker", pa.string()),
        pa.field("split", pa.string()),
        pa.field("fields", pa.list_(pa.string()), nullable=False),  # array fields present, all groups
        # tar member ("latent.npy", "json", "semantic.npy", ...) -> hex digest, every group;
        # since 1.1, null in fragments written before (see CHECKSUM_KEY for the algorithm)
        pa.field("checksums", pa.map_(pa.string(), pa.string())),
    ],
    metadata={VERSION_KEY: SCHEMA_VERSION.encode(), KIND_KEY: b"index"},
)


@dataclass(frozen=True)
class IndexRow:
    """One sample's row in the index. Times in seconds."""

    key: str
    shard: str
    frame_count: int
    duration: float
    source: str
    offset: float
    fields: tuple[str, ...]
    id: str | None = None
    text: str | None = None
    caption: str | None = None
    language: str | None = None
    speaker: str | None = None
    split: str | None = None
    checksums: Mapping[str, str] | None = None  # tar member -> hex digest; None before 1.1

    @classmethod
    def of(cls, sample: LatentSample, shard: str, checksums: Mapping[str, str] | None = None) -> IndexRow:
        """The index row of a sample written to `shard`, with its members' digests."""
        m = sample.metadata
        return cls(
            key=sample.key,
            shard=shard,
            frame_count=m.frame_count,
            duration=float(m.duration),
            source=m.source,
            offset=float(m.offset),
            fields=tuple(sample.arrays),
            id=m.id,
            text=m.text,
            caption=m.caption,
            language=m.language,
            speaker=m.speaker,
            split=m.split,
            checksums=dict(checksums) if checksums is not None else None,
        )


@dataclass(frozen=True)
class ShardInfo:
    """A committed shard: its number and name, and totals from its index fragment."""

    number: int
    name: str
    samples: int
    frames: int
    seconds: float


def index_table(rows: Iterable[IndexRow], checksum: str | None = None) -> pa.Table:
    """Rows as a table with INDEX_SCHEMA (its version, and `checksum`'s name, in the metadata)."""
    rows = [asdict(r) for r in rows]
    columns = {f.name: [r[f.name] for r in rows] for f in fields(IndexRow)}
    columns["fields"] = [list(v) for v in columns["fields"]]
    # a map cell is a list of pairs; rows read back with to_pylist() already hold pairs
    columns["checksums"] = [_pairs(v) for v in columns["checksums"]]
    schema = INDEX_SCHEMA
    if checksum is not None:
        schema = schema.with_metadata({**schema.metadata, CHECKSUM_KEY: checksum.encode()})
    return pa.Table.from_pydict({name: columns[name] for name in INDEX_SCHEMA.names}, schema=schema)


def _pairs(value: Mapping[str, str] | Sequence[tuple[str, str]] | None) -> list[tuple[str, str]] | None:
    if value is None:
        return None
    return sorted(value.items() if isinstance(value, Mapping) else (tuple(p) for p in value))


def write_index_fragment(
    layout: DatasetLayout, number: int, rows: Sequence[IndexRow], checksum: str = DEFAULT_CHECKSUM
) -> str:
    """Write (atomically) the index fragment of shard `number`; this commits the shard.

    Every row must name that shard. `checksum` names the algorithm of the rows' `checksums`,
    recorded in the fragment's metadata when some row has them (rows without: as before
    schema 1.1). Returns the fragment's path.
    """
    name = shard_name(number)
    wrong = [r.key for r in rows if r.shard != name]
    if wrong:
        raise ValueError(f"index rows {wrong[:3]} do not belong to {name}")
    named = checksum if not rows or any(r.checksums is not None for r in rows) else None
    path = layout.index_path(number)
    with open_atomic(layout.fs, path) as f:
        pq.write_table(index_table(rows, named), f)
    return path


def read_index(layout: DatasetLayout, shards: Iterable[int] | None = None) -> pa.Table:
    """The index of all committed shards (or of `shards`) as one table, in shard order.

    Columns a fragment lacks (written by an older minor) read as nulls; columns it has that
    INDEX_SCHEMA lacks (a newer minor) are dropped.
    """
    committed = layout.committed_shards()
    numbers = list(committed) if shards is None else list(shards)
    paths = [committed[n] for n in numbers if n in committed]
    if not paths:
        return INDEX_SCHEMA.empty_table()

    def read() -> pa.Table:
        dataset = pads.dataset(paths, schema=INDEX_SCHEMA, format="parquet", filesystem=unwrap(layout.fs))
        return dataset.to_table()

    return call(read, f"read the index of {layout.url}", layout.fs.policy)[0]


def fragment_version(layout: DatasetLayout, path: str) -> str | None:
    """Schema version recorded in an index fragment's metadata (None if absent)."""
    metadata = read_parquet_file(layout.fs, path).schema.metadata or {}
    version = metadata.get(VERSION_KEY)
    return version.decode() if version is not None else None


def fragment_checksum(table: pa.Table) -> str | None:
    """The checksum algorithm named in an index fragment's metadata (None: no checksums)."""
    value = (table.schema.metadata or {}).get(CHECKSUM_KEY)
    return value.decode() if value else None


def shard_summaries(table: pa.Table) -> list[ShardInfo]:
    """Per-shard sample count, frames and seconds of an index table, in shard order."""
    if table.num_rows == 0:
        return []
    grouped = (
        table.group_by("shard")
        .aggregate([("key", "count"), ("frame_count", "sum"), ("duration", "sum")])
        .to_pylist()
    )
    out = [
        ShardInfo(
            number=shard_number(g["shard"]),
            name=g["shard"],
            samples=int(g["key_count"]),
            frames=int(g["frame_count_sum"]),
            seconds=float(g["duration_sum"]),
        )
        for g in grouped
    ]
    return sorted(out, key=lambda s: s.number)


def assign_shards(shards: Sequence[ShardInfo], world_size: int) -> list[list[ShardInfo]]:
    """Split shards across `world_size` ranks so each gets near-equal seconds of audio.

    Longest shard first to the least-loaded rank (ties: lower rank), deterministic so every
    rank computes the same split. Each rank's list is in shard order.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    heap = [(0.0, rank) for rank in range(world_size)]
    ranks: list[list[ShardInfo]] = [[] for _ in range(world_size)]
    for shard in sorted(shards, key=lambda s: (-s.seconds, s.number)):
        load, rank = heapq.heappop(heap)
        ranks[rank].append(shard)
        heapq.heappush(heap, (load + shard.seconds, rank))
    return [sorted(r, key=lambda s: s.number) for r in ranks]
