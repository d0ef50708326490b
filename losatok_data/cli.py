"""`losatok-data`: check and inspect a latent dataset (local path or s3:// prefix).

```
losatok-data verify ROOT [--strict] [--quick]   # every fault on its own line; exit 1 if any
losatok-data stats ROOT [--json]                # totals, durations, field sizes, audio measures
losatok-data ls ROOT [--source TEXT] [--where EXPR]... [--sort COLUMN [--desc]] [--limit N] [--json]
                                                # keys, durations, sources and audio measures
losatok-data show ROOT KEY [--json]             # one sample (KEY: a key or a unique prefix)
losatok-data duplicates ROOT [--json | --extra-keys]  # sample keys of equal audio (content_hash)
```
`--where` takes `COLUMN<OP>VALUE` (OP: <, <=, >, >=, ==, !=) on any index column, e.g.
`--where 'silent_fraction>0.5' --where 'rms_db<-40'`; a null (a row written before schema
1.3 has no audio measures) matches no comparison.
Exit status: 0 success, 1 `verify` found faults, 2 the command cannot run (no dataset at
ROOT, no such key, a card from a newer schema, bad arguments): one line on stderr.
Storage options (e.g. an S3 endpoint) come from `--storage-option key=value` (repeatable;
values parsed as JSON when they parse) over the JSON object in $LOSATOK_STORAGE_OPTIONS.
Credentials belong in the usual AWS variables; nothing here prints storage options.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from losatok_data.errors import SchemaError
from losatok_data.index import INDEX_SCHEMA, MEASURE_COLUMNS, read_fragments
from losatok_data.reader import DatasetReader, open_dataset
from losatok_data.verify import verify_dataset
from losatok_storage.filesystem import url_to_fs
from losatok_storage.tario import TarReadError

STORAGE_OPTIONS_ENV = "LOSATOK_STORAGE_OPTIONS"
HISTOGRAM_EDGES = (0, 1, 2, 5, 10, 20, 30, 60, 120, 300)  # seconds; the last bin is open-ended
LS_COLUMNS = ("key", "duration", "shard", "source", "offset")
# the measures whose distributions `stats` shows (content_hash: counted as duplicates instead)
DISTRIBUTED_MEASURES = ("rms_db", "peak", "clipped_fraction", "silent_fraction", "loudness_lufs")
QUANTILES = {"min": 0, "p5": 5, "median": 50, "p95": 95, "max": 100}  # percent
MOSTLY_SILENT = 0.9  # silent_fraction at or above which `stats` counts a sample as mostly silent
NO_MEASURES = "no audio measures (written before schema 1.3)"
COMPARISONS: dict[str, Callable[..., Any]] = {
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
    "==": pc.equal,
    "!=": pc.not_equal,
}
WHERE = re.compile(r"^\s*(\w+)\s*(<=|>=|==|!=|<|>)\s*(.*?)\s*$")  # two-character operators first


class ArgumentError(ValueError):
    """An argument names no index column or does not parse (exit 2, one line)."""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `losatok-data ls ... | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        options = storage_options(args.storage_option)
    except ValueError as error:
        parser.error(str(error))
    try:
        if args.command == "verify":
            return _verify(args, options)
        if args.command == "ls":  # arguments first: a typo fails before any read
            conditions = [Condition.parse(text) for text in args.where]
            sort = _index_field(args.sort, f"--sort {args.sort}", sortable=True) if args.sort else None
        reader = open_dataset(args.root, options)
        if args.command == "stats":
            return _stats(reader, args.json)
        if args.command == "ls":
            return _ls(reader, args.source, conditions, sort, args.desc, args.limit, args.json)
        if args.command == "duplicates":
            return _duplicates(reader, args.json, args.extra_keys)
        return _show(reader, resolve_key(reader, args.key), args.json)
    except (SchemaError, TarReadError, FileNotFoundError, KeyError, ArgumentError) as error:
        message = error.args[0] if isinstance(error, KeyError) else str(error)
        print(f"error: {message.splitlines()[0] if message else type(error).__name__}", file=sys.stderr)
        return 2


def storage_options(pairs: Sequence[str] = ()) -> dict[str, Any]:
    """Options from $LOSATOK_STORAGE_OPTIONS (a JSON object), overridden by `key=value` pairs."""
    options: dict[str, Any] = {}
    if os.environ.get(STORAGE_OPTIONS_ENV):
        try:
            options.update(json.loads(os.environ[STORAGE_OPTIONS_ENV]))
        except (json.JSONDecodeError, TypeError, ValueError):
            raise ValueError(f"${STORAGE_OPTIONS_ENV} is not a JSON object") from None
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option takes key=value, got {pair.split('=')[0]!r}...")
        try:
            options[key] = json.loads(value)  # numbers, booleans, nested objects
        except json.JSONDecodeError:
            options[key] = value
    return options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="losatok-data", description="Check and inspect a LoSATok latent dataset."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("root", help="dataset root: a local folder or an s3:// prefix")
    common.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"fsspec storage option, e.g. endpoint_url=http://127.0.0.1:9000 (also ${STORAGE_OPTIONS_ENV})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser(
        "verify",
        parents=[common],
        help="check every shard, sample, member checksum, index row, stats fragment and total",
    )
    verify.add_argument(
        "--strict", action="store_true", help="count warnings (e.g. uncommitted tars) as faults"
    )
    verify.add_argument(
        "--quick",
        action="store_true",
        help="structure only: files, tar ends, sizes, index, stats and totals; no member is read or hashed",
    )
    stats = commands.add_parser(
        "stats", parents=[common], help="totals, duration histogram, per-field sizes, audio measures"
    )
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    ls = commands.add_parser(
        "ls", parents=[common], help="sample keys with their durations, sources and audio measures"
    )
    ls.add_argument("--source", default=None, metavar="TEXT", help="only samples whose source contains TEXT")
    ls.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="EXPR",
        help="only samples where COLUMN<OP>VALUE holds (OP: < <= > >= == !=; repeatable, all must "
        "hold; a null matches nothing), e.g. 'rms_db<-40'",
    )
    ls.add_argument("--sort", default=None, metavar="COLUMN", help="order by this index column (nulls last)")
    ls.add_argument("--desc", action="store_true", help="with --sort: largest first")
    ls.add_argument("--limit", type=int, default=None, metavar="N", help="at most N rows")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    show = commands.add_parser("show", parents=[common], help="one sample's metadata and shapes")
    show.add_argument("key", help="the sample's __key__, or a prefix of it that only one key has")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    duplicates = commands.add_parser(
        "duplicates", parents=[common], help="groups of sample keys whose audio is equal (content_hash)"
    )
    output = duplicates.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object")
    output.add_argument(
        "--extra-keys",
        action="store_true",
        help="print only the keys after the first of each group (index order), one per line: "
        "as a loader's filters.exclude_keys_file it keeps one copy of each",
    )
    return parser


def _verify(args: argparse.Namespace, options: dict[str, Any]) -> int:
    fs, path = url_to_fs(args.root, options)
    if not fs.exists(path):
        raise FileNotFoundError(f"no dataset at {args.root}")
    report = verify_dataset(args.root, options, quick=args.quick)
    for finding in report.findings:
        print(finding)
    print(report.summary())
    failed = not report.ok or (args.strict and report.warnings)
    return 1 if failed else 0


def _stats(reader: DatasetReader, as_json: bool) -> int:
    card, index = reader.card, reader.index()
    totals = reader.measured_totals()
    durations = np.asarray(index.column("duration").to_numpy(zero_copy_only=False), dtype=np.float64)
    counts, _ = np.histogram(durations, bins=[*HISTOGRAM_EDGES, np.inf])
    histogram = {
        (f"{lo}-{hi} s" if hi != np.inf else f">={lo} s"): int(c)
        for lo, hi, c in zip(HISTOGRAM_EDGES, [*HISTOGRAM_EDGES[1:], np.inf], counts)
    }
    fields = {
        s.name: {
            "group": s.group,
            "dtype": s.dtype,
            "frame_shape": list(s.frame_shape),
            "bytes": s.bytes_per_frame() * int(pc.sum(_frames_with(index, s.name)).as_py() or 0),
        }
        for s in card.fields
    }
    out = {
        "root": reader.layout.url,
        "schema_version": card.schema_version,
        "tokenizer": card.tokenizer.preset,
        "samples": totals.samples,
        "shards": totals.shards,
        "hours": totals.hours,
        "frames": totals.frames,
        "bytes": totals.bytes,
        "bytes_by_group": dict(totals.bytes_by_group),
        "duration_seconds": _describe(durations),
        "duration_histogram": histogram,
        "field_payload_bytes": fields,  # array data only; tar headers and .npy headers excluded
        "failed_inputs": dict(card.failures),
        "measures": measure_summary(index),  # None: no row has any (written before schema 1.3)
    }
    if as_json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"dataset   {out['root']} (schema {card.schema_version}, tokenizer {card.tokenizer.preset})")
    print(
        f"samples   {totals.samples} in {totals.shards} shards, {totals.hours:.3f} h, {totals.frames} frames"
    )
    groups = ", ".join(f"{g} {_size(b)}" for g, b in totals.bytes_by_group.items())
    print(f"bytes     {_size(totals.bytes)} ({groups})")
    d = out["duration_seconds"]
    if d:
        print(f"duration  min {d['min']:.2f} s, mean {d['mean']:.2f} s, max {d['max']:.2f} s")
    peak = max(histogram.values(), default=0) or 1
    for label, count in histogram.items():
        print(f"  {label:>11} {count:8d} {'#' * round(40 * count / peak)}".rstrip())
    print("fields (array payload)")
    for name, f in fields.items():
        shape = "x".join(str(n) for n in f["frame_shape"])
        print(f"  {name:<14} {f['group']:<9} {f['dtype']:<8} (T, {shape}) {_size(f['bytes'])}")
    _print_measures(out["measures"], totals.samples)
    by_stage = ", ".join(f"{stage} {count}" for stage, count in card.failures.items() if count)
    print(f"failed    {card.failed_inputs} inputs" + (f" ({by_stage})" if by_stage else ""))
    return 0


def measure_summary(index: pa.Table) -> dict[str, Any] | None:
    """Distributions of the audio measures over the rows that have them, clipped and mostly
    silent counts, and duplicates by content_hash; None when no row has a measure."""
    measured = np.zeros(index.num_rows, bool)
    for name in MEASURE_COLUMNS:
        measured |= _valid(index.column(name))
    if not measured.any():
        return None
    distributions = {}
    for name in DISTRIBUTED_MEASURES:
        values = np.asarray(pc.drop_null(index.column(name)).to_numpy(), np.float64)
        distributions[name] = {"count": int(values.size)} | (
            {q: float(np.percentile(values, p)) for q, p in QUANTILES.items()} if values.size else {}
        )
    groups = duplicate_groups(index)
    return {
        "samples_measured": int(measured.sum()),  # rows with any measure
        "distributions": distributions,  # rms_db in dBFS, loudness_lufs in LUFS, the rest linear
        "clipped_samples": _count_true(pc.greater(index.column("clipped_fraction"), 0.0)),
        "mostly_silent_samples": _count_true(
            pc.greater_equal(index.column("silent_fraction"), MOSTLY_SILENT)
        ),
        "hashed_samples": int(_valid(index.column("content_hash")).sum()),
        "duplicate_groups": len(groups),
        "duplicate_samples": sum(g["count"] - 1 for g in groups),  # beyond the first of each group
        "duplicate_seconds": sum(g["duplicate_seconds"] for g in groups),
    }


def _print_measures(measures: dict[str, Any] | None, samples: int) -> None:
    if measures is None:
        print(f"measures  none: {NO_MEASURES}")
        return
    print(f"measures  {measures['samples_measured']} of {samples} samples measured")
    print(f"  {'':<16} {'count':>7}" + "".join(f" {q:>9}" for q in QUANTILES))
    for name, d in measures["distributions"].items():
        values = "".join(f" {d[q]:9.4g}" for q in QUANTILES) if d["count"] else ""
        print(f"  {name:<16} {d['count']:7d}{values}")
    print(
        f"  clipped {measures['clipped_samples']} samples (clipped_fraction > 0), mostly silent "
        f"{measures['mostly_silent_samples']} (silent_fraction >= {MOSTLY_SILENT:g})"
    )
    print(
        f"  duplicates {measures['duplicate_groups']} groups by content_hash, "
        f"{measures['duplicate_samples']} samples beyond the first of each "
        f"({measures['duplicate_seconds']:.2f} s); {measures['hashed_samples']} samples hashed"
    )


def duplicate_groups(index: pa.Table) -> list[dict[str, Any]]:
    """Groups of 2+ rows of `index` that share a content_hash (equal audio), largest first, then
    by hash; rows without a hash are left out. Reads the `key`, `content_hash`, `duration` and
    `source` columns.

    Each group: `content_hash`, `count`, `keys` (in index order: the first is the copy to keep),
    `sources` (distinct, in the order of the keys), `seconds` (the first's duration) and
    `duplicate_seconds` (the durations of the others).
    """
    hashes = index.column("content_hash")
    counts = pc.value_counts(pc.drop_null(hashes).combine_chunks())
    repeated = pc.filter(counts.field("values"), pc.greater_equal(counts.field("counts"), 2))
    if len(repeated) == 0:
        return []
    rows = index.filter(pc.is_in(hashes, value_set=repeated))  # filter keeps the index order
    groups: dict[str, dict[str, Any]] = {}
    for key, digest, duration, source in zip(
        *(rows.column(c).to_pylist() for c in ("key", "content_hash", "duration", "source")), strict=True
    ):
        group = groups.setdefault(
            digest, {"content_hash": digest, "keys": [], "sources": [], "durations": []}
        )
        group["keys"].append(key)
        group["durations"].append(duration)
        if source not in group["sources"]:
            group["sources"].append(source)
    out = [
        {
            "content_hash": g["content_hash"],
            "count": len(g["keys"]),
            "keys": g["keys"],
            "sources": g["sources"],
            "seconds": g["durations"][0],
            "duplicate_seconds": sum(g["durations"][1:]),
        }
        for g in groups.values()
    ]
    return sorted(out, key=lambda g: (-g["count"], g["content_hash"]))


def resolve_key(reader: DatasetReader, key: str) -> str:
    """`key` itself when the index has it, else the one key that starts with it."""
    keys = reader.index().column("key")
    if pc.any(pc.equal(keys, key)).as_py():
        return key
    matches = pc.filter(keys, pc.starts_with(keys, key)).to_pylist()
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise KeyError(
            f"no sample key is or starts with {key!r} in {reader.layout.url} (see `losatok-data ls`)"
        )
    shown = ", ".join(sorted(matches)[:3])
    raise KeyError(f"{len(matches)} keys start with {key!r} ({shown}, ...); give more of the key")


@dataclass(frozen=True)
class Condition:
    """One `--where COLUMN<OP>VALUE` filter of `ls`, its value typed as its column."""

    column: str
    op: str
    value: float | str

    @classmethod
    def parse(cls, text: str) -> Condition:
        """ArgumentError (one line, naming `text`) for an unknown column, operator or a bad value."""
        where = f"--where {text!r}"
        match = WHERE.match(text)
        if match is None or not match.group(3):
            raise ArgumentError(f"{where}: expected COLUMN<OP>VALUE with OP one of {' '.join(COMPARISONS)}")
        column, op, value = match.groups()
        kind = _index_field(column, where).type
        if pa.types.is_string(kind):
            quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""
            return cls(column, op, value[1:-1] if quoted else value)
        if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
            raise ArgumentError(f"{where}: column {column!r} holds {kind}; only numbers and text compare")
        try:
            return cls(column, op, float(value))
        except ValueError:
            raise ArgumentError(
                f"{where}: {value!r} is not a number (column {column!r} is numeric)"
            ) from None

    def mask(self, table: pa.Table) -> Any:
        """bool per row of `table`; null where the column is null (a filter drops those)."""
        return COMPARISONS[self.op](table.column(self.column), self.value)


def _index_field(column: str, where: str, sortable: bool = False) -> pa.Field:
    if column not in INDEX_SCHEMA.names:
        raise ArgumentError(
            f"{where}: no column {column!r} in the index (it has {', '.join(INDEX_SCHEMA.names)})"
        )
    field = INDEX_SCHEMA.field(column)
    if sortable and (pa.types.is_list(field.type) or pa.types.is_map(field.type)):
        raise ArgumentError(f"{where}: column {column!r} holds {field.type}, which does not sort")
    return field


def _ls(
    reader: DatasetReader,
    source: str | None,
    conditions: Sequence[Condition],
    sort: pa.Field | None,
    descending: bool,
    limit: int | None,
    as_json: bool,
) -> int:
    """One line per sample, in index order or by `sort`: key, duration, shard, source[@offset],
    and the audio measures when it has them."""
    named = [c.column for c in conditions] + ([sort.name] if sort is not None else [])
    columns = list(dict.fromkeys([*LS_COLUMNS, *MEASURE_COLUMNS, *named]))
    index = _read_columns(reader, columns)
    if source:
        index = index.filter(pc.match_substring(index.column("source"), source))
    for condition in conditions:
        index = index.filter(condition.mask(index))  # a null mask value drops the row
    if sort is not None:  # stable: ties stay in index order; nulls last either way
        index = index.take(pc.sort_indices(index, [(sort.name, "descending" if descending else "ascending")]))
    if limit is not None:
        index = index.slice(0, max(limit, 0))
    for row in index.to_pylist():
        if as_json:
            print(json.dumps(row, ensure_ascii=False))
            continue
        where = row["source"] + (f"@{row['offset']:.2f}s" if row["offset"] else "")
        line = f"{row['key']}\t{row['duration']:8.2f} s\t{row['shard']}\t{where}"
        measures = _measure_text(row)
        print(f"{line}\t{measures}" if measures else line)
    return 0


def _measure_text(row: dict[str, Any]) -> str:
    """A row's audio measures in a few words, e.g. `-23.1 dBFS peak 0.871 clip 0.00% silent 12%
    -24.0 LUFS #1f3a9c2e`; those it lacks are left out ("" for a row without any)."""
    formats = {
        "rms_db": lambda v: f"{v:.1f} dBFS",
        "peak": lambda v: f"peak {v:.3f}",
        "clipped_fraction": lambda v: f"clip {100 * v:.2f}%",
        "silent_fraction": lambda v: f"silent {100 * v:.0f}%",
        "loudness_lufs": lambda v: f"{v:.1f} LUFS",
        "content_hash": lambda v: f"#{v[:8]}",
    }
    return " ".join(f(row[name]) for name, f in formats.items() if row.get(name) is not None)


def _duplicates(reader: DatasetReader, as_json: bool, extra_keys: bool) -> int:
    """Groups of keys with one content_hash, one per line, and a summary line; exit 0 either way."""
    index = _read_columns(reader, ["key", "content_hash", "duration", "source"])
    groups = duplicate_groups(index)
    unhashed = index.num_rows - int(_valid(index.column("content_hash")).sum())
    summary = {
        "samples": index.num_rows,
        "duplicate_groups": len(groups),
        "duplicate_samples": sum(g["count"] - 1 for g in groups),  # beyond the first of each group
        "duplicate_seconds": sum(g["duplicate_seconds"] for g in groups),
        "unhashed_samples": unhashed,  # rows without a content_hash (before schema 1.3): not compared
    }
    if extra_keys:
        for group in groups:
            print("\n".join(group["keys"][1:]))
        return 0
    if as_json:
        print(
            json.dumps({"root": reader.layout.url, **summary, "groups": groups}, indent=2, ensure_ascii=False)
        )
        return 0
    for g in groups:
        print(f"{g['content_hash']}\t{g['count']}\t{','.join(g['keys'])}\t{','.join(g['sources'])}")
    line = (
        f"{summary['duplicate_groups']} duplicate groups: {summary['duplicate_samples']} samples beyond "
        f"the first of each, {summary['duplicate_seconds']:.2f} s"
    )
    if unhashed:
        before = " (written before schema 1.3)" if unhashed == index.num_rows else ""
        line += f"; {unhashed} samples carry no content hash{before}"
    print(line)
    return 0


def _read_columns(reader: DatasetReader, columns: Sequence[str]) -> pa.Table:
    """These index columns only, of every shard the reader sees, in index order."""
    paths = [reader.layout.index_path(n) for n in reader.committed()]
    return read_fragments(reader.layout, paths, columns)


def _show(reader: DatasetReader, key: str, as_json: bool) -> int:
    row = reader.find(key)
    sample = reader.sample(key, groups=reader.card.fields.groups())
    arrays = {
        name: {
            "shape": list(a.shape),
            "dtype": str(a.dtype),
            "mean": float(a.astype(np.float64).mean()),
            "std": float(a.astype(np.float64).std()),
        }
        for name, a in sample.arrays.items()
    }
    out = {"key": key, "shard": row["shard"], "metadata": sample.metadata.to_dict(), "arrays": arrays}
    if as_json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    print(f"key       {key} ({row['shard']})")
    for name, value in out["metadata"].items():
        print(f"  {name:<12} {value}")
    for name, a in arrays.items():
        print(
            f"  {name + '.npy':<18} {tuple(a['shape'])} {a['dtype']}  mean {a['mean']:+.3f} std {a['std']:.3f}"
        )
    return 0


def _frames_with(index, field: str):
    """frame_count of the rows whose `fields` list holds `field` (vectorised over list cells)."""
    fields = index.column("fields")
    rows = pc.filter(pc.list_parent_indices(fields), pc.equal(pc.list_flatten(fields), field))
    return pc.take(index.column("frame_count"), rows)


def _valid(column: Any) -> np.ndarray:
    """bool per row: not null."""
    return pc.is_valid(column).to_numpy(zero_copy_only=False).astype(bool)


def _count_true(values: Any) -> int:
    """Rows where a boolean column is true (null: not)."""
    return int(pc.sum(pc.fill_null(values, False)).as_py() or 0)


def _describe(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {"min": float(values.min()), "mean": float(values.mean()), "max": float(values.max())}


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


if __name__ == "__main__":
    sys.exit(main())
