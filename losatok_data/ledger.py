"""The failure ledger: one parquet row per failed attempt at an input, and its history.

Each writer (a Ray actor, a task) writes its own fragment `failures/<writer>.parquet`, so
writers never contend for a file; readers see the union of the fragments.

Rows are never rewritten: the ledger is a history. A failure is `transient` when the storage
failed (an outage past the retry budget), not the input; the next run plans such an input
again. When an input that failed has samples later, a `recovered` row records it. An input is
*failed* while its latest row (by time) is a failure: `open_failures` counts each input once.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from losatok_data.index import KIND_KEY, VERSION_KEY
from losatok_data.layout import DatasetLayout
from losatok_data.versioning import SCHEMA_VERSION
from losatok_storage.filesystem import open_atomic, unwrap
from losatok_storage.retry import call, is_transient

# Stages a pipeline reports; not enforced, so a new stage needs no schema change.
STAGES = ("list", "read", "decode", "segment", "encode", "write")
RECOVERED = "recovered"  # the stage of a row recording that an earlier-failed input has samples now

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
        # since 1.2: the storage failed (retries spent), not the input; the next run retries it
        pa.field("transient", pa.bool_()),
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
    transient: bool = False  # the storage's fault, not the input's: retried by the next run

    @property
    def input_id(self) -> str:
        return self.key or self.location

    @classmethod
    def of(
        cls, location: str, stage: str, error: BaseException, attempts: int = 1, **kw: object
    ) -> FailureRecord:
        """A record of `error`, truncating long messages (a traceback is not a ledger row);
        transient when the storage failed past its retries (`losatok_storage.retry.is_transient`)."""
        kw.setdefault("transient", is_transient(error))
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
    """All ledger fragments as one table (fragments of 1.1 and older read `transient` as null)."""
    paths = layout.failure_fragments()
    if not paths:
        return LEDGER_SCHEMA.empty_table()

    def read() -> pa.Table:
        dataset = pads.dataset(paths, schema=LEDGER_SCHEMA, format="parquet", filesystem=unwrap(layout.fs))
        return dataset.to_table()

    return call(read, f"read the failure ledger of {layout.url}", layout.fs.policy)[0]


def open_failures(table: pa.Table) -> list[dict]:
    """The inputs that are failed now, one row each (as dicts): every input's latest row, unless
    that row records a recovery. An input is named by its key, or its location without one."""
    latest: dict[str, dict] = {}
    for row in table.to_pylist():
        name = row["key"] or row["location"]
        if name not in latest or row["time"] >= latest[name]["time"]:
            latest[name] = row
    return [row for row in latest.values() if row["stage"] != RECOVERED]


def failure_counts(table: pa.Table) -> dict[str, int]:
    """Inputs failed now, per stage of their latest failure (see open_failures)."""
    return dict(sorted(Counter(row["stage"] for row in open_failures(table)).items()))


def recovered_records(failed: Sequence[dict], writer: str) -> list[FailureRecord]:
    """Rows recording that these earlier-failed inputs (rows of open_failures) have samples now."""
    return [
        FailureRecord(
            row["location"],
            RECOVERED,
            "",
            "has samples after an earlier failure",
            0,
            key=row["key"],
            writer=writer,
        )
        for row in failed
    ]
