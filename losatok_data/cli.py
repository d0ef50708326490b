"""`losatok-data`: check and inspect a latent dataset (local path or s3:// prefix).

```
losatok-data verify ROOT [--strict] [--quick]   # every fault on its own line; exit 1 if any
losatok-data stats ROOT [--json]                # totals, duration histogram, per-field sizes
losatok-data ls ROOT [--source TEXT] [--json]   # keys with their durations and sources
losatok-data show ROOT KEY [--json]             # one sample (KEY: a key or a unique prefix)
```
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
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow.compute as pc

from losatok_data.errors import SchemaError
from losatok_data.reader import DatasetReader, open_dataset
from losatok_data.verify import verify_dataset
from losatok_storage.filesystem import url_to_fs
from losatok_storage.tario import TarReadError

STORAGE_OPTIONS_ENV = "LOSATOK_STORAGE_OPTIONS"
HISTOGRAM_EDGES = (0, 1, 2, 5, 10, 20, 30, 60, 120, 300)  # seconds; the last bin is open-ended


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
        reader = open_dataset(args.root, options)
        if args.command == "stats":
            return _stats(reader, args.json)
        if args.command == "ls":
            return _ls(reader, args.source, args.limit, args.json)
        return _show(reader, resolve_key(reader, args.key), args.json)
    except (SchemaError, TarReadError, FileNotFoundError, KeyError) as error:
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
    stats = commands.add_parser("stats", parents=[common], help="totals, duration histogram, per-field sizes")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    ls = commands.add_parser("ls", parents=[common], help="sample keys with their durations and sources")
    ls.add_argument("--source", default=None, metavar="TEXT", help="only samples whose source contains TEXT")
    ls.add_argument("--limit", type=int, default=None, metavar="N", help="at most N rows")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    show = commands.add_parser("show", parents=[common], help="one sample's metadata and shapes")
    show.add_argument("key", help="the sample's __key__, or a prefix of it that only one key has")
    show.add_argument("--json", action="store_true", help="print one JSON object")
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
    by_stage = ", ".join(f"{stage} {count}" for stage, count in card.failures.items() if count)
    print(f"failed    {card.failed_inputs} inputs" + (f" ({by_stage})" if by_stage else ""))
    return 0


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


def _ls(reader: DatasetReader, source: str | None, limit: int | None, as_json: bool) -> int:
    """One line per sample, in index order: key, duration, shard, source[@offset]."""
    index = reader.index().select(["key", "duration", "shard", "source", "offset"])
    if source:
        index = index.filter(pc.match_substring(index.column("source"), source))
    if limit is not None:
        index = index.slice(0, max(limit, 0))
    for row in index.to_pylist():
        if as_json:
            print(json.dumps(row, ensure_ascii=False))
            continue
        where = row["source"] + (f"@{row['offset']:.2f}s" if row["offset"] else "")
        print(f"{row['key']}\t{row['duration']:8.2f} s\t{row['shard']}\t{where}")
    return 0


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
