"""The decode stage (CPU workers): read, decode, downmix, resample and segment the inputs of a unit.

Every input ends as segments or as a failure; a failure never stops the unit. The inputs of
a unit are grouped by location, so a file with many spans (a manifest of utterances over one
long recording) is opened once and each span is read by seeking. Remote files are read
through fsspec file objects (range requests, never a whole-object download), and WebDataset
tars are streamed member by member.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from losatok_data.ledger import FailureRecord
from losatok_input.decoder import AudioError, MonoDecoder, decode_spans, probe_audio
from losatok_input.items import InputItem, input_key
from losatok_input.opening import RecordingReader, open_remote, open_tar
from losatok_input.rule import SkippedFiles, audio_samples, iter_tar_samples, sidecar_metadata
from losatok_storage.paths import is_remote, local_path
from losatok_storage.retry import Retries, is_transient, iter_resuming, policy_of, with_retries
from pipelines.config import SegmentConfig
from pipelines.records import Segment, compact_pcm
from pipelines.segment import segment_bounds

log = logging.getLogger(__name__)


Result = list[Segment] | FailureRecord


def to_segments(item: InputItem, wav: np.ndarray, segment: SegmentConfig, sample_rate: int) -> Result:
    """Cut one input's (S,) waveform into segments on the token grid, or fail it as too short."""
    seconds = len(wav) / sample_rate
    if seconds < segment.min_seconds:
        message = f"{seconds:.3f} s of audio is shorter than the minimum of {segment.min_seconds} s"
        return FailureRecord(item.location, "segment", "TooShort", message, key=item.key)
    samples = compact_pcm(wav)  # int16 when that is lossless: half the bytes to the encoder
    base = item.start or 0.0
    return [
        Segment(
            key=f"{item.key}_{index:04d}",
            input_key=item.key,
            location=item.location,
            offset=base + first / sample_rate,
            wav=samples[first:last],
            sample_rate=sample_rate,
            metadata=dict(item.metadata),
        )
        for index, (first, last) in enumerate(segment_bounds(len(samples), sample_rate, segment.max_seconds))
    ]


def decode_location(
    location: str,
    items: Sequence[InputItem],
    segment: SegmentConfig,
    sample_rate: int,
    storage_options: dict[str, Any],
    retries: Retries,
) -> list[Result]:
    """All inputs (whole file or spans) of one location from a single open: one result per item.

    A transient storage error part-way reopens the file and decodes again, up to `retries`
    attempts; then every item of the location is a `read` failure naming the error (transient:
    the next run tries again).
    """
    attempts = policy_of(retries).attempts
    for attempt in range(1, attempts + 1):
        reader: RecordingReader | None = None
        try:
            if is_remote(location):
                handle, _ = with_retries(lambda: open_remote(location, storage_options), retries)
                reader = RecordingReader(handle)
            waves = decode_spans_once(reader or local_path(location), location, items, sample_rate)
        except Exception as err:  # open failed for good (missing object, no permission, retries spent)
            return [_failure(item, "read", err, getattr(err, "attempts", attempt)) for item in items]
        finally:
            if reader is not None:
                reader.close()
        if reader is not None and reader.error is not None:
            # FFmpeg may take a failed read for the end of the stream: nothing of this pass is trusted
            if _transient(reader.error) and attempt < attempts:
                log.warning("reading %s failed (%s); reopening it", location, reader.error)
                continue
            return [_failure(item, "read", reader.error, attempt) for item in items]
        return [
            _failure(item, "decode", wave, attempt)
            if isinstance(wave, AudioError)
            else to_segments(item, wave.numpy(), segment, sample_rate)
            for item, wave in zip(items, waves, strict=True)
        ]
    raise AssertionError("unreachable")


def decode_spans_once(source: Any, location: str, items: Sequence[InputItem], sample_rate: int) -> list[Any]:
    """One open of `source`, each item's span cut from runs read by seeking (`decode_spans`):
    a waveform or an AudioError per item."""
    try:
        return decode_spans(source, [(item.start, item.end) for item in items], sample_rate, name=location)
    except AudioError as err:
        return [err] * len(items)


def _transient(error: Exception | None) -> bool:
    return error is not None and is_transient(error)


def _failure(item: InputItem, stage: str, err: Exception, attempts: int) -> FailureRecord:
    """A ledger row; a `read` failure of the storage's making (retries spent) is transient."""
    message = err.reason if isinstance(err, AudioError) else str(err)
    transient = stage == "read" and is_transient(err)
    return FailureRecord(
        item.location, stage, type(err).__name__, message, attempts, key=item.key, transient=transient
    )


def group_by_location(items: Sequence[InputItem]) -> dict[str, list[int]]:
    """Indices of `items` per location, locations in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.location, []).append(index)
    return groups


def decode_items(
    items: Sequence[InputItem],
    segment: SegmentConfig,
    sample_rate: int,
    storage_options: dict[str, Any],
    retries: Retries,
    skipped: SkippedFiles | None = None,
) -> tuple[list[Segment], list[FailureRecord]]:
    """Decode a unit's inputs: (segments in input order, failures).

    Inputs that share a location (spans of one file) are decoded from one open of it. What a
    WebDataset tar holds that is not audio (a sample without an audio member, a stray file) is
    counted in `skipped`.
    """
    per_item: list[list[Result]] = [[] for _ in items]
    for location, indices in group_by_location(items).items():
        for index in indices:
            if items[index].container == "tar":
                per_item[index] = list(
                    decode_tar(items[index], segment, sample_rate, storage_options, retries, skipped)
                )
            elif items[index].container == "parquet":
                per_item[index] = list(
                    decode_parquet(items[index], segment, sample_rate, storage_options, retries)
                )
        files = [i for i in indices if items[i].container is None]
        if files:
            # spans in source order, so the decoder seeks forward through the file
            files.sort(key=lambda i: (items[i].start or 0.0, i))
            found = decode_location(
                location, [items[i] for i in files], segment, sample_rate, storage_options, retries
            )
            for index, result in zip(files, found, strict=True):
                per_item[index] = [result]
    segments: list[Segment] = []
    failures: list[FailureRecord] = []
    for results in per_item:
        for result in results:
            if isinstance(result, FailureRecord):
                log.warning("input failed at %s: %s: %s", result.stage, result.location, result.message)
                failures.append(result)
            else:
                segments.extend(result)
    return segments, failures


def decode_tar(
    item: InputItem,
    segment: SegmentConfig,
    sample_rate: int,
    storage_options: dict[str, Any],
    retries: Retries,
    skipped: SkippedFiles | None = None,
) -> Iterator[Result]:
    """Every audio member of a WebDataset shard: one result per sample key that holds audio.

    The tar is streamed: one sample's members are in memory at a time. A transient storage
    error part-way reopens the stream and skips the samples already read (`iter_resuming`);
    past the retry budget the shard is one transient `read` failure. Samples without audio and
    stray members are counted in `skipped` (once, however often the tar is reopened).
    """
    passes: list[SkippedFiles] = []  # stray members, tallied afresh by each pass over the tar

    def samples(handle: Any) -> Iterator[tuple[str, dict[str, bytes]]]:
        passes.append(SkippedFiles())
        return iter_tar_samples(handle, passes[-1], item.location)

    stream = iter_resuming(
        lambda: open_tar(item.location, storage_options), samples, f"read {item.location}", policy_of(retries)
    )
    probe = lambda data: probe_audio(io.BytesIO(data))  # noqa: E731  # unknown extensions, as files
    try:
        for key, audio, members in audio_samples(stream, item.location, skipped, probe):
            yield decode_member(item, key, audio, members, segment, sample_rate)
    except Exception as err:  # unreadable for good: a permanent error, or an outage past the budget
        yield _failure(item, "read", err, getattr(err, "attempts", 1))
        return
    if skipped is not None and passes:
        skipped.update(passes[-1])  # the pass that read the tar to its end


def decode_member(
    item: InputItem, key: str, audio: str, members: dict[str, bytes], segment: SegmentConfig, sample_rate: int
) -> Result:
    """One tar sample's audio member (extension `audio`) with its sidecar."""
    location = f"{item.location}#{key}.{audio}"
    member_item = InputItem(input_key(location), location)
    try:
        metadata = sidecar_metadata(members)
    except (ValueError, UnicodeDecodeError) as err:
        return FailureRecord(
            location, "decode", type(err).__name__, f"bad sidecar: {err}", key=member_item.key
        )
    member_item = InputItem(member_item.key, location, metadata={**item.metadata, **metadata})
    try:
        wave = MonoDecoder(members[audio], sample_rate, name=location).span()
    except AudioError as err:
        return _failure(member_item, "decode", err, 1)
    return to_segments(member_item, wave.numpy(), segment, sample_rate)


def decode_parquet(
    item: InputItem,
    segment: SegmentConfig,
    sample_rate: int,
    storage_options: dict[str, Any],
    retries: Retries,
) -> Iterator[Result]:
    """Every row of a Hugging Face parquet row group: one result per row, keyed by its row id.

    Only this row group is read. A row's audio is its embedded bytes, or the file its `path`
    names (opened like any other input: range requests when remote).
    """
    from losatok_input.sources.hf_parquet import iter_rows

    try:
        rows, _ = with_retries(lambda: list(iter_rows(item, storage_options)), retries)
    except Exception as err:
        yield _failure(item, "read", err, getattr(err, "attempts", 1))
        return
    for row in rows:
        member = InputItem(input_key(row.location), row.location, metadata=row.metadata)
        if row.data is None:
            message = "the row's audio has neither bytes nor a path"
            yield FailureRecord(row.location, "read", "MissingAudio", message, key=member.key)
            continue
        try:
            source = row.data
            if isinstance(source, str) and is_remote(source):
                source, _ = with_retries(lambda path=source: open_remote(path, storage_options), retries)
            elif isinstance(source, str):
                source = local_path(source)
            wave = MonoDecoder(source, sample_rate, name=row.location).span()
        except AudioError as err:
            yield _failure(member, "decode", err, 1)
            continue
        except Exception as err:  # the referenced file could not be read
            yield _failure(member, "read", err, getattr(err, "attempts", 1))
            continue
        yield to_segments(member, wave.numpy(), segment, sample_rate)
