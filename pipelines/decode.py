"""The decode stage (CPU workers): a unit's inputs read (`losatok_input.reading`), then each
waveform cut into segments on the token grid, or its failure made a ledger row.

Every input ends as segments or as a failure; a failure never stops the unit. How an input is
opened, decoded, resampled and read through storage faults is `losatok_input`'s job; this stage
adds what the dataset needs: segment bounds, compact PCM for the encoder, ledger rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from losatok_data.ledger import FailureRecord
from losatok_input.items import InputItem
from losatok_input.reading import ReadFailure, read_items
from losatok_input.rule import SkippedFiles
from losatok_storage.retry import Retries
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
) -> tuple[list[Segment], list[FailureRecord]]:
    """Decode a unit's inputs: (segments in input order, failures).

    Inputs that share a location (spans of one file) are decoded from one open of it. What a
    WebDataset tar holds that is not audio (a sample without an audio member, a stray file) is
    counted in `skipped`.
    """
    segments: list[Segment] = []
    failures: list[FailureRecord] = []
    for reads in read_items(items, sample_rate, storage_options, retries, skipped):
        for item, wave in reads:
            result = (
                failure_record(item, wave)
                if isinstance(wave, ReadFailure)
                else to_segments(item, wave.numpy(), segment, sample_rate)
            )
            if isinstance(result, FailureRecord):
                log.warning("input failed at %s: %s: %s", result.stage, result.location, result.message)
                failures.append(result)
            else:
                segments.extend(result)
    return segments, failures
