"""Long inputs travel in windows: bounded windows that add up to the whole, one shard assembled
from their parts exactly once, also when the run dies between two windows of one input."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from losatok_data.verify import verify_dataset
from losatok_input.sources import InputItem
from losatok_input.testing import convert, synth_music
from pipelines.config import SegmentConfig
from pipelines.dataflow import ContentRegistry
from pipelines.decode import decode_items, decode_windows
from pipelines.run import tokenize
from pipelines.testing import assert_same_dataset, dataset_content, tiny_run

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


@pytest.fixture(scope="module")
def whole_reference(ray_address, long_corpus, tmp_path_factory) -> Path:
    """The corpus as one window per unit (nothing spooled)."""
    sink = tmp_path_factory.mktemp("whole") / "ds"
    summary = tokenize(windowed_run(long_corpus, sink, 10_000.0))
    assert summary.ok and summary.units == 1
    return sink


def test_a_unit_in_windows_commits_the_same_shard_as_in_one_piece(
    ray_address, long_corpus, whole_reference, tmp_path
):
    sink = tmp_path / "ds"
    summary = tokenize(windowed_run(long_corpus, sink, 20.0))
    assert summary.ok and summary.units == 1 and summary.inputs == 3
    assert summary.samples == len(dataset_content(whole_reference))
    assert summary.audio_seconds == pytest.approx(106.5, abs=0.1)
    assert verify_dataset(str(sink)).ok
    assert_same_dataset(sink, whole_reference)
    assert not (sink / "parts").exists()  # the windows' parts are gone once the shard is committed


def parts_written(sink: Path) -> int:
    return len(list((sink / "parts").glob("*/*.json"))) if (sink / "parts").exists() else 0


@pytest.mark.slow
def test_a_run_killed_between_two_windows_of_one_input_resumes_exactly_once(ray_address, tmp_path):
    # 10 minutes in windows of 4 s: 150 windows, so the kill lands long before the last one
    source = tmp_path / "corpus"
    source.mkdir()
    music = synth_music(tmp_path / "long.wav", seconds=600.0, sample_rate=RATE, channels=1)
    convert(music, source / "long.wav", sample_rate=RATE, channels=1)
    sink = tmp_path / "ds"
    command = [
        sys.executable, "-m", "pipelines.tokenize", f"source.path={source}", f"sink.path={sink}",
        "cluster.window_seconds=4.0", "cluster.max_failure_fraction=0.0",
        f"segment.max_seconds={SEGMENT.max_seconds}", f"segment.min_seconds={SEGMENT.min_seconds}",
        f"cluster.address={ray_address}",
    ]  # fmt: skip
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while parts_written(sink) < 2 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.wait()
    assert parts_written(sink) >= 2, "the kill should land while the windows' parts are written"
    assert not list((sink / "index").glob("shard-*.parquet")), "the shard should not be committed yet"

    summary = tokenize(windowed_run(source, sink, 4.0))
    assert summary.ok and summary.units_resumed == 0 and summary.units == 1
    assert verify_dataset(str(sink)).ok
    expected, _ = decode_items(items_of(source), SEGMENT, RATE, {}, 1)
    segments = sorted(key.rsplit("_", 1)[1] for key in dataset_content(sink))
    assert segments == sorted(s.key.rsplit("_", 1)[1] for s in expected)  # each sample once
    assert summary.samples == len(expected) > 140
    assert not (sink / "parts").exists()
