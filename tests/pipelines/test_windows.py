"""Long inputs travel in windows: bounded windows that add up to the whole unit, sample for
sample. Parts and their assembly: test_commit_windows.py; runs killed inside windowed units:
test_resume.py."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from losatok_input.sources import InputItem
from losatok_input.testing import convert, synth_music
from pipelines.config import SegmentConfig
from pipelines.dataflow import ContentRegistry
from pipelines.decode import decode_items, decode_windows
from pipelines.testing import tiny_run

RATE = 16_000
SEGMENT = SegmentConfig(max_seconds=4.0, min_seconds=1.0)


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory) -> Path:
    """A 16 kHz mono wav of 100 s between two of 3 and 3.5 s: a 16 kHz PCM wav spools bit-exactly, so a
    windowed run must equal a whole one sample for sample."""
    root = tmp_path_factory.mktemp("long_corpus")
    scratch = tmp_path_factory.mktemp("long_src")
    for name, seconds in (("a_short", 3.0), ("m_long", 100.0), ("z_short", 3.5)):
        music = synth_music(scratch / f"{name}.wav", seconds=seconds, sample_rate=RATE, channels=1)
        convert(music, root / f"{name}.wav", sample_rate=RATE, channels=1)
    return root


def items_of(root: Path) -> list[InputItem]:
    return [InputItem(p.stem, str(p), size_bytes=p.stat().st_size) for p in sorted(root.glob("*.wav"))]


def test_windows_hold_bounded_audio_and_add_up_to_the_whole_unit(long_corpus):
    items = items_of(long_corpus)
    whole, whole_failures = decode_items(items, SEGMENT, RATE, {}, 1)
    failures: list = []
    windows = list(decode_windows(items, SEGMENT, RATE, {}, 1, 20.0, failures))
    assert not whole_failures and not failures
    # a window closes at the first segment that reaches 20 s: at most one segment over it
    assert len(windows) >= 5
    for window in windows[:-1]:
        assert 20.0 <= sum(s.duration for s in window) < 20.0 + SEGMENT.max_seconds
    joined = [s for window in windows for s in window]
    assert [s.key for s in joined] == [s.key for s in whole]
    assert [s.input_key for s in joined][0] == "a_short" and joined[-1].input_key == "z_short"
    for mine, theirs in zip(joined, whole, strict=True):
        assert mine.offset == theirs.offset and mine.measures == theirs.measures
        assert mine.wav.dtype == theirs.wav.dtype == np.int16  # spooled, still compact
        np.testing.assert_array_equal(mine.wav, theirs.wav)


def test_a_long_copy_is_left_out_whole_before_any_of_its_windows(long_corpus, tmp_path):
    shutil.copy(long_corpus / "m_long.wav", tmp_path / "m_long_copy.wav")
    items = [*items_of(long_corpus), *items_of(tmp_path)]
    dropped, left_out = Counter(), {}
    registry = ContentRegistry(np.empty(0, "S16"))
    failures: list = []
    windows = list(
        decode_windows(items, SEGMENT, RATE, {}, 1, 20.0, failures, None, dropped, registry.claim, left_out)
    )
    inputs = {s.input_key for window in windows for s in window}
    assert inputs == {"a_short", "m_long", "z_short"} and not failures
    assert dropped == {"duplicate_inputs": 1}
    assert left_out == {"m_long_copy": "the same audio as input m_long (sink.dedup)"}


def windowed_run(source: Path, sink: Path, window_seconds: float):
    config = tiny_run(source, sink, inputs_per_shard=8, window_seconds=window_seconds)
    return replace(config, segment=SEGMENT)
