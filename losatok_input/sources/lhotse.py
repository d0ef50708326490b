"""Input items from a lhotse cut manifest (`cuts.jsonl` or `cuts.jsonl.gz`, local or s3://).

Every cut becomes one input: its recording's audio file, its span (`start`, `start + duration`)
and its first supervision's text, speaker and language. Lines are read through fsspec (so
`s3://` with storage options works) and parsed by lhotse's own deserializer, so every cut type
lhotse writes is understood the way lhotse understands it. lhotse is an optional extra,
imported only when this source is used.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import fsspec

from losatok_data.errors import ManifestError
from losatok_input.config import SourceConfig
from losatok_input.items import InputItem, input_key
from losatok_storage.paths import resolve_relative


def _lhotse() -> Any:
    try:
        from lhotse.serialization import deserialize_item
    except ImportError:
        raise ValueError(
            "source=lhotse needs the lhotse package: pip install 'losatok-pipelines[lhotse]'"
        ) from None
    return deserialize_item


def iter_cut_dicts(url: str, storage_options: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, JSON object) of each line of a (gzipped) JSON-lines file."""
    source = url.rsplit("/", 1)[-1]
    with fsspec.open(url, "rb", compression="infer", **storage_options) as raw:
        for number, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8"), start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                raise ManifestError(source, number, None, f"is not valid JSON ({error.msg})") from None


def cut_item(cut: Any, manifest_url: str, source: str, row: int) -> InputItem:
    """The input of one lhotse cut: audio location, span in seconds, supervision metadata."""
    recording = getattr(cut, "recording", None)
    if recording is None or not getattr(cut, "has_recording", False):
        raise ManifestError(source, row, "recording", f"cut {cut.id} ({type(cut).__name__}) has no recording")
    files = [s for s in recording.sources if s.type in ("file", "url")]
    if len(files) != 1 or len(recording.sources) != 1:
        kinds = [s.type for s in recording.sources]
        raise ManifestError(
            source,
            row,
            "recording",
            f"cut {cut.id}: recording {recording.id} has sources {kinds}; one file or URL is read",
        )
    location = resolve_relative(files[0].source, manifest_url)
    start, end = float(cut.start), float(cut.start) + float(cut.duration)
    metadata: dict[str, Any] = {"id": cut.id, "extra": {"recording_id": recording.id}}
    if cut.supervisions:
        first = cut.supervisions[0]
        for name in ("text", "speaker", "language"):
            value = getattr(first, name, None)
            if value is not None:
                metadata[name] = str(value)
    return InputItem(
        key=input_key(location, start, end, given_id=cut.id),
        location=location,
        start=start,
        end=end,
        metadata=metadata,
    )


def list_cuts(config: SourceConfig) -> list[InputItem]:
    """One input per cut, in manifest order (see iter_cuts)."""
    return list(iter_cuts(config))


def iter_cuts(config: SourceConfig) -> Iterator[InputItem]:
    """One input per cut, in manifest order, streamed a line at a time."""
    deserialize_item = _lhotse()
    source = config.path.rsplit("/", 1)[-1]
    for row, data in iter_cut_dicts(config.path, config.storage_options):
        try:
            cut = deserialize_item(data)
        except Exception as error:  # lhotse raises several types for a malformed cut
            raise ManifestError(
                source, row, None, f"is not a lhotse cut ({type(error).__name__}: {error})"
            ) from None
        yield cut_item(cut, config.path, source, row)
