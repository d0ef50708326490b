"""The shard index: one parquet row per sample, one fragment file per shard.

`index/shard-*.parquet` reads as one table with pyarrow (`pyarrow.dataset`), pandas
(`pd.read_parquet(folder)`) or DuckDB (`SELECT * FROM 'index/*.parquet'`). Aggregated per
shard it gives sample counts and seconds, which a training loader needs to split shards
evenly across ranks and to know exactly how many samples make an epoch.

Those per-shard totals are also kept in `shards.parquet` beside the index (one row per
committed shard, written when a run finalises), so a loader need not read every fragment.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from losatok_data.checksums import DEFAULT_CHECKSUM
from losatok_data.errors import SchemaError
from losatok_data.layout import DatasetLayout, shard_name, shard_number
from losatok_data.sample import LatentSample
from losatok_data.versioning import SCHEMA_VERSION, check_version
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
        # measures of the sample's audio (see SampleMetadata); since 1.3, null in older fragments
        *(pa.field(name, pa.float64()) for name in ("rms_db", "peak", "clipped_fraction", "silent_fraction")),
        pa.field("content_hash", pa.string()),
        pa.field("loudness_lufs", pa.float64()),
    ],
    metadata={VERSION_KEY: SCHEMA_VERSION.encode(), KIND_KEY: b"index"},
)


# the columns of the sample's audio measures (schema 1.3), in the sample metadata's names
MEASURE_COLUMNS = ("rms_db", "peak", "clipped_fraction", "silent_fraction", "content_hash", "loudness_lufs")


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
    rms_db: float | None = None  # audio measures, as the sample's metadata (None before 1.3)
    peak: float | None = None
    clipped_fraction: float | None = None
    silent_fraction: float | None = None
    content_hash: str | None = None
    loudness_lufs: float | None = None

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
            **{name: getattr(m, name) for name in MEASURE_COLUMNS},
        )


@dataclass(frozen=True)
class ShardInfo:
    """A committed shard: its number and name, and totals from its index fragment."""

    number: int
    name: str
    samples: int
    frames: int
    seconds: float


SUMMARY_KIND = b"shard-summary"
SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("shard", pa.string(), nullable=False),  # "shard-000000"
        pa.field("samples", pa.int64(), nullable=False),
        pa.field("frames", pa.int64(), nullable=False),  # latent frames
        pa.field("seconds", pa.float64(), nullable=False),
    ],
    metadata={VERSION_KEY: SCHEMA_VERSION.encode(), KIND_KEY: SUMMARY_KIND},
)


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


def read_index(
    layout: DatasetLayout, shards: Iterable[int] | None = None, columns: Sequence[str] | None = None
) -> pa.Table:
    """The index of all committed shards in shard order (or of `shards`, in their order; those
    not committed are skipped) as one table, rows in written order within a shard.

    `columns`: only these (None: every column of INDEX_SCHEMA). Columns a fragment lacks
    (written by an older minor) read as nulls; columns it has that INDEX_SCHEMA lacks (a newer
    minor) are dropped.
    """
    committed = layout.committed_shards()
    numbers = list(committed) if shards is None else list(shards)
    return read_fragments(layout, [committed[n] for n in numbers if n in committed], columns)


def read_fragments(
    layout: DatasetLayout, paths: Sequence[str], columns: Sequence[str] | None = None
) -> pa.Table:
    """The index fragments at `paths` as one table in their order (see `read_index`); no listing."""
    columns = None if columns is None else list(columns)
    if not paths:
        empty = INDEX_SCHEMA.empty_table()
        return empty if columns is None else empty.select(columns)

    def read() -> pa.Table:
        dataset = pads.dataset(paths, schema=INDEX_SCHEMA, format="parquet", filesystem=unwrap(layout.fs))
        return dataset.to_table(columns=columns)

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


def summarise_shards(layout: DatasetLayout, numbers: Iterable[int]) -> list[ShardInfo]:
    """Totals of the committed shards `numbers`, in that order, each from its own index fragment.

    Reads only the `frame_count` and `duration` columns (samples: the row count), a fragment
    at a time, so memory does not grow with the dataset. A shard that is not committed raises
    FileNotFoundError.
    """
    out = []
    for number in numbers:
        table = read_parquet_file(layout.fs, layout.index_path(number), ("frame_count", "duration"))
        out.append(
            ShardInfo(
                number=number,
                name=shard_name(number),
                samples=table.num_rows,
                frames=int(pc.sum(table.column("frame_count")).as_py() or 0),
                seconds=float(pc.sum(table.column("duration")).as_py() or 0.0),
            )
        )
    return out


def write_shard_summary(layout: DatasetLayout, shards: Iterable[ShardInfo]) -> str:
    """Write (atomically) `shards.parquet`: one row per shard of `shards`, in shard order.

    Give it every committed shard, empty ones included (zeros), so readers need no fragment.
    Returns its path.
    """
    shards = sorted(shards, key=lambda s: s.number)
    numbers = [s.number for s in shards]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"shard summaries name a shard twice: {numbers}")
    table = pa.Table.from_pydict(
        {
            "shard": [shard_name(s.number) for s in shards],
            "samples": [s.samples for s in shards],
            "frames": [s.frames for s in shards],
            "seconds": [float(s.seconds) for s in shards],
        },
        schema=SUMMARY_SCHEMA,
    )
    path = layout.summary_path
    with open_atomic(layout.fs, path) as f:
        pq.write_table(table, f)
    return path


def read_shard_summary(layout: DatasetLayout) -> dict[int, ShardInfo] | None:
    """The rows of `shards.parquet` by shard number (any shard it names, committed or not);
    None when the dataset has no such file.

    Raises SchemaVersionError for a version this software cannot read and SchemaError for a
    file that is not a shard summary.
    """
    try:
        table = read_parquet_file(layout.fs, layout.summary_path)
    except FileNotFoundError:
        return None
    metadata = table.schema.metadata or {}
    check_version((metadata.get(VERSION_KEY) or b"").decode() or None, "shard summary shards.parquet")
    missing = [n for n in SUMMARY_SCHEMA.names if n not in table.column_names]
    if metadata.get(KIND_KEY) != SUMMARY_KIND or missing:
        raise SchemaError(
            f"{layout.url_of(layout.summary_path)} is not a shard summary "
            f"(kind {metadata.get(KIND_KEY)!r}, lacks columns {missing})"
        )
    columns = [table.column(n).to_pylist() for n in SUMMARY_SCHEMA.names]
    return {
        shard_number(name): ShardInfo(shard_number(name), name, int(samples), int(frames), float(seconds))
        for name, samples, frames, seconds in zip(*columns, strict=True)
    }


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
