"""Reading inputs: an `InputItem` in, its waveform (mono float32 at the asked rate) or why not out.

The whole way from a location to samples is here, for every kind of input: a file or spans of
one (`read_location`: one open, spans cut by seeking), a WebDataset audio shard streamed member
by member (`iter_tar`), a Hugging Face parquet row group (`iter_parquet`). A whole file longer
than `long_seconds` is decoded to a local temporary file instead of memory (`SpooledWave`), so
hours of audio cost a few MB; `iter_reads` hands out each location's reads as they are decoded,
so a caller can drop one before the next is read. Storage faults are
retried and ridden through (a file is reopened, a tar read on past what it already gave); what
fails for good is a `ReadFailure` that says where (`read`: the storage; `decode`: the bytes),
never an exception that stops the other inputs.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from losatok_input.decoder import AudioError, MonoDecoder, decode_spans, probe_audio
from losatok_input.items import InputItem, input_key
from losatok_input.opening import WHOLE_OBJECT_BYTES, RecordingReader, open_remote, open_tar, read_whole
from losatok_input.rule import SkippedFiles, audio_samples, iter_shard_samples, sidecar_metadata
from losatok_input.spool import SpooledWave, spool_bytes, spool_file, spool_remote
from losatok_storage.paths import is_remote, local_path
from losatok_storage.retry import Retries, is_transient, iter_resuming, policy_of, with_retries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadFailure:
    """Why an input gave no waveform: a failure ledger row's content, without its place."""

    stage: str  # "read" (the storage failed, or the input is missing) or "decode" (the bytes are bad)
    error_type: str
    message: str
    attempts: int = 1
    transient: bool = False  # the storage's fault past the retries: the next run tries again

    @classmethod
    def of(cls, stage: str, error: Exception, attempts: int) -> ReadFailure:
        """From an error; a `read` failure of the storage's making (retries spent) is transient."""
        message = error.reason if isinstance(error, AudioError) else str(error)
        transient = stage == "read" and is_transient(error)
        return cls(stage, type(error).__name__, message, attempts, transient)


# (S,) float32 at the asked rate: in memory, or (a whole file over `long_seconds`) in a local
# temporary file that the caller closes when done (`SpooledWave.close`); or why not
Wave = torch.Tensor | SpooledWave | ReadFailure
Read = tuple[InputItem, Wave]  # the input (for a container: its member) and what came of it

# A file whose container states no duration (Matroska or WebM written to a pipe, some raw
# streams) is taken as long when its size could hold more than `long_seconds` at this byte rate:
# 8000 B/s is 64 kbit/s, the low end of what speech is stored at in MP3, AAC or Opus. The bound
# errs towards spooling: spooling a short file costs an ffmpeg process (tens of ms) for the same
# samples, while decoding a long one in memory costs ~1 GB an hour; below 64 kbit/s (Opus speech
# at 24 kbit/s) a file taken as short is still at most ~3 times `long_seconds` long.
HEADERLESS_BYTES_PER_SECOND = 8000


def iter_reads(
    items: Sequence[InputItem],
    sample_rate: int,
    storage_options: dict[str, Any],
    retries: Retries,
    skipped: SkippedFiles | None = None,
    long_seconds: float | None = None,
) -> Iterator[tuple[int, list[Read]]]:
    """(index in `items`, what that item gave) for every item, each as soon as its location is
    read: locations in order of first appearance, every item of a location before the next one
    is opened. What an item gives: one `Read` per file or span, one per audio sample of a tar or
    row of a parquet row group (the container's own failure if it is unreadable). Inputs that
    share a location (spans of one file) are read from one open of it. What a tar holds that is
    not audio is counted in `skipped`.

    `long_seconds`: a whole file (no container, no span, alone at its location) longer than this
    (its header's duration; see HEADERLESS_BYTES_PER_SECOND for one without) is a SpooledWave,
    decoded to a local temporary file with bounded memory; the caller closes it. None: every
    wave is a tensor.
    """
    for location, indices in group_by_location(items).items():
        for index in indices:
            if items[index].container == "tar":
                yield index, list(iter_tar(items[index], sample_rate, storage_options, retries, skipped))
            elif items[index].container == "parquet":
                yield index, list(iter_parquet(items[index], sample_rate, storage_options, retries))
        files = [i for i in indices if items[i].container is None]
        if files:
            # spans in source order, so the decoder seeks forward through the file
            files.sort(key=lambda i: (items[i].start or 0.0, i))
            waves = read_location(
                location, [items[i] for i in files], sample_rate, storage_options, retries, long_seconds
            )
            for index, wave in sorted(zip(files, waves, strict=True), key=lambda pair: pair[0]):
                yield index, [(items[index], wave)]


def read_items(
    items: Sequence[InputItem],
    sample_rate: int,
    storage_options: dict[str, Any],
    retries: Retries,
    skipped: SkippedFiles | None = None,
    long_seconds: float | None = None,
) -> list[list[Read]]:
    """What each of `items` gave, in their order (`iter_reads`, collected): every wave of the
    list is held at once, so a caller that reads long inputs wants `iter_reads` instead."""
    per_item: list[list[Read]] = [[] for _ in items]
    for index, reads in iter_reads(items, sample_rate, storage_options, retries, skipped, long_seconds):
        per_item[index] = reads
    return per_item


def group_by_location(items: Sequence[InputItem]) -> dict[str, list[int]]:
    """Indices of `items` per location, locations in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.location, []).append(index)
    return groups


def read_location(
    location: str,
    items: Sequence[InputItem],
    sample_rate: int,
    storage_options: dict[str, Any],
    retries: Retries,
    long_seconds: float | None = None,
) -> list[Wave]:
    """All inputs (whole file or spans) of one location from a single open: one wave per item.

    A remote object the listing knows to be small (up to WHOLE_OBJECT_BYTES) is read in one
    GET; a larger one (or one of unknown size) by range requests. A transient storage error
    part-way reopens the file and decodes again, up to `retries` attempts; then every item of
    the location is a `read` failure naming the error (transient: the next run tries again).
    A single whole-file item longer than `long_seconds` (`_is_long`: judged from the open that
    reads it anyway, so a short file costs nothing more) is spooled (`_spool_location`).
    """
    attempts = policy_of(retries).attempts
    whole = is_remote(location) and 0 < items[0].size_bytes <= WHOLE_OBJECT_BYTES
    for attempt in range(1, attempts + 1):
        reader: RecordingReader | None = None
        source: Any = local_path(location)
        try:
            if whole:
                source, _ = with_retries(lambda: read_whole(location, storage_options), retries)
            elif is_remote(location):
                handle, _ = with_retries(lambda: open_remote(location, storage_options), retries)
                source = reader = RecordingReader(handle)
            waves = _decode_once(source, location, items, sample_rate, long_seconds)
        except Exception as err:
            # the open failed for good (missing, denied, retries spent); else a read of the
            # stream raised (a wav's samples are read directly): judged below with FFmpeg's
            if reader is None or reader.error is not err:
                return [ReadFailure.of("read", err, getattr(err, "attempts", attempt)) for _ in items]
        finally:
            if reader is not None:
                reader.close()
        if reader is not None and reader.error is not None:
            # a read failed (FFmpeg may take that for the end of the stream): nothing of this pass is trusted
            if is_transient(reader.error) and attempt < attempts:
                log.warning("reading %s failed (%s); reopening it", location, reader.error)
                continue
            return [ReadFailure.of("read", reader.error, attempt) for _ in items]
        if isinstance(waves, _LongFile):
            return [_spool_location(location, source, waves, sample_rate, storage_options, retries, attempt)]
        return [
            ReadFailure.of("decode", wave, attempt) if isinstance(wave, AudioError) else wave
            for wave in waves
        ]
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class _LongFile:
    """A whole file found longer than `long_seconds`: its open, to be spooled rather than read."""

    decoder: MonoDecoder
    size: int  # bytes; 0 when not known


def _decode_once(
    source: Any, location: str, items: Sequence[InputItem], sample_rate: int, long_seconds: float | None
) -> list[Any] | _LongFile:
    """One open of `source`, each item's span cut from runs read by seeking (`decode_spans`):
    a waveform or an AudioError per item; or, for a single whole-file item longer than
    `long_seconds`, a _LongFile (its samples not read)."""
    try:
        whole = len(items) == 1 and items[0].start is None and items[0].end is None
        if long_seconds is None or not whole:
            return decode_spans(
                source, [(item.start, item.end) for item in items], sample_rate, name=location
            )
        decoder = MonoDecoder(source, sample_rate, name=location)
        if _is_long(decoder, source, items[0], long_seconds):
            return _LongFile(decoder, _size_of(source, items[0]))
        return [decoder.span(0.0, None)]  # what decode_spans reads for one whole span: a run from 0
    except AudioError as err:
        return [err] * len(items)


def _size_of(source: Any, item: InputItem) -> int:
    """Bytes of `source` where known without a request (a local file's size, read bytes, an open
    remote file's size), else the listing's; 0 when neither knows."""
    try:
        if isinstance(source, str):
            return os.path.getsize(source)
        if isinstance(source, (bytes, bytearray)):
            return len(source)
        size = getattr(source, "size", None)
        if isinstance(size, int):
            return size
    except OSError:
        pass
    return item.size_bytes


def _is_long(decoder: MonoDecoder, source: Any, item: InputItem, long_seconds: float) -> bool:
    """Whether an opened file is longer than `long_seconds`: its header's duration (exact for a
    PCM wav, an estimate for some MP3s), or for a container that states none, whether its size
    could hold more at HEADERLESS_BYTES_PER_SECOND."""
    if decoder.header_seconds is not None:
        return decoder.header_seconds > long_seconds
    return _size_of(source, item) > long_seconds * HEADERLESS_BYTES_PER_SECOND


def _spool_location(
    location: str,
    source: Any,
    long_file: _LongFile,
    sample_rate: int,
    storage_options: dict[str, Any],
    retries: Retries,
    attempt: int,
) -> Wave:
    """A long whole file as a SpooledWave, or why not: `decode` for its bytes, `read` for the
    storage (transient past the retries). `source` is what the open read: a local path, the
    object's bytes, or a remote file (closed by now: the object is copied to local disk)."""
    try:
        if isinstance(source, (bytes, bytearray)):
            return spool_bytes(bytes(source), sample_rate, location)
        if isinstance(source, RecordingReader):
            return spool_remote(location, sample_rate, storage_options, retries, long_file.size or None)
        return spool_file(source, sample_rate, name=location, decoder=long_file.decoder)
    except AudioError as err:
        return ReadFailure.of("decode", err, attempt)
    except Exception as err:  # the copy from the storage failed, or the local disk did
        return ReadFailure.of("read", err, getattr(err, "attempts", attempt))


def iter_tar(
    item: InputItem,
    sample_rate: int,
    storage_options: dict[str, Any],
    retries: Retries,
    skipped: SkippedFiles | None = None,
) -> Iterator[Read]:
    """Every audio sample of a WebDataset shard, as a member input (`<tar>#<key>.<ext>`, its
    sidecar's metadata over the shard's) and its wave.

    The tar is streamed: one sample's members are in memory at a time. A transient storage
    error part-way reopens the stream and skips the samples already read (`iter_resuming`);
    past the retry budget the shard itself is one `read` failure. Samples without audio and
    stray members are counted in `skipped` (once, however often the tar is reopened).
    """
    passes: list[SkippedFiles] = []  # stray members, tallied afresh by each pass over the tar

    def samples(handle: Any) -> Iterator[tuple[str, dict[str, bytes]]]:
        passes.append(SkippedFiles())
        return iter_shard_samples(handle, passes[-1], item.location)

    stream = iter_resuming(
        lambda: open_tar(item.location, storage_options), samples, f"read {item.location}", policy_of(retries)
    )
    probe = lambda data: probe_audio(io.BytesIO(data))  # noqa: E731  # unknown extensions, as files
    try:
        for key, audio, members in audio_samples(stream, item.location, skipped, probe):
            yield _read_member(item, key, audio, members, sample_rate)
    except Exception as err:  # unreadable for good: a permanent error, or an outage past the budget
        yield item, ReadFailure.of("read", err, getattr(err, "attempts", 1))
        return
    if skipped is not None and passes:
        skipped.update(passes[-1])  # the pass that read the tar to its end


def _read_member(item: InputItem, key: str, audio: str, members: dict[str, bytes], sample_rate: int) -> Read:
    """One tar sample's audio member (extension `audio`) with its sidecar."""
    location = f"{item.location}#{key}.{audio}"
    member = InputItem(input_key(location), location)
    try:
        metadata = sidecar_metadata(members)
    except (ValueError, UnicodeDecodeError) as err:
        return member, ReadFailure("decode", type(err).__name__, f"bad sidecar: {err}")
    member = InputItem(member.key, location, metadata={**item.metadata, **metadata})
    try:
        return member, MonoDecoder(members[audio], sample_rate, name=location).span()
    except AudioError as err:
        return member, ReadFailure.of("decode", err, 1)


def iter_parquet(
    item: InputItem, sample_rate: int, storage_options: dict[str, Any], retries: Retries
) -> Iterator[Read]:
    """Every row of a Hugging Face parquet row group, as a member input keyed by its row id.

    Only this row group is read. A row's audio is its embedded bytes, or the file its `path`
    names (opened like any other input: range requests when remote).
    """
    from losatok_input.sources.hf_parquet import iter_rows

    try:
        rows, _ = with_retries(lambda: list(iter_rows(item, storage_options)), retries)
    except Exception as err:
        yield item, ReadFailure.of("read", err, getattr(err, "attempts", 1))
        return
    for row in rows:
        member = InputItem(input_key(row.location), row.location, metadata=row.metadata)
        if row.data is None:
            yield member, ReadFailure("read", "MissingAudio", "the row's audio has neither bytes nor a path")
            continue
        try:
            source = row.data
            if isinstance(source, str) and is_remote(source):
                source, _ = with_retries(lambda path=source: open_remote(path, storage_options), retries)
            elif isinstance(source, str):
                source = local_path(source)
            yield member, MonoDecoder(source, sample_rate, name=row.location).span()
        except AudioError as err:
            yield member, ReadFailure.of("decode", err, 1)
        except Exception as err:  # the referenced file could not be read
            yield member, ReadFailure.of("read", err, getattr(err, "attempts", 1))
