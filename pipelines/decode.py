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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from losatok_data.ledger import FailureRecord
from losatok_input.items import InputItem
from losatok_input.reading import ReadFailure, iter_reads
from losatok_input.rule import SkippedFiles
from losatok_input.spool import SpooledWave
from losatok_storage.retry import Retries
from pipelines.config import SegmentConfig
from pipelines.measures import AudioMeasures, integrated_loudness, measure
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
    samples = compact_pcm(wav)  # int16 when that is lossless: half the bytes to the encoder
    plan = cut_plan(item, samples, segment, sample_rate, dropped)
    if isinstance(plan, FailureRecord):
        return plan
    return [plan_segment(item, samples, cut, segment, sample_rate) for cut in plan]


@dataclass(frozen=True)
class Cut:
    """One kept segment of an input, before its audio is taken: where it lies and what it measures."""

    index: int  # the segment's number within its input (keys keep it; left-out ones leave gaps)
    first: int  # [first, last) samples of the input
    last: int
    measures: AudioMeasures


def cut_plan(
    item: InputItem,
    samples: np.ndarray | SpooledWave,
    segment: SegmentConfig,
    sample_rate: int,
    dropped: Counter[str] | None = None,
) -> list[Cut] | FailureRecord:
    """Where an input's (S,) samples are cut and which segments are kept, each measured; or the
    input's failure as too short. Silent segments left out are counted in `dropped`.

    `samples` is an array or a `SpooledWave` (an input too long to hold, on local disk): both
    are only ever sliced, one segment at a time (`pause_bounds` reads only its windows).
    """
    seconds = len(samples) / sample_rate
    if seconds < segment.min_seconds:
        message = f"{seconds:.3f} s of audio is shorter than the minimum of {segment.min_seconds} s"
        return FailureRecord(item.location, "segment", "TooShort", message, key=item.key)
    if segment.cut == "equal":
        bounds = segment_bounds(len(samples), sample_rate, segment.max_seconds)
    else:  # "pause"; None only where no run resolved it (a new dataset's mode: run.resolve_url)
        bounds = pause_bounds(samples, sample_rate, segment.max_seconds, segment.min_seconds)
    cuts = []
    for index, (first, last) in enumerate(bounds):
        measures = measure(_piece(samples, first, last), sample_rate)
        if measures.silent_fraction > segment.max_silent_fraction:
            if dropped is not None:
                dropped[SILENT] += 1
            continue
        cuts.append(Cut(index, first, last, measures))
    return cuts


def _piece(samples: np.ndarray | SpooledWave, first: int, last: int) -> np.ndarray:
    """Samples [first, last) as an array: a view of an array, read from a spooled input (as the
    compact int16 an in-memory input of the same audio would have been)."""
    piece = samples[first:last]
    return compact_pcm(piece) if isinstance(samples, SpooledWave) else piece


def plan_segment(
    item: InputItem, samples: np.ndarray | SpooledWave, cut: Cut, segment: SegmentConfig, sample_rate: int
) -> Segment:
    """The `Segment` of one kept cut, with its audio taken from `samples`."""
    piece = _piece(samples, cut.first, cut.last)
    measures = cut.measures
    if segment.loudness:  # the costly measure, only for what is kept
        measures = replace(measures, loudness_lufs=integrated_loudness(piece, sample_rate))
    return Segment(
        key=f"{item.key}_{cut.index:04d}",
        input_key=item.key,
        location=item.location,
        offset=(item.start or 0.0) + cut.first / sample_rate,
        wav=piece,
        sample_rate=sample_rate,
        metadata=dict(item.metadata),
        measures=measures.as_dict(),
    )


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
    """Decode a unit's inputs in one go: (segments in input order, failures); `decode_windows`
    without windows, every input held in memory (tests, benches)."""
    failures: list[FailureRecord] = []
    windows = decode_windows(
        items,
        segment,
        sample_rate,
        storage_options,
        retries,
        None,
        failures,
        skipped,
        dropped,
        claim,
        left_out,
    )
    return [s for window in windows for s in window], failures


def decode_windows(
    items: Sequence[InputItem],
    segment: SegmentConfig,
    sample_rate: int,
    storage_options: dict[str, Any],
    retries: Retries,
    window_seconds: float | None,
    failures: list[FailureRecord],
    skipped: SkippedFiles | None = None,
    dropped: Counter[str] | None = None,
    claim: Claim | None = None,
    left_out: dict[str, str] | None = None,
) -> Iterator[list[Segment]]:
    """Decode a unit's inputs into windows: lists of segments, in input order, each holding about
    `window_seconds` of audio (a window closes at the first segment that reaches it), the last one
    what remains (possibly nothing). None: one window for the whole unit.

    An input longer than `window_seconds` is decoded to local disk (`losatok_input.spool`), never
    held whole, and its segments are taken from there a window at a time; so a decode process holds
    about two windows (the one filling and the one the caller holds) whatever the inputs' lengths.

    Failures are appended to `failures` as they are met (complete once the generator is
    exhausted). What a WebDataset tar holds that is not audio is counted in `skipped`; silent
    segments left out, and with `claim` (sink.dedup) inputs whose audio another input owns, in
    `dropped` by reason. An input left out whole (every segment silent, or a copy) gets its key and
    why in `left_out`: it has neither samples nor a failure.
    """
    dropped = Counter() if dropped is None else dropped
    left_out = {} if left_out is None else left_out
    limit = None if window_seconds is None else window_seconds * sample_rate  # samples per window
    pending: list[tuple[InputItem, list[Segment], Counter[str]]] = []  # decoded, not yet claimed
    window: list[Segment] = []
    held = 0  # samples in `window` and `pending`

    def settle() -> None:
        """Move `pending` into `window`, leaving out copies (sink.dedup)."""
        owners = _claim(
            claim, [(item, [s.measures["content_hash"] for s in segs]) for item, segs, _ in pending]
        )
        for (item, segs, own), owner in zip(pending, owners, strict=True):
            if _is_copy(item, owner, left_out, dropped):
                continue
            dropped.update(own)
            window.extend(segs)
        pending.clear()

    for item, wave in _in_input_order(items, sample_rate, storage_options, retries, skipped, window_seconds):
        if isinstance(wave, ReadFailure):
            _fail(failures, failure_record(item, wave))
            continue
        own: Counter[str] = Counter()
        if isinstance(wave, SpooledWave):  # too long to hold: cut and measured from disk first
            with wave:
                plan = cut_plan(item, wave, segment, sample_rate, own)
                if isinstance(plan, FailureRecord):
                    _fail(failures, plan)
                    continue
                if not plan:
                    _all_silent(item, own, segment, left_out, dropped)
                    continue
                settle()  # what came before it claims and goes first, in input order
                (owner,) = _claim(claim, [(item, [c.measures.content_hash for c in plan])])
                if _is_copy(item, owner, left_out, dropped):
                    continue
                dropped.update(own)
                for cut in plan:
                    window.append(plan_segment(item, wave, cut, segment, sample_rate))
                    held += cut.last - cut.first
                    if limit is not None and held >= limit:
                        yield window
                        window, held = [], 0
            continue
        result = to_segments(item, wave.numpy(), segment, sample_rate, own)
        if isinstance(result, FailureRecord):
            _fail(failures, result)
        elif not result:
            _all_silent(item, own, segment, left_out, dropped)
        else:
            pending.append((item, result, own))
            held += sum(s.num_samples for s in result)
            if limit is not None and held >= limit:
                settle()
                yield window
                window, held = [], 0
    settle()
    yield window


def _in_input_order(
    items: Sequence[InputItem],
    sample_rate: int,
    storage_options: dict[str, Any],
    retries: Retries,
    skipped: SkippedFiles | None,
    long_seconds: float | None,
) -> Iterator[tuple[InputItem, Any]]:
    """Every (input, wave) of `items` in item order, each decoded when its location's turn comes
    (`iter_reads` gives a location's items together); items of a location met early wait here.
    A plan keeps a file's spans together, so little ever waits."""
    ready: dict[int, list] = {}
    next_index = 0
    for index, reads in iter_reads(items, sample_rate, storage_options, retries, skipped, long_seconds):
        ready[index] = reads
        while next_index in ready:
            yield from ready.pop(next_index)
            next_index += 1


def _fail(failures: list[FailureRecord], record: FailureRecord) -> None:
    log.warning("input failed at %s: %s: %s", record.stage, record.location, record.message)
    failures.append(record)


def _all_silent(
    item: InputItem,
    own: Counter[str],
    segment: SegmentConfig,
    left_out: dict[str, str],
    dropped: Counter[str],
) -> None:
    dropped.update(own)
    left_out[item.key] = (
        f"every segment silent over segment.max_silent_fraction={segment.max_silent_fraction}"
    )


def _claim(claim: Claim | None, inputs: list[tuple[InputItem, list[str]]]) -> list[str]:
    """The owner of each input's audio (its segments' content hashes, in order): one call for all."""
    if claim is None or not inputs:
        return [item.key for item, _ in inputs]
    return claim([(item.key, input_digest(hashes)) for item, hashes in inputs])


def _is_copy(item: InputItem, owner: str, left_out: dict[str, str], dropped: Counter[str]) -> bool:
    """Whether `item` is a copy of audio `owner` holds ("": the dataset); a copy is logged and
    counted, and what its segments were is not counted."""
    if owner == item.key:
        return False
    same = f"input {owner}" if owner else "a sample already in the dataset"
    log.info("input %s (%s) holds the same audio as %s: skipped", item.key, item.location, same)
    left_out[item.key] = f"the same audio as {same} (sink.dedup)"
    dropped[DUPLICATE] += 1
    return True
