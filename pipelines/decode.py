"""The decode stage (CPU workers): a unit's inputs read (`losatok_input.reading`), then each
waveform cut into measured segments on the token grid, or its failure made a ledger row.

Every input ends as segments, as a failure, or left out whole and counted (every segment
silent, or with sink.dedup a copy of audio the dataset holds); a failure never stops the unit.
How an input is opened, decoded, resampled and read through storage faults is `losatok_input`'s
job; this stage adds what the dataset needs: segment bounds (at pauses, or equal), each
segment's audio measures (`pipelines.measures`), compact PCM for the encoder, ledger rows.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from losatok_data.ledger import FailureRecord
from losatok_input.items import InputItem
from losatok_input.reading import ReadFailure, read_items
from losatok_input.rule import SkippedFiles
from losatok_storage.retry import Retries
from pipelines.config import SegmentConfig
from pipelines.measures import integrated_loudness, measure
from pipelines.records import DUPLICATE, SILENT, Segment, compact_pcm, input_digest
from pipelines.segment import pause_bounds, segment_bounds

log = logging.getLogger(__name__)


Result = list[Segment] | FailureRecord
# a unit's inputs, each (input key, `input_digest` of its audio) -> the key that owns that audio:
# itself, another input's (a duplicate), or "" (the dataset holds it); `pipelines.dataflow.ContentRegistry`
Claim = Callable[[list[tuple[str, bytes]]], list[str]]


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
    else:  # "pause"; None only where no run resolved it (a new dataset's mode: run.resolve_url)
        bounds = pause_bounds(samples, sample_rate, segment.max_seconds, segment.min_seconds)
    base = item.start or 0.0
    segments = []
    for index, (first, last) in enumerate(bounds):
        piece = samples[first:last]
        measures = measure(piece, sample_rate)
        if measures.silent_fraction > segment.max_silent_fraction:
            if dropped is not None:
                dropped[SILENT] += 1
            continue
        if segment.loudness:  # the costly measure, only for what is kept
            measures = replace(measures, loudness_lufs=integrated_loudness(piece, sample_rate))
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
    left_out: dict[str, str] | None = None,
) -> tuple[list[Segment], list[FailureRecord]]:
    """Decode a unit's inputs: (segments in input order, failures).

    Inputs that share a location (spans of one file) are decoded from one open of it. What a
    WebDataset tar holds that is not audio (a sample without an audio member, a stray file) is
    counted in `skipped`; silent segments left out, and with `claim` (sink.dedup) inputs whose
    audio another input owns, in `dropped` by reason. An input left out whole (every segment
    silent, or a copy) gets its key and why in `left_out`: it has neither samples nor a failure.
    """
    by_input: list[tuple[list[Segment], Counter[str]]] = []  # each kept input, and what it left out
    failures: list[FailureRecord] = []
    dropped = Counter() if dropped is None else dropped
    left_out = {} if left_out is None else left_out
    for reads in read_items(items, sample_rate, storage_options, retries, skipped):
        for item, wave in reads:
            own: Counter[str] = Counter()
            result = (
                failure_record(item, wave)
                if isinstance(wave, ReadFailure)
                else to_segments(item, wave.numpy(), segment, sample_rate, own)
            )
            if isinstance(result, FailureRecord):
                log.warning("input failed at %s: %s: %s", result.stage, result.location, result.message)
                failures.append(result)
            elif result:
                by_input.append((result, own))
            else:
                dropped.update(own)
                left_out[item.key] = (
                    f"every segment silent over segment.max_silent_fraction={segment.max_silent_fraction}"
                )
    if claim is not None and by_input:
        digests = [input_digest([s.measures["content_hash"] for s in segs]) for segs, _ in by_input]
        owners = claim(
            [(segs[0].input_key, digest) for (segs, _), digest in zip(by_input, digests, strict=True)]
        )
        for (segs, _), owner in zip(by_input, owners, strict=True):
            if owner != segs[0].input_key:  # a copy: what its segments were is not counted either
                same = f"input {owner}" if owner else "a sample already in the dataset"
                log.info(
                    "input %s (%s) holds the same audio as %s: skipped",
                    segs[0].input_key,
                    segs[0].location,
                    same,
                )
                left_out[segs[0].input_key] = f"the same audio as {same} (sink.dedup)"
                dropped[DUPLICATE] += 1
        by_input = [
            pair for pair, owner in zip(by_input, owners, strict=True) if owner == pair[0][0].input_key
        ]
    for _, own in by_input:
        dropped.update(own)
    return [s for segs, _ in by_input for s in segs], failures
