"""The decode stage (CPU workers): read, decode, downmix, resample and segment the inputs of a unit.

Every input ends as segments or as a failure; a failure never stops the unit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import fsspec

from losatok.audio import AudioError, load_audio
from pipelines.config import SegmentConfig
from pipelines.records import Segment
from pipelines.segment import segment_bounds
from pipelines.sources import InputItem, input_key
from schemas.audio_shards import audio_extension, sidecar_metadata, tar_members
from schemas.ledger import FailureRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

# errors that say "this input is bad", as opposed to "storage hiccupped, try again"
PERMANENT_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError)


def with_retries(action: Callable[[], T], retries: int, base_delay: float = 0.5) -> tuple[T, int]:
    """Run `action`, retrying transient errors with exponential backoff; returns (value, attempts)."""
    for attempt in range(1, retries + 1):
        try:
            return action(), attempt
        except PERMANENT_ERRORS:
            raise
        except (OSError, TimeoutError, ConnectionError) as err:
            if attempt == retries:
                err.attempts = attempt  # type: ignore[attr-defined]
                raise
            delay = base_delay * 2 ** (attempt - 1)
            log.warning(
                "transient error (%s), attempt %d of %d; retrying in %.1f s", err, attempt, retries, delay
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def read_source(location: str, storage_options: dict[str, Any]) -> bytes | str:
    """A local path as it is (the decoder opens it), a remote object's bytes."""
    if "://" not in location or location.startswith("file://"):
        return location.removeprefix("file://")
    with fsspec.open(location, "rb", **storage_options) as handle:
        return handle.read()


def decode_item(
    item: InputItem,
    segment: SegmentConfig,
    sample_rate: int,
    storage_options: dict[str, Any],
    retries: int,
    data: bytes | str | None = None,
) -> list[Segment] | FailureRecord:
    """Segments of one input, or the reason it has none (`data`: its bytes, when already read)."""
    attempts = 1
    if data is None:
        try:
            data, attempts = with_retries(lambda: read_source(item.location, storage_options), retries)
        except Exception as err:
            attempts = getattr(err, "attempts", 1)
            return FailureRecord(item.location, "read", type(err).__name__, str(err), attempts, key=item.key)
    try:
        wav = load_audio(data, sample_rate, start=item.start, end=item.end, name=item.location)
    except AudioError as err:
        return FailureRecord(item.location, "decode", type(err).__name__, err.reason, attempts, key=item.key)
    except Exception as err:  # a decoder crash on one file must not take the unit down
        return FailureRecord(item.location, "decode", type(err).__name__, str(err), attempts, key=item.key)
    seconds = wav.numel() / sample_rate
    if seconds < segment.min_seconds:
        message = f"{seconds:.3f} s of audio is shorter than the minimum of {segment.min_seconds} s"
        return FailureRecord(item.location, "segment", "TooShort", message, attempts, key=item.key)
    samples = wav.numpy()
    base = item.start or 0.0
    segments = []
    for index, (first, last) in enumerate(segment_bounds(len(samples), sample_rate, segment.max_seconds)):
        segments.append(
            Segment(
                key=f"{item.key}_{index:04d}",
                input_key=item.key,
                location=item.location,
                offset=base + first / sample_rate,
                wav=samples[first:last],
                sample_rate=sample_rate,
                metadata=dict(item.metadata),
            )
        )
    return segments


def decode_items(
    items: Sequence[InputItem],
    segment: SegmentConfig,
    sample_rate: int,
    storage_options: dict[str, Any],
    retries: int,
) -> tuple[list[Segment], list[FailureRecord]]:
    """Decode a unit's inputs: (segments in input order, failures)."""
    segments: list[Segment] = []
    failures: list[FailureRecord] = []
    for item in items:
        if item.container == "tar":
            results = decode_tar(item, segment, sample_rate, storage_options, retries)
        elif item.container == "parquet":
            results = decode_parquet(item, segment, sample_rate, storage_options, retries)
        else:
            results = [decode_item(item, segment, sample_rate, storage_options, retries)]
        for result in results:
            if isinstance(result, FailureRecord):
                log.warning("input failed at %s: %s: %s", result.stage, result.location, result.message)
                failures.append(result)
            else:
                segments.extend(result)
    return segments, failures


def decode_tar(
    item: InputItem, segment: SegmentConfig, sample_rate: int, storage_options: dict[str, Any], retries: int
) -> list[list[Segment] | FailureRecord]:
    """Every audio member of a WebDataset shard: one result per sample key that holds audio."""
    try:
        data, _ = with_retries(lambda: read_tar_bytes(item.location, storage_options), retries)
        groups = tar_members(data)
    except Exception as err:
        return [FailureRecord(item.location, "read", type(err).__name__, str(err), key=item.key)]
    results: list[list[Segment] | FailureRecord] = []
    for key, members in groups.items():
        audio = audio_extension(members)
        if audio is None:
            continue  # a member group without audio (e.g. a lone sidecar) is not an input
        location = f"{item.location}#{key}.{audio}"
        try:
            metadata = sidecar_metadata(members)
        except (ValueError, UnicodeDecodeError) as err:
            results.append(FailureRecord(location, "decode", type(err).__name__, f"bad sidecar: {err}"))
            continue
        member_item = InputItem(input_key(location), location, metadata={**item.metadata, **metadata})
        results.append(
            decode_item(member_item, segment, sample_rate, storage_options, retries, data=members[audio])
        )
    return results


def decode_parquet(
    item: InputItem, segment: SegmentConfig, sample_rate: int, storage_options: dict[str, Any], retries: int
) -> list[list[Segment] | FailureRecord]:
    """Every row of a Hugging Face parquet row group: one result per row, keyed by its row id."""
    from pipelines.hf_parquet_source import iter_rows

    try:
        rows, _ = with_retries(lambda: list(iter_rows(item, storage_options)), retries)
    except Exception as err:
        return [FailureRecord(item.location, "read", type(err).__name__, str(err), key=item.key)]
    results: list[list[Segment] | FailureRecord] = []
    for row in rows:
        member = InputItem(input_key(row.location), row.location, metadata=row.metadata)
        data = row.data
        if data is None:
            message = "the row's audio has neither bytes nor a path"
            results.append(FailureRecord(row.location, "read", "MissingAudio", message, key=member.key))
            continue
        if isinstance(data, str):  # a file beside the parquet: read it like any other input
            try:
                data, _ = with_retries(lambda path=data: read_source(path, storage_options), retries)
            except Exception as err:
                results.append(
                    FailureRecord(row.location, "read", type(err).__name__, str(err), key=member.key)
                )
                continue
        results.append(decode_item(member, segment, sample_rate, storage_options, retries, data=data))
    return results


def read_tar_bytes(location: str, storage_options: dict[str, Any]) -> bytes:
    with fsspec.open(location, "rb", **storage_options) as handle:
        return handle.read()
