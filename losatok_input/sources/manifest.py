"""Input items from a manifest (parquet, jsonl or csv) read through `losatok_data.manifest`, our own
or NeMo's (`audio_filepath`, `offset`, `duration`, `text`: the same reader, other names)."""

from __future__ import annotations

from collections.abc import Iterator

from losatok_data.manifest import iter_manifest
from losatok_input.config import SourceConfig
from losatok_input.items import InputItem, input_key
from losatok_storage.paths import resolve_relative

# Spans of one file are brought together within windows of this many manifest rows: enough for
# the usual layout (a recording's utterances listed together or near each other) while the
# driver holds at most one window of items (bounded memory at any manifest size).
GROUP_WINDOW_ROWS = 65_536


def group_by_file(items: list[InputItem]) -> list[InputItem]:
    """`items` with all spans of one file next to each other, files in order of first appearance
    and spans by start within a file; otherwise manifest order. Consecutive items share a unit,
    and the decode stage opens each file once per unit, so a 1-hour recording with 1 000
    utterance rows is read a handful of times instead of 1 000."""
    order: dict[str, int] = {}
    for item in items:
        order.setdefault(item.location, len(order))
    ranked = sorted(range(len(items)), key=lambda i: (order[items[i].location], items[i].start or 0.0, i))
    return [items[i] for i in ranked]


def list_manifest(config: SourceConfig) -> list[InputItem]:
    """One item per manifest row (see iter_manifest_items)."""
    return list(iter_manifest_items(config))


def iter_manifest_items(config: SourceConfig, window: int = GROUP_WINDOW_ROWS) -> Iterator[InputItem]:
    """One item per manifest row, streamed (parquet: a row group at a time), spans of one file
    together within each window of `window` rows (`group_by_file`); metadata carried through to
    the samples. The order is the same on every run.

    File sizes are not looked up (a HEAD request per row costs more than it balances), so
    units of a manifest source split by input count alone. A NeMo manifest (`kind="nemo"`) is
    JSON lines whatever its suffix; its other keys are carried as metadata (`extra`).
    """
    format = "jsonl" if config.kind == "nemo" else None
    pending: list[InputItem] = []
    for row in iter_manifest(config.path, config.storage_options, format, config.columns):
        location = resolve_relative(row.location, config.path)
        pending.append(
            InputItem(
                key=input_key(location, row.start, row.end, given_id=row.id),
                location=location,
                start=row.start,
                end=row.end,
                metadata=row.metadata(),
            )
        )
        if len(pending) == window:
            yield from group_by_file(pending)
            pending = []
    yield from group_by_file(pending)
