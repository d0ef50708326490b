"""Input manifests: one row per audio item, read from parquet, jsonl or csv.

Columns (any order; only `location` is required):

| column | type | meaning |
| --- | --- | --- |
| location (aliases path, audio_filepath) | str | local path or URL (`s3://bucket/a.flac`) of the audio file |
| id | str | a caller's id, kept in the metadata and used for the sample key |
| start (alias offset), end | float | span of the file in seconds; absent means from the start / to the end |
| duration | float | the span's length in seconds: `end = start + duration` (when no `end` is given) |
| text (alias transcript), caption, language (alias lang), speaker, split | str | carried into the shards |
| tags | list of str | csv: a JSON list or `a|b|c` |

A `columns` map renames a corpus's own columns onto these first (`{"wav": "location",
"sentence": "text"}`). Other columns are carried through in `extra` when their values are JSON
scalars, so a corpus's own columns are not lost. A bad row raises ManifestError naming the
file, the 1-based row number and the field.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow.parquet as pq

from losatok_data.errors import ManifestError
from losatok_storage.filesystem import url_to_fs
from losatok_storage.paths import is_url
from losatok_storage.retry import iter_resuming

FORMATS = ("parquet", "jsonl", "csv")
_ALIASES = {
    "path": "location",
    "audio_filepath": "location",  # NeMo
    "offset": "start",  # NeMo
    "transcript": "text",
    "lang": "language",
}
_STRING_FIELDS = ("id", "text", "caption", "language", "speaker", "split")


@dataclass(frozen=True)
class ManifestRow:
    """One audio item of an input manifest; optional fields default to None."""

    location: str  # local path or URL of the audio file
    id: str | None = None
    start: float | None = None  # seconds from the file's start
    end: float | None = None  # seconds from the file's start; > start
    text: str | None = None  # transcript
    caption: str | None = None
    language: str | None = None
    speaker: str | None = None
    tags: tuple[str, ...] | None = None
    split: str | None = None  # "train", "valid", ...
    extra: Mapping[str, Any] | None = None  # other columns, JSON scalars

    def metadata(self) -> dict[str, Any]:
        """The carried-through metadata (no location or span), None values left out."""
        out: dict[str, Any] = {}
        for name in ("id", *_STRING_FIELDS[1:]):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.tags is not None:
            out["tags"] = list(self.tags)
        if self.extra:
            out["extra"] = dict(self.extra)
        return out


def parse_manifest_row(values: Mapping[str, Any], row: int, source: str = "manifest") -> ManifestRow:
    """Validate one row (a column -> value mapping) into a ManifestRow.

    Empty strings and None mean "absent". Raises ManifestError(source, row, field).
    """
    data: dict[str, Any] = {}
    for column, value in values.items():
        name = _ALIASES.get(column, column)
        if name in data and data[name] is not None and value is not None:
            raise ManifestError(source, row, column, f"gives {name!r} twice (column and its alias)")
        if name not in data or value is not None:
            data[name] = None if (value is None or value == "") else value

    location = data.pop("location", None)
    if location is None:
        raise ManifestError(source, row, "location", "missing; every row needs the audio file's path or URL")
    if not isinstance(location, str):
        raise ManifestError(source, row, "location", f"must be a string, got {type(location).__name__}")
    _check_location(location, source, row)

    fields: dict[str, Any] = {"location": location}
    for name in _STRING_FIELDS:
        value = data.pop(name, None)
        if value is not None and not isinstance(value, str):
            if name == "id" and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # numeric ids are common in csv-born corpora
            else:
                raise ManifestError(
                    source, row, name, f"must be a string, got {type(value).__name__} {value!r}"
                )
        fields[name] = value
    for name in ("start", "end"):
        fields[name] = _seconds(data.pop(name, None), source, row, name)
    duration = _seconds(data.pop("duration", None), source, row, "duration")
    if duration is not None:
        if duration <= 0:
            raise ManifestError(source, row, "duration", f"{duration} s is not positive")
        end = (fields["start"] or 0.0) + duration
        if fields["end"] is not None and not math.isclose(fields["end"], end, abs_tol=1e-3):
            raise ManifestError(
                source, row, "duration", f"start + {duration} s disagrees with end {fields['end']} s"
            )
        fields["end"] = end
    if fields["start"] is not None and fields["start"] < 0:
        raise ManifestError(source, row, "start", f"{fields['start']} s is negative")
    if fields["end"] is not None and fields["end"] <= (fields["start"] or 0.0):
        raise ManifestError(
            source, row, "end", f"{fields['end']} s is not after start {fields['start'] or 0.0} s"
        )
    fields["tags"] = _tags(data.pop("tags", None), source, row)

    extra = {}
    for column, value in data.items():
        if value is None:
            continue
        if not isinstance(value, (str, int, float, bool)) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise ManifestError(source, row, column, f"extra column value {value!r} is not a JSON scalar")
        extra[column] = value
    fields["extra"] = extra or None
    return ManifestRow(**fields)


def read_manifest(
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
) -> list[ManifestRow]:
    """All rows of a manifest file (local path or URL); the format comes from the suffix."""
    return list(iter_manifest(url, storage_options, format, columns))


def iter_manifest(
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
) -> Iterator[ManifestRow]:
    """Rows of a manifest, validated one by one (the first bad row raises).

    `columns` renames the file's columns onto ours before anything else ({theirs: ours}). The
    file is streamed; a read cut by a transient storage error reopens it and skips the rows
    already read (`losatok_storage.retry.iter_resuming`).
    """
    format = format or manifest_format(url)
    source = url.rsplit("/", 1)[-1]
    fs, path = url_to_fs(url, storage_options)
    if format == "parquet":
        rows = iter_resuming(lambda: fs.open(path, "rb"), _parquet_rows, f"read {url}", fs.policy)
    else:
        rows = iter_resuming(
            lambda: fs.open(path, "rb", compression="infer"),
            functools.partial(_text_rows, format=format, source=source),
            f"read {url}",
            fs.policy,
        )
    yield from _parse_rows(rows, source, format, columns)


def _text_rows(f: Any, format: str, source: str) -> Iterator[Mapping[str, Any]]:
    """Rows of a jsonl or csv manifest read from the binary stream `f`."""
    newline = "" if format == "csv" else None  # the csv module handles line ends inside quotes
    text = io.TextIOWrapper(f, encoding="utf-8", newline=newline)
    try:
        yield from _jsonl_rows(text, source) if format == "jsonl" else csv.DictReader(text)
    finally:
        with contextlib.suppress(Exception):
            text.detach()  # the stream is closed by its opener


def _parquet_rows(f: Any) -> Iterator[Mapping[str, Any]]:
    """Rows of a parquet manifest, streamed: one row group in arrow memory, 64k rows as Python.

    Single-threaded for the reason given in `losatok_storage.filesystem.read_parquet_file`.
    """
    for batch in pq.ParquetFile(f).iter_batches(batch_size=65_536, use_threads=False):
        yield from batch.to_pylist()


def _parse_rows(
    rows: Iterator[Mapping[str, Any]], source: str, format: str, columns: Mapping[str, str] | None
) -> Iterator[ManifestRow]:
    for number, values in enumerate(rows, start=1):
        if format == "csv" and None in values:
            raise ManifestError(source, number, None, f"has more cells than the header's {len(values) - 1}")
        if columns:
            values = {columns.get(name, name): value for name, value in values.items()}
        yield parse_manifest_row(values, number, source)


def manifest_format(url: str) -> str:
    """ "parquet", "jsonl" or "csv" from the file suffix (.json and .ndjson are jsonl)."""
    suffix = url.removesuffix(".gz").rsplit(".", 1)[-1].lower()
    format = {
        "parquet": "parquet",
        "pq": "parquet",
        "jsonl": "jsonl",
        "ndjson": "jsonl",
        "json": "jsonl",
    }.get(suffix, suffix)
    if format not in FORMATS:
        raise ValueError(f"cannot tell the manifest format of {url!r}; expected one of .parquet .jsonl .csv")
    return format


def _jsonl_rows(lines: Iterator[str], source: str) -> Iterator[Mapping[str, Any]]:
    # Blank lines are skipped but still counted, so that "row N" is line N of the file.
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise ManifestError(source, number, None, f"is not valid JSON ({error.msg})") from None
        if not isinstance(value, dict):
            raise ManifestError(source, number, None, f"is a JSON {type(value).__name__}, not an object")
        yield value


def _check_location(location: str, source: str, row: int) -> None:
    if "\x00" in location or location != location.strip():
        raise ManifestError(source, row, "location", f"{location!r} has surrounding spaces or a NUL byte")
    if is_url(location):
        protocol = location.split("://", 1)[0]
        if protocol not in _protocols():
            raise ManifestError(source, row, "location", f"{location!r}: unknown protocol {protocol!r}")


@functools.cache
def _protocols() -> frozenset[str]:
    # asked once: fsspec rebuilds this list on every call, ~10 us a row of a 10^7-row manifest
    return frozenset(fsspec.available_protocols())


def _seconds(value: Any, source: str, row: int, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ManifestError(source, row, name, f"must be seconds (a number), got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ManifestError(source, row, name, f"must be seconds (a number), got {value!r}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ManifestError(source, row, name, f"must be a finite number of seconds, got {value!r}")
    return float(value)


def _tags(value: Any, source: str, row: int) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value.startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ManifestError(source, row, "tags", f"{value!r} is not a JSON list") from None
        else:
            value = [t.strip() for t in value.split("|") if t.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
        raise ManifestError(source, row, "tags", f"must be a list of strings, got {value!r}")
    return tuple(value)
