"""Checking a whole dataset against its contracts, and naming every fault found.

Faults (the dataset is wrong; `losatok-data verify` exits 1): a card that is missing,
malformed or of an unreadable version; an index fragment that is unreadable, of another
version, or names another shard; a committed shard whose tar is missing, truncated or
corrupt; a sample that does not decode or validate against the card's fields (dtypes,
shapes, frame counts agreeing across fields and groups, durations at the card's frame rate,
the card's sample rate); an index row without a sample, a sample without an index row, an
index row that disagrees with its sample; a key in two places; groups whose tars disagree on
keys; card totals or failure counts that disagree with what is there.

Warnings (the dataset reads correctly; exit 0 unless --strict): a tar without an index
fragment, and leftover temporary files. The commit protocol (see `schemas.layout`) makes an
uncommitted tar a normal trace of an interrupted write: readers never see it and a rerun
overwrites it, so it wastes bytes but corrupts nothing. Latent stats over a frame count other
than the dataset's are a warning too, since a pipeline may estimate them on a subset.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.card import DatasetCard, Totals, read_card
from schemas.errors import SchemaError
from schemas.fields import LATENT_GROUP, METADATA_MEMBER
from schemas.index import INDEX_SCHEMA, KIND_KEY, VERSION_KEY
from schemas.layout import DatasetLayout, shard_name
from schemas.ledger import LEDGER_SCHEMA
from schemas.reader import DatasetReader
from schemas.sample import decode_sample
from schemas.storage import read_parquet_file
from schemas.tario import check_tar_end
from schemas.versioning import check_version

FAULT = "fault"
WARNING = "warning"
_TIME_TOLERANCE = 1e-6  # seconds: index and json both hold float64 seconds


@dataclass(frozen=True)
class Finding:
    level: str  # FAULT or WARNING
    where: str  # "card.json", "latent/shard-000003.tar", "shard-000003/key", ...
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper()} {self.where}: {self.message}"


@dataclass
class VerifyReport:
    findings: list[Finding] = field(default_factory=list)
    shards: int = 0  # committed shards checked
    samples: int = 0  # samples decoded and validated

    @property
    def faults(self) -> list[Finding]:
        return [f for f in self.findings if f.level == FAULT]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    @property
    def ok(self) -> bool:
        return not self.faults

    def summary(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return (
            f"{verdict}: {self.shards} shards, {self.samples} samples checked; "
            f"{len(self.faults)} faults, {len(self.warnings)} warnings"
        )


def verify_dataset(
    url: str | DatasetLayout, storage_options: Mapping[str, Any] | None = None
) -> VerifyReport:
    """Check everything a reader relies on (see module docstring); never raises for bad data."""
    layout = url if isinstance(url, DatasetLayout) else DatasetLayout(url, dict(storage_options or {}))
    report = VerifyReport()
    fault = lambda where, message: report.findings.append(Finding(FAULT, where, message))  # noqa: E731
    try:
        card = read_card(layout)
    except FileNotFoundError:
        fault("card.json", f"missing under {layout.url}; is this a dataset root?")
        return report
    except SchemaError as error:
        fault("card.json", str(error))
        return report

    index = _check_index(layout, fault)
    reader = DatasetReader(layout, card)
    keys_seen: dict[str, str] = {}
    for number, rows in index.items():
        report.shards += 1
        report.samples += _check_shard(reader, number, rows, keys_seen, fault)
    _check_orphans(layout, card, set(layout.committed_shards()), report)
    _check_totals(card, _measure(layout, card, index), fault)
    _check_ledger(layout, card, fault)
    if card.latent_stats is not None:
        dim = card.fields["latent"].frame_shape[0]
        if card.latent_stats.dim != dim:
            fault("card.json latent_stats", f"has {card.latent_stats.dim} channels; latent has {dim}")
        total_frames = sum(r["frame_count"] for rows in index.values() for r in rows.values())
        if card.latent_stats.count != total_frames:
            report.findings.append(
                Finding(
                    WARNING,
                    "card.json latent_stats",
                    f"over {card.latent_stats.count} frames; dataset has {total_frames}",
                )
            )
    return report


def _check_index(layout: DatasetLayout, fault) -> dict[int, dict[str, dict]]:
    """Shard number -> {key: index row} for every committed shard whose fragment reads."""
    out: dict[int, dict[str, dict]] = {}
    for number, path in layout.committed_shards().items():
        where = f"index/{shard_name(number)}.parquet"
        try:
            table = read_parquet_file(layout.fs, path)
            metadata = table.schema.metadata or {}
            check_version((metadata.get(VERSION_KEY) or b"").decode() or None, f"index fragment {where}")
            if metadata.get(KIND_KEY) != b"index":
                raise SchemaError(f"is not an index fragment (kind {metadata.get(KIND_KEY)!r})")
            missing = [f.name for f in INDEX_SCHEMA if f.name not in table.column_names and not f.nullable]
            if missing:
                raise SchemaError(f"lacks required columns {missing}")
        except (SchemaError, OSError, ValueError) as error:
            fault(where, f"unreadable index fragment: {error}")
            continue
        rows: dict[str, dict] = {}
        for row in table.to_pylist():
            if row["shard"] != shard_name(number):
                fault(where, f"row {row['key']!r} names shard {row['shard']!r}")
            if row["key"] in rows:
                fault(where, f"key {row['key']!r} has two rows")
            rows[row["key"]] = row
        out[number] = rows
    return out


def _check_shard(
    reader: DatasetReader, number: int, rows: dict[str, dict], keys_seen: dict[str, str], fault
) -> int:
    """Check every group's tar of one committed shard against its index rows; returns samples checked."""
    name, card, layout = shard_name(number), reader.card, reader.layout
    latent_keys: list[str] = []
    metadata: dict[str, bytes] = {}  # key -> json member, to validate other groups' frame counts
    present: dict[str, set[str]] = {}  # key -> array fields found, across groups
    checked = 0
    for group in card.fields.groups():
        where = f"{group}/{name}.tar"
        path = layout.tar_path(group, number)
        if not layout.fs.exists(path):
            fault(where, "missing: the shard is committed (index fragment exists) but this tar is not there")
            continue
        problem = check_tar_end(layout.fs, path)
        if problem:
            fault(where, problem)
        keys: list[str] = []
        try:
            for members in _raw(reader, number, group):
                key = members["__key__"]
                keys.append(key)
                if group == LATENT_GROUP:
                    checked += _check_latent_sample(reader, name, members, rows, keys_seen, fault)
                    metadata[key] = members.get(METADATA_MEMBER, b"")
                elif key in metadata:
                    try:
                        decode_sample(
                            {**members, METADATA_MEMBER: metadata[key]}, card.fields, groups=[group]
                        )
                    except SchemaError as error:
                        fault(f"{name}/{key}", f"{group} group: {error}")
                present.setdefault(key, set()).update(
                    s.name for s in card.fields.in_group(group) if s.member in members
                )
        except SchemaError as error:
            fault(where, str(error).removeprefix(f"{where}: "))
        if group == LATENT_GROUP:
            latent_keys = keys
            for key in sorted(rows.keys() - set(keys)):
                fault(f"{name}/{key}", "index row without a sample in the tar")
        elif keys != latent_keys:
            missing, extra = set(latent_keys) - set(keys), set(keys) - set(latent_keys)
            detail = f"lacks {sorted(missing)[:5]}, " if missing else ""
            detail += f"has extra {sorted(extra)[:5]}, " if extra else ""
            fault(
                where,
                f"keys disagree with latent/{name}.tar: {detail or 'different order, '}joined by key and order",
            )
    for key in latent_keys:  # a key missing from the latent tar is reported above already
        row, found = rows.get(key), present.get(key, set())
        if row is not None and set(row["fields"]) != found:
            fault(f"{name}/{key}", f"index lists fields {sorted(row['fields'])}; tars hold {sorted(found)}")
    return checked


def _raw(reader: DatasetReader, number: int, group: str) -> Iterator[dict[str, Any]]:
    try:
        yield from reader.iter_raw(number, group)
    except OSError as error:
        raise SchemaError(f"cannot read: {error}") from None


def _check_latent_sample(reader: DatasetReader, name: str, members, rows, keys_seen, fault) -> int:
    card, key = reader.card, members["__key__"]
    where = f"{name}/{key}"
    if key in keys_seen:
        fault(where, f"key also in {keys_seen[key]}")
    keys_seen[key] = name
    row = rows.get(key)
    if row is None:
        fault(where, "sample without an index row")
    try:
        sample = decode_sample(members, card.fields, frame_rate=card.frame_rate, groups=[LATENT_GROUP])
    except SchemaError as error:
        fault(where, str(error))
        return 1
    meta = sample.metadata
    if meta.sample_rate != card.sample_rate:
        fault(where, f"json sample_rate {meta.sample_rate} Hz; the card says {card.sample_rate} Hz")
    if row is not None:
        for column, value, close in (
            ("frame_count", meta.frame_count, False),
            ("duration", meta.duration, True),
            ("offset", meta.offset, True),
            ("source", meta.source, False),
            ("text", meta.text, False),
        ):
            indexed = row[column]
            same = (
                indexed is not None and math.isclose(indexed, value, abs_tol=_TIME_TOLERANCE)
                if close
                else indexed == value
            )
            if not same:
                fault(where, f"index {column} {indexed!r} disagrees with the sample's {value!r}")
    return 1


def _check_orphans(
    layout: DatasetLayout, card: DatasetCard, committed: set[int], report: VerifyReport
) -> None:
    for group in card.fields.groups():
        for number in sorted(layout.tars(group).keys() - committed):
            report.findings.append(
                Finding(
                    WARNING,
                    f"{group}/{shard_name(number)}.tar",
                    "no index fragment: an uncommitted write, ignored by readers",
                )
            )
    for path in layout.temporary_files():
        report.findings.append(
            Finding(WARNING, path.removeprefix(layout.root + "/"), "leftover temporary file")
        )


def _measure(layout: DatasetLayout, card: DatasetCard, index: dict[int, dict[str, dict]]) -> Totals:
    # From the fragments already read, so one unreadable fragment does not hide the rest.
    committed = layout.committed_shards()
    by_group = {}
    for group in card.fields.groups():
        tars = layout.tars(group)
        by_group[group] = sum(layout.fs.size(tars[n]) for n in committed if n in tars)
    rows = [r for shard in index.values() for r in shard.values()]
    return Totals(
        samples=len(rows),
        frames=sum(r["frame_count"] for r in rows),
        hours=sum(r["duration"] for r in rows) / 3600.0,
        shards=len(committed),
        bytes=sum(by_group.values()),
        bytes_by_group=by_group,
    )


def _check_totals(card: DatasetCard, measured: Totals, fault) -> None:
    for name in ("samples", "frames", "shards"):
        said, found = getattr(card.totals, name), getattr(measured, name)
        if said != found:
            fault(f"card.json totals.{name}", f"card says {said}; the dataset has {found}")
    if not math.isclose(card.totals.hours, measured.hours, rel_tol=1e-9, abs_tol=1e-9):
        fault("card.json totals.hours", f"card says {card.totals.hours}; the dataset has {measured.hours}")
    said_groups, found_groups = dict(card.totals.bytes_by_group), dict(measured.bytes_by_group)
    if card.totals.bytes != measured.bytes or (said_groups and said_groups != found_groups):
        fault(
            "card.json totals.bytes",
            f"card says {card.totals.bytes} {said_groups}; the dataset has {measured.bytes} {found_groups}",
        )


def _check_ledger(layout: DatasetLayout, card: DatasetCard, fault) -> None:
    counts: Counter[str] = Counter()
    for path in layout.failure_fragments():
        where = path.removeprefix(layout.root + "/")
        try:
            table = read_parquet_file(layout.fs, path)
            check_version(
                (table.schema.metadata or {}).get(VERSION_KEY, b"").decode() or None, f"ledger {where}"
            )
            missing = [f.name for f in LEDGER_SCHEMA if f.name not in table.column_names and not f.nullable]
            if missing:
                raise SchemaError(f"lacks required columns {missing}")
        except (SchemaError, OSError, ValueError) as error:
            fault(where, f"unreadable failure ledger fragment: {error}")
            continue
        counts.update(table.column("stage").to_pylist())
    said = {k: v for k, v in card.failures.items() if v}
    if said != dict(counts):
        fault("card.json failures", f"card says {said}; the ledger has {dict(sorted(counts.items()))}")
