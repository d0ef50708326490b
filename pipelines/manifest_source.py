"""Input items from a manifest (parquet, jsonl or csv) read through `schemas.manifest`."""

from __future__ import annotations

from collections.abc import Iterator

from pipelines.config import SourceConfig
from pipelines.sources import InputItem, input_key
from schemas.manifest import iter_manifest


def resolve(location: str, manifest_url: str) -> str:
    """A relative location is taken relative to the manifest's folder (local or remote)."""
    if "://" in location or location.startswith("/"):
        return location
    return f"{manifest_url.rsplit('/', 1)[0]}/{location}" if "/" in manifest_url else location


def list_manifest(config: SourceConfig) -> list[InputItem]:
    """One item per manifest row, in manifest order (see iter_manifest_items)."""
    return list(iter_manifest_items(config))


def iter_manifest_items(config: SourceConfig) -> Iterator[InputItem]:
    """One item per manifest row, in manifest order, streamed (parquet: a row group at a time);
    metadata carried through to the samples.

    File sizes are not looked up (a HEAD request per row costs more than it balances), so
    units of a manifest source split by input count alone.
    """
    for row in iter_manifest(config.path, config.storage_options):
        location = resolve(row.location, config.path)
        yield InputItem(
            key=input_key(location, row.start, row.end, given_id=row.id),
            location=location,
            start=row.start,
            end=row.end,
            metadata=row.metadata(),
        )
