"""Fixtures shared by every package's tests."""

from __future__ import annotations

import os

import pytest

# Ray on these machines binds to loopback only: its default is the host's network address,
# and tests must send traffic to loopback alone. Set before any test imports ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from losatok.testing import convert, synth_music, synth_speech


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory):
    """Real recordings in several formats, rates and channel counts, made once per session."""
    root = tmp_path_factory.mktemp("audio")
    synth_speech(root / "speech.wav", "The quick brown fox jumps over the lazy dog.", sample_rate=22_050)
    synth_music(root / "music.flac", seconds=2.0, sample_rate=44_100, channels=2)
    convert(root / "speech.wav", root / "speech.mp3")
    convert(root / "music.flac", root / "music.ogg")
    convert(root / "speech.wav", root / "speech.m4a")
    convert(root / "speech.wav", root / "speech.opus", sample_rate=48_000)
    convert(root / "speech.wav", root / "speech_8k.wav", sample_rate=8_000)
    return root
