"""The decode stage (CPU workers): a unit's inputs read (`losatok_input.reading`), then each
waveform cut into segments on the token grid, or its failure made a ledger row.

Every input ends as segments or as a failure; a failure never stops the unit. How an input is
opened, decoded, resampled and read through storage faults is `losatok_input`'s job; this stage
adds what the dataset needs: segment bounds, compact PCM for the encoder, ledger rows.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from losatok_data.ledger import FailureRecord
from losatok_input.items import InputItem
from losatok_input.reading import ReadFailure, read_items
from losatok_input.rule import SkippedFiles
from losatok_storage.retry import Retries
from pipelines.config import SegmentConfig
from pipelines.measures import measure
from pipelines.records import Segment, compact_pcm, input_digest
from pipelines.segment import pause_bounds, segment_bounds

log = logging.getLogger(__name__)


Result = list[Segment] | FailureRecord
# a unit's inputs, each (input key, `input_digest` of its audio) -> the key that owns that audio:
# itself, another input's (a duplicate), or "" (the dataset holds it); `pipelines.dataflow.ContentRegistry`
Claim = Callable[[list[tuple[str, bytes]]], list[str]]
SILENT, DUPLICATE = "silent_segments", "duplicate_inputs"  # reasons in `dropped`


def to_segments(
    item: InputItem,
    wav: np.ndarray,
    segment: SegmentConfig,
    sample_rate: int,
    dropped: Counter[str] | None = None,
) -> Result:
    """Cut one input's (S,) waveform into measured segments on the token grid, or fail it as too short.

    A segment silent over more than `segment.max_silent_fraction` is left out and counted in
    `dropped`; the others keep their index in the key, so keys never depend on what was left out.
    """
    seconds = len(wav) / sample_rate
    if seconds < segment.min_seconds:
        message = f"{seconds:.3f} s of audio is shorter than the minimum of {segment.min_seconds} s"
        return FailureRecord(item.location, "segment", "TooShort", message, key=item.key)
    samples = compact_pcm(wav)  # int16 when that is lossless: half the bytes to the encoder
    if segment.cut == "equal":
        bounds = segment_bounds(len(samples), sample_rate, segment.max_seconds)
    else:  # "pause", and None (what a new dataset gets)
        bounds = pause_bounds(samples, sample_rate, segment.max_seconds, segment.min_seconds)
    base = item.start or 0.0
    segments = []
    for index, (first, last) in enumerate(bounds):
        piece = samples[first:last]
        measures = measure(piece, sample_rate, loudness=segment.loudness)
        if measures.silent_fraction > segment.max_silent_fraction:
            if dropped is not None:
                dropped[SILENT] += 1
            continue
        segments.append(
            Segment(
                key=f"{item.key}_{index:04d}",
                input_key=item.key,
                location=item.location,
                offset=base + first / sample_rate,
                wav=piece,
                sample_rate=sample_rate,
                metadata=dict(item.metadata),
                measures=measures.as_dict(),
            )
        )
    return segments


def failure_record(item: InputItem, failure: ReadFailure) -> FailureRecord:
    """The ledger row of an input that gave no waveform."""
    return FailureRecord(
        item.location,
        failure.stage,
        failure.error_type,
        failure.message,
        failure.attempts,
        key=item.key,
        transient=failure.transient,
    )


def decode_items(
    items: Sequence[InputItem],
    segment: SegmentConfig,
    sample_rate: int,
    storage_options: dict[str, Any],
    retries: Retries,
    skipped: SkippedFiles | None = None,
    dropped: Counter[str] | None = None,
    claim: Claim | None = None,
) -> tuple[list[Segment], list[FailureRecord]]:
    """Decode a unit's inputs: (segments in input order, failures).

    Inputs that share a location (spans of one file) are decoded from one open of it. What a
    WebDataset tar holds that is not audio (a sample without an audio member, a stray file) is
    counted in `skipped`; silent segments left out, and with `claim` (sink.dedup) inputs whose
    audio another input owns, in `dropped` by reason.
    """
    by_input: list[list[Segment]] = []
    failures: list[FailureRecord] = []
    dropped = Counter() if dropped is None else dropped
    for reads in read_items(items, sample_rate, storage_options, retries, skipped):
        for item, wave in reads:
            result = (
                failure_record(item, wave)
                if isinstance(wave, ReadFailure)
                else to_segments(item, wave.numpy(), segment, sample_rate, dropped)
            )
            if isinstance(result, FailureRecord):
                log.warning("input failed at %s: %s: %s", result.stage, result.location, result.message)
                failures.append(result)
            elif result:
                by_input.append(result)
    if claim is not None and by_input:
        owners = claim(
            [(s[0].input_key, input_digest([x.measures["content_hash"] for x in s])) for s in by_input]
        )
        kept = [s for s, owner in zip(by_input, owners, strict=True) if owner == s[0].input_key]
        for s, owner in zip(by_input, owners, strict=True):
            if owner != s[0].input_key:
                same = f"input {owner}" if owner else "a sample already in the dataset"
                log.info(
                    "input %s (%s) holds the same audio as %s: skipped", s[0].input_key, s[0].location, same
                )
        dropped[DUPLICATE] += len(by_input) - len(kept)
        by_input = kept
    return [s for segments in by_input for s in segments], failures
