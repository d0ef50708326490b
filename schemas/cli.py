"""`losatok-data`: check and inspect a latent dataset (local path or s3:// prefix).

```
losatok-data verify ROOT [--strict] [--quick]   # every fault on its own line; exit 1 if any
losatok-data stats ROOT [--json]      # totals, duration histogram, per-field sizes
losatok-data show ROOT KEY [--json]   # one sample's metadata and array shapes
```
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

from schemas.errors import SchemaError
from schemas.reader import DatasetReader, open_dataset
from schemas.verify import verify_dataset

STORAGE_OPTIONS_ENV = "LOSATOK_STORAGE_OPTIONS"
HISTOGRAM_EDGES = (0, 1, 2, 5, 10, 20, 30, 60, 120, 300)  # seconds; the last bin is open-ended


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        options = storage_options(args.storage_option)
    except ValueError as error:
        parser.error(str(error))
    if args.command == "verify":
        return _verify(args, options)
    try:
        reader = open_dataset(args.root, options)
        if args.command == "stats":
            return _stats(reader, args.json)
        return _show(reader, args.key, args.json)
    except (SchemaError, FileNotFoundError, KeyError) as error:
        print(f"error: {error.args[0] if isinstance(error, KeyError) else error}", file=sys.stderr)
        return 1


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
    show = commands.add_parser("show", parents=[common], help="one sample's metadata and shapes")
    show.add_argument("key", help="the sample's __key__")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _verify(args: argparse.Namespace, options: dict[str, Any]) -> int:
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
    print(f"failed    {card.failed_inputs} inputs {dict(card.failures) or ''}".rstrip())
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
