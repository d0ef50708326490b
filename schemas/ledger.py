"""The failure ledger: one parquet row per input that could not become samples.

Each writer (a Ray actor, a task) writes its own fragment `failures/<writer>.parquet`, so
writers never contend for a file; readers see the union of the fragments.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from schemas.index import KIND_KEY, VERSION_KEY
from schemas.layout import DatasetLayout
from schemas.storage import open_atomic
from schemas.versioning import SCHEMA_VERSION

# Stages a pipeline reports; not enforced, so a new stage needs no schema change.
STAGES = ("list", "read", "decode", "segment", "encode", "write")

LEDGER_SCHEMA = pa.schema(
    [
        pa.field("location", pa.string(), nullable=False),  # the input's audio location
        pa.field("stage", pa.string(), nullable=False),  # where it failed, one of STAGES
        pa.field("error_type", pa.string(), nullable=False),  # exception class name
        pa.field("message", pa.string(), nullable=False),
        pa.field("attempts", pa.int32(), nullable=False),  # tries made before giving up
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),  # of the last attempt
        pa.field("key", pa.string()),  # the input's key, when one was given
        pa.field("writer", pa.string()),  # which worker recorded it
    ],
    metadata={VERSION_KEY: SCHEMA_VERSION.encode(), KIND_KEY: b"failures"},
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class FailureRecord:
    """One failed input."""

    location: str
    stage: str
    error_type: str
    message: str
    attempts: int = 1
    time: dt.datetime = field(default_factory=_now)  # UTC
    key: str | None = None
    writer: str | None = None

    @classmethod
    def of(
        cls, location: str, stage: str, error: BaseException, attempts: int = 1, **kw: object
    ) -> FailureRecord:
        """A record of `error`, truncating long messages (a traceback is not a ledger row)."""
        return cls(location, stage, type(error).__name__, str(error)[:2000], attempts, **kw)


def failures_table(records: Sequence[FailureRecord]) -> pa.Table:
    columns = {f.name: [getattr(r, f.name) for r in records] for f in fields(FailureRecord)}
    return pa.Table.from_pydict({name: columns[name] for name in LEDGER_SCHEMA.names}, schema=LEDGER_SCHEMA)


def write_failures(layout: DatasetLayout, writer: str, records: Sequence[FailureRecord]) -> str:
    """Write (atomically, replacing any earlier one) the ledger fragment of `writer`."""
    path = layout.failures_path(writer)
    with open_atomic(layout.fs, path) as f:
        pq.write_table(failures_table(records), f)
    return path


def read_failures(layout: DatasetLayout) -> pa.Table:
    """All ledger fragments as one table."""
    paths = layout.failure_fragments()
    if not paths:
        return LEDGER_SCHEMA.empty_table()
    return pads.dataset(paths, schema=LEDGER_SCHEMA, format="parquet", filesystem=layout.fs).to_table()


def failure_counts(table: pa.Table) -> dict[str, int]:
    """Failed inputs per stage."""
    return dict(sorted(Counter(table.column("stage").to_pylist()).items()))
