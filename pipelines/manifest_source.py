"""Input items from a manifest (parquet, jsonl or csv) read through `schemas.manifest`, our own
or NeMo's (`audio_filepath`, `offset`, `duration`, `text`: the same reader, other names)."""

from __future__ import annotations

from pipelines.config import SourceConfig
from pipelines.sources import InputItem, input_key
from schemas.manifest import iter_manifest


def resolve(location: str, manifest_url: str) -> str:
    """A relative location is taken relative to the manifest's folder (local or remote)."""
    if "://" in location or location.startswith("/"):
        return location
    return f"{manifest_url.rsplit('/', 1)[0]}/{location}" if "/" in manifest_url else location


def list_manifest(config: SourceConfig) -> list[InputItem]:
    """One item per manifest row, in manifest order; metadata carried through to the samples.

    File sizes are not looked up (a HEAD request per row costs more than it balances), so
    units of a manifest source split by input count alone. A NeMo manifest (`kind="nemo"`) is
    JSON lines whatever its suffix; its other keys are carried as metadata (`extra`).
    """
    format = "jsonl" if config.kind == "nemo" else None
    items = []
    for row in iter_manifest(config.path, config.storage_options, format, config.columns):
        location = resolve(row.location, config.path)
        items.append(
            InputItem(
                key=input_key(location, row.start, row.end, given_id=row.id),
                location=location,
                start=row.start,
                end=row.end,
                metadata=row.metadata(),
            )
        )
    return items
