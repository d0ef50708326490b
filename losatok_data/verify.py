"""Checking a whole dataset against its contracts, and naming every fault found.

Faults (the dataset is wrong; `losatok-data verify` exits 1): a card that is missing,
malformed or of an unreadable version; an index fragment that is unreadable, of another
version, or names another shard; a committed shard whose tar is missing, truncated or
corrupt; a tar member whose bytes differ from the checksum in the index (any change, even to
finite values inside a `.npy`); a sample that does not decode or validate against the card's
fields (dtypes, shapes, frame counts agreeing across fields and groups, durations at the
card's frame rate, the card's sample rate); an index row without a sample, a sample without an
index row, an index row that disagrees with its sample; a key in two places; groups whose
tars disagree on keys; a committed shard whose stats fragment is missing, malformed, over
another frame count or (full mode) unlike the stats of its latents; card `latent_stats` that
are not the merge of the `stats/` fragments; card totals or failure counts that disagree with
what is there; a `shards.parquet` that is unreadable, has a row unequal to its shard's totals
in the index, or a row of a shard that is not committed.

Warnings (the dataset reads correctly; exit 0 unless --strict): a tar or stats fragment
without an index fragment, leftover temporary files, and committed shards missing from
`shards.parquet`. The commit protocol (see `losatok_data.layout`) makes them the normal trace
of an interrupted write: readers never see them (or, for the summary, read those shards'
fragments instead) and a rerun overwrites them, so they waste bytes or time but corrupt
nothing. A dataset without `shards.parquet` (it is optional) is not reported.

Notes (exit 0 even with --strict): data written before schema 1.1, whose index fragments
carry no checksums (its bytes are checked by decoding only) or which has no `stats/`.

`quick=True` checks structure only and reads no tar content: card, index fragments, stats
fragments and their merge, tars present with an end-of-archive marker, sizes and totals,
shard summary, ledger. It does not hash, decode or compare samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from losatok_data.card import DatasetCard, Totals, read_card
from losatok_data.checksums import ALGORITHMS, checksum
from losatok_data.errors import SchemaError
from losatok_data.fields import LATENT_GROUP, METADATA_MEMBER
from losatok_data.index import (
    INDEX_SCHEMA,
    KIND_KEY,
    MEASURE_COLUMNS,
    VERSION_KEY,
    fragment_checksum,
    read_shard_summary,
)
from losatok_data.layout import SUMMARY_NAME, DatasetLayout, shard_name
from losatok_data.ledger import LEDGER_SCHEMA, failure_counts
from losatok_data.reader import DatasetReader
from losatok_data.sample import decode_sample
from losatok_data.stats import ChannelStats, read_stats_fragment, stats_close
from losatok_data.versioning import check_version, parse_version
from losatok_storage.filesystem import read_parquet_file
from losatok_storage.tario import TarReadError, check_tar_end

FAULT = "fault"
WARNING = "warning"
NOTE = "note"
_TIME_TOLERANCE = 1e-6  # seconds: index and json both hold float64 seconds


@dataclass(frozen=True)
class Finding:
    level: str  # FAULT, WARNING or NOTE
    where: str  # "card.json", "latent/shard-000003.tar", "shard-000003/key", ...
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper()} {self.where}: {self.message}"


@dataclass
class VerifyReport:
    findings: list[Finding] = field(default_factory=list)
    shards: int = 0  # committed shards checked
    samples: int = 0  # samples decoded and validated (0 in quick mode)
    members: int = 0  # tar members whose checksum was recomputed
    quick: bool = False  # structural check only: no tar content read

    @property
    def faults(self) -> list[Finding]:
        return [f for f in self.findings if f.level == FAULT]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    @property
    def notes(self) -> list[Finding]:
        return [f for f in self.findings if f.level == NOTE]

    @property
    def ok(self) -> bool:
        return not self.faults

    def summary(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        checked = (
            "structure only (quick: no member read)"
            if self.quick
            else f"{self.samples} samples, {self.members} member checksums"
        )
        notes = f", {len(self.notes)} notes" if self.notes else ""
        return (
            f"{verdict}: {self.shards} shards, {checked} checked; "
            f"{len(self.faults)} faults, {len(self.warnings)} warnings{notes}"
        )


def verify_dataset(
    url: str | DatasetLayout, storage_options: Mapping[str, Any] | None = None, *, quick: bool = False
) -> VerifyReport:
    """Check everything a reader relies on (see module docstring); never raises for bad data.

    `quick` skips reading tar contents (no checksums, no decoding): structure and totals only.
    """
    layout = url if isinstance(url, DatasetLayout) else DatasetLayout(url, dict(storage_options or {}))
    report = VerifyReport(quick=quick)
    fault = lambda where, message: report.findings.append(Finding(FAULT, where, message))  # noqa: E731
    try:
        card = read_card(layout)
    except FileNotFoundError:
        fault("card.json", f"missing under {layout.url}; is this a dataset root?")
        return report
    except SchemaError as error:
        fault("card.json", str(error))
        return report

    index, algorithms = _check_index(layout, fault)
    unchecked = sorted(n for n in index if algorithms.get(n) is None)
    if unchecked and not quick:
        report.findings.append(
            Finding(
                NOTE,
                "index",
                f"{len(unchecked)} fragment(s) ({_names(unchecked)}) carry no checksums (written before "
                "schema 1.1): their samples were checked by decoding only",
            )
        )
    reader = DatasetReader(layout, card)
    keys_seen: dict[str, str] = {}
    shard_stats: dict[int, ChannelStats | None] = {}
    for number, rows in index.items():
        report.shards += 1
        if quick:
            _check_tars_present(reader, number, fault)
            continue
        check = _ShardCheck(reader, number, rows, keys_seen, fault, algorithms.get(number))
        check.run()
        report.samples += check.samples
        report.members += check.members
        shard_stats[number] = check.stats if check.stats_complete else None
    committed = set(layout.committed_shards())
    _check_orphans(layout, card, committed, report)
    _check_totals(card, _measure(layout, card, index), fault)
    _check_summary(layout, index, committed, report)
    _check_ledger(layout, card, fault)
    _check_stats(layout, card, index, None if quick else shard_stats, report)
    return report


def _names(numbers: list[int], limit: int = 3) -> str:
    shown = ", ".join(shard_name(n) for n in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


def _check_index(layout: DatasetLayout, fault) -> tuple[dict[int, dict[str, dict]], dict[int, str | None]]:
    """Shard number -> {key: index row} for every committed shard whose fragment reads, and
    shard number -> the checksum algorithm of its fragment (None: it has no checksums)."""
    out: dict[int, dict[str, dict]] = {}
    algorithms: dict[int, str | None] = {}
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
            algorithm = fragment_checksum(table)
            if algorithm is not None and algorithm not in ALGORITHMS:
                raise SchemaError(
                    f"names checksum algorithm {algorithm!r}; this software knows {sorted(ALGORITHMS)}"
                )
            if algorithm is not None and "checksums" not in table.column_names:
                raise SchemaError(f"names checksum algorithm {algorithm!r} but has no checksums column")
        except (SchemaError, OSError, ValueError) as error:
            fault(where, f"unreadable index fragment: {error}")
            continue
        algorithms[number] = algorithm
        rows: dict[str, dict] = {}
        for row in table.to_pylist():
            if row["shard"] != shard_name(number):
                fault(where, f"row {row['key']!r} names shard {row['shard']!r}")
            if row["key"] in rows:
                fault(where, f"key {row['key']!r} has two rows")
            rows[row["key"]] = row
        out[number] = rows
    return out, algorithms


def _check_tars_present(reader: DatasetReader, number: int, fault) -> None:
    """Quick mode: every group's tar of a committed shard exists and ends like a whole tar."""
    for group in reader.card.fields.groups():
        where = f"{group}/{shard_name(number)}.tar"
        path = reader.layout.tar_path(group, number)
        if not reader.layout.fs.exists(path):
            fault(where, "missing: the shard is committed (index fragment exists) but this tar is not there")
            continue
        problem = check_tar_end(reader.layout.fs, path)
        if problem:
            fault(where, problem)


class _ShardCheck:
    """Every group's tar of one committed shard against its index rows, member by member.

    Counts the samples decoded and the member checksums recomputed, and accumulates the
    stats of the stored latents in written order (as the writer did) for the stats check.
    """

    def __init__(
        self, reader: DatasetReader, number: int, rows: dict[str, dict], keys_seen, fault, algorithm
    ):
        self.reader, self.number, self.rows = reader, number, rows
        self.keys_seen, self.fault, self.algorithm = keys_seen, fault, algorithm
        self.name = shard_name(number)
        self.samples = self.members = 0
        self.stats: ChannelStats | None = None
        self.stats_complete = True
        self._unlisted: set[str] = set()  # keys whose row lacks checksums, reported once
        self._digests = {  # key -> {member: digest} from the index, consumed as members are met
            key: dict(row["checksums"]) for key, row in rows.items() if row.get("checksums") is not None
        }

    def run(self) -> None:
        name, card, layout, fault = self.name, self.reader.card, self.reader.layout, self.fault
        latent_keys: list[str] = []
        metadata: dict[str, bytes] = {}  # key -> json member, to validate other groups' frame counts
        present: dict[str, set[str]] = {}  # key -> array fields found, across groups
        read_groups: set[str] = set()
        for group in card.fields.groups():
            where = f"{group}/{name}.tar"
            path = layout.tar_path(group, self.number)
            if not layout.fs.exists(path):
                fault(
                    where, "missing: the shard is committed (index fragment exists) but this tar is not there"
                )
                continue
            problem = check_tar_end(layout.fs, path)
            if problem:
                fault(where, problem)
            keys: list[str] = []
            try:
                for members in _raw(self.reader, self.number, group):
                    key = members["__key__"]
                    keys.append(key)
                    self._check_checksums(where, members)
                    if group == LATENT_GROUP:
                        self._check_latent_sample(members)
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
                read_groups.add(group)
            except (SchemaError, TarReadError) as error:
                fault(where, str(error).removeprefix(f"{where}: "))
            if group == LATENT_GROUP:
                latent_keys = keys
                for key in sorted(self.rows.keys() - set(keys)):
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
            row, found = self.rows.get(key), present.get(key, set())
            if row is not None and set(row["fields"]) != found:
                fault(
                    f"{name}/{key}", f"index lists fields {sorted(row['fields'])}; tars hold {sorted(found)}"
                )
        if self.algorithm is not None and read_groups == set(card.fields.groups()):
            for key, left in self._digests.items():  # members the index lists that no tar holds
                if left and key in latent_keys:
                    fault(f"{name}/{key}", f"index has checksums of {sorted(left)}, which no tar holds")

    def _check_checksums(self, where: str, members: dict[str, Any]) -> None:
        if self.algorithm is None:
            return
        key = members["__key__"]
        row = self.rows.get(key)
        if row is None:
            return  # "sample without an index row" is reported by the latent check
        if row.get("checksums") is None:
            if key in self._unlisted:
                return
            self._unlisted.add(key)
            self.fault(
                f"{self.name}/{key}",
                f"index row has no checksums, though its fragment names {self.algorithm}",
            )
            return
        expected = self._digests.setdefault(key, {})
        for member, data in members.items():
            if member == "__key__":
                continue
            self.members += 1
            want = expected.pop(member, None)
            if want is None:
                self.fault(where, f"member {key}.{member} has no checksum in index/{self.name}.parquet")
                continue
            got = checksum(data, self.algorithm)
            if got != want:
                self.fault(
                    where,
                    f"member {key}.{member}: {self.algorithm} {got[:16]}... differs from the index's "
                    f"{want[:16]}...; its bytes changed after they were written",
                )

    def _check_latent_sample(self, members) -> None:
        card, key, fault = self.reader.card, members["__key__"], self.fault
        where = f"{self.name}/{key}"
        self.samples += 1
        if key in self.keys_seen:
            fault(where, f"key also in {self.keys_seen[key]}")
        self.keys_seen[key] = self.name
        row = self.rows.get(key)
        if row is None:
            fault(where, "sample without an index row")
        try:
            sample = decode_sample(members, card.fields, frame_rate=card.frame_rate, groups=[LATENT_GROUP])
        except SchemaError as error:
            fault(where, str(error))
            self.stats_complete = False  # the shard's stats cannot be recomputed; the fault says why
            return
        latent = sample.arrays["latent"]  # as stored: the writer's stats are over these values
        self.stats = ChannelStats.of(latent) if self.stats is None else self.stats.update(latent)
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
                *(
                    (name, getattr(meta, name), isinstance(getattr(meta, name), float))
                    for name in MEASURE_COLUMNS
                ),
            ):
                indexed = row.get(column)  # a column an older minor lacks reads as None
                same = (
                    indexed is not None and math.isclose(indexed, value, abs_tol=_TIME_TOLERANCE)
                    if close
                    else indexed == value
                )
                if not same:
                    fault(where, f"index {column} {indexed!r} disagrees with the sample's {value!r}")


def _raw(reader: DatasetReader, number: int, group: str) -> Iterator[dict[str, Any]]:
    try:
        yield from reader.iter_raw(number, group)
    except OSError as error:
        raise SchemaError(f"cannot read: {error}") from None


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
    for number in sorted(layout.stats_fragments().keys() - committed):
        report.findings.append(
            Finding(
                WARNING,
                f"stats/{shard_name(number)}.json",
                "no index fragment: the stats of an uncommitted write, ignored by readers",
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


def _check_summary(
    layout: DatasetLayout, index: dict[int, dict[str, dict]], committed: set[int], report: VerifyReport
) -> None:
    """`shards.parquet`, when there: each row equal to its committed shard's totals in the index."""
    add = lambda level, where, message: report.findings.append(Finding(level, where, message))  # noqa: E731
    try:
        summary = read_shard_summary(layout)
    except (SchemaError, OSError, ValueError) as error:
        add(FAULT, SUMMARY_NAME, f"unreadable shard summary: {error}")
        return
    if summary is None:
        return  # optional: readers summarise every shard from its fragment
    for number, said in summary.items():
        where = f"{SUMMARY_NAME} {said.name}"
        if number not in committed:
            add(FAULT, where, "a row of a shard that is not committed (it has no index fragment)")
            continue
        if number not in index:
            continue  # its fragment is unreadable, a fault reported by the index check
        rows = index[number].values()
        samples, frames = len(rows), sum(r["frame_count"] for r in rows)
        seconds = sum(r["duration"] for r in rows)
        if (said.samples, said.frames) != (samples, frames) or not math.isclose(
            said.seconds, seconds, rel_tol=1e-9, abs_tol=1e-9
        ):
            add(
                FAULT,
                where,
                f"says {said.samples} samples, {said.frames} frames, {said.seconds} s; "
                f"index/{said.name}.parquet has {samples} samples, {frames} frames, {seconds} s",
            )
    lacking = sorted(committed - summary.keys())
    if lacking:
        add(
            WARNING,
            SUMMARY_NAME,
            f"lacks {len(lacking)} committed shard(s) ({_names(lacking)}), which readers summarise "
            "from their index fragments; a finished run rewrites it",
        )


def _check_ledger(layout: DatasetLayout, card: DatasetCard, fault) -> None:
    tables = []
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
        tables.append(table.select([n for n in LEDGER_SCHEMA.names if n in table.column_names]))
    ledger = pa.concat_tables(tables, promote_options="default") if tables else LEDGER_SCHEMA.empty_table()
    for name in LEDGER_SCHEMA.names:  # columns an older minor lacks read as nulls
        if name not in ledger.column_names:
            ledger = ledger.append_column(name, pa.nulls(len(ledger), LEDGER_SCHEMA.field(name).type))
    counts = failure_counts(ledger)  # inputs failed now, each once (the ledger is a history)
    said = {k: v for k, v in card.failures.items() if v}
    if said != counts:
        fault("card.json failures", f"card says {said}; the ledger has {counts}")


def _check_stats(
    layout: DatasetLayout,
    card: DatasetCard,
    index: dict[int, dict[str, dict]],
    measured: dict[int, ChannelStats | None] | None,
    report: VerifyReport,
) -> None:
    """Each committed shard's stats fragment against its frames (and, when `measured`, its
    latents); the card's `latent_stats` against the merge of the fragments."""
    fault = lambda where, message: report.findings.append(Finding(FAULT, where, message))  # noqa: E731
    dim = card.fields["latent"].frame_shape[0]
    committed = list(layout.committed_shards())
    fragments = layout.stats_fragments()
    total_frames = sum(r["frame_count"] for rows in index.values() for r in rows.values())
    if card.latent_stats is not None and card.latent_stats.dim != dim:
        fault("card.json latent_stats", f"has {card.latent_stats.dim} channels; latent has {dim}")
    if (
        committed
        and not any(n in fragments for n in committed)
        and parse_version(card.schema_version) < (1, 1)
    ):
        # schema 1.0 writers other than the pipeline kept no per-shard stats
        report.findings.append(
            Finding(
                NOTE,
                "stats",
                f"no stats fragments (card of schema {card.schema_version}): card latent_stats "
                "checked against the frame count only",
            )
        )
        if card.latent_stats is not None and card.latent_stats.count != total_frames:
            fault(
                "card.json latent_stats",
                f"over {card.latent_stats.count} frames; the dataset has {total_frames}",
            )
        return
    merged: ChannelStats | None = ChannelStats.empty(dim)
    for number in committed:
        where = f"stats/{shard_name(number)}.json"
        frames = sum(r["frame_count"] for r in index[number].values()) if number in index else None
        if number not in fragments:
            if frames == 0:
                continue  # an empty shard: schema 1.0 pipelines wrote no stats for it
            fault(
                where,
                f"missing: {shard_name(number)} is committed with {frames} latent frames "
                "but has no stats fragment, so the card's latent_stats cannot be proven",
            )
            merged = None
            continue
        try:
            stats = read_stats_fragment(layout, number)
        except (OSError, ValueError) as error:
            fault(where, f"unreadable: {error}")
            merged = None
            continue
        if stats.dim != dim:
            fault(where, f"has {stats.dim} channels; latent has {dim}")
            merged = None
            continue
        if frames is not None and stats.count != frames:
            fault(where, f"over {stats.count} frames; {shard_name(number)} has {frames}")
        shard = (measured or {}).get(number)
        if shard is not None and not stats_close(stats, shard):
            fault(where, f"disagree with the stats of {shard_name(number)}'s stored latents, recomputed")
        if merged is not None:
            merged = merged.merge(stats)
    if merged is None:
        return  # the faults above name the fragments; a merge of the rest proves nothing
    said = card.latent_stats
    if said is None:
        if merged.count:
            fault("card.json latent_stats", f"missing; stats/ holds stats over {merged.count} frames")
        return
    if said.count != merged.count:
        fault(
            "card.json latent_stats", f"over {said.count} frames; the merge of stats/ is over {merged.count}"
        )
    elif said.dim == merged.dim and not stats_close(said, merged):
        worst = int(np.argmax(np.abs(said.mean - merged.mean) + np.abs(said.std - merged.std)))
        fault(
            "card.json latent_stats",
            f"are not the merge of stats/ (channel {worst}: card mean {said.mean[worst]:.6g} "
            f"std {said.std[worst]:.6g}; stats/ mean {merged.mean[worst]:.6g} std {merged.std[worst]:.6g})",
        )
