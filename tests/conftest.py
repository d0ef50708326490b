"""Fixtures shared by every package's tests."""

from __future__ import annotations

import pytest

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
