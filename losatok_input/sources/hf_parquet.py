"""Hugging Face audio datasets stored as parquet (`source=hf_parquet`).

The `datasets` library stores an `Audio` column as a struct of `bytes` (the encoded file) and
`path` (its original name, or where to find it when `bytes` is null), next to columns such as
`text`, `id`, `speaker_id` or `caption`. One parquet row group is one input item and so one
unit of work: the decode stage reads that row group alone (never the whole file) and every row
with audio becomes an input, keyed by the file and the row's id (or its row number).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow.parquet as pq

from losatok_input.config import SourceConfig
from losatok_input.items import InputItem, input_key
from losatok_storage.filesystem import url_to_fs
from losatok_storage.paths import is_url, protocol_prefix

CONTAINER = "parquet"
# the `datasets` names of metadata columns -> ours (a source's `columns` map comes first)
DEFAULT_COLUMNS = {
    "audio": "audio",
    "id": "id",
    "text": "text",
    "transcription": "text",
    "sentence": "text",
    "normalized_text": "text",
    "caption": "caption",
    "speaker": "speaker",
    "speaker_id": "speaker",
    "language": "language",
    "locale": "language",
}
METADATA = ("id", "text", "caption", "speaker", "language")


def parquet_files(config: SourceConfig) -> list[str]:
    """The parquet files of a source path: one file, a folder (searched recursively) or a glob."""
    fs, root = url_to_fs(config.path, config.storage_options)
    protocol = protocol_prefix(config.path)
    if any(c in root for c in "*?["):
        paths = sorted(fs.glob(root))
    elif fs.isdir(root):
        paths = sorted(p for p in fs.find(root) if p.endswith(".parquet"))
    elif fs.exists(root):
        paths = [root]
    else:
        raise FileNotFoundError(f"source {config.path} does not exist")
    return [protocol + p for p in paths]


def list_row_groups(config: SourceConfig) -> list[InputItem]:
    """One container item per row group of every parquet file (see iter_row_groups)."""
    return list(iter_row_groups(config))


def iter_row_groups(config: SourceConfig) -> Iterator[InputItem]:
    """One container item per row group of every parquet file, streamed: only footers are read."""
    for url in parquet_files(config):
        with fsspec.open(url, "rb", **config.storage_options) as handle:
            meta = pq.ParquetFile(handle).metadata
        for group in range(meta.num_row_groups):
            location = f"{url}#row_group={group}"
            yield InputItem(
                key=input_key(location),
                location=url,
                size_bytes=meta.row_group(group).total_byte_size,
                metadata={
                    CONTAINER: {
                        "row_group": group,
                        "columns": dict(config.columns),
                        "audio_root": config.audio_root,
                    }
                },
                container=CONTAINER,
            )


@dataclass(frozen=True)
class ParquetRow:
    """One row of a row group: where it is, its audio (bytes, or a file to read) and metadata."""

    location: str  # "<parquet url>#<row id>": the input's location in the ledger and the index
    data: bytes | str | None  # the encoded audio, a path to it, or None (missing)
    metadata: dict[str, Any]


def iter_rows(item: InputItem, storage_options: dict[str, Any]) -> Iterator[ParquetRow]:
    """The rows of `item`'s row group, read from storage one row group at a time."""
    spec = item.metadata[CONTAINER]
    names = {**DEFAULT_COLUMNS, **spec["columns"]}
    with fsspec.open(item.location, "rb", **storage_options) as handle:
        parquet = pq.ParquetFile(handle)
        first = sum(parquet.metadata.row_group(g).num_rows for g in range(spec["row_group"]))
        wanted = [c for c in parquet.schema_arrow.names if names.get(c) in ("audio", *METADATA)]
        table = parquet.read_row_group(spec["row_group"], columns=wanted, use_threads=False)
    ours = {column: names[column] for column in table.column_names}
    audio_column = next((c for c, name in ours.items() if name == "audio"), None)
    if audio_column is None:
        raise ValueError(
            f"{item.location} has no audio column (looked for {sorted(c for c, n in names.items() if n == 'audio')})"
        )
    root = spec["audio_root"] or posixpath.dirname(item.location)
    for offset, row in enumerate(table.to_pylist()):
        metadata = {ours[c]: str(v) for c, v in row.items() if ours[c] in METADATA and v is not None}
        row_id = metadata.get("id") or f"row{first + offset}"
        audio = row[audio_column] or {}
        data: bytes | str | None = audio.get("bytes")
        if data is None and audio.get("path"):
            path = audio["path"]
            data = path if is_url(path) or path.startswith("/") else f"{root}/{path}"
        yield ParquetRow(f"{item.location}#{row_id}", data, metadata)
