"""Per-segment audio measures (`pipelines.measures`): exact levels on numpy signals, the same
measures and hash for both dtypes of one audio, and sensible values on real speech and music."""

import json
import wave

import numpy as np
import pytest
import xxhash

from losatok_input.testing import synth_music, synth_speech
from pipelines.measures import FRAME_SECONDS, RMS_FLOOR_DB, AudioMeasures, content_hash, measure

RATE = 16_000
FRAME = round(FRAME_SECONDS * RATE)  # 320 samples


def read_pcm(path) -> np.ndarray:
    """A mono 16-bit wav as int16 samples (S,)."""
    with wave.open(str(path)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, RATE)
        return np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16)


def sine(amplitude: float, seconds: float = 1.0, hz: float = 1000.0) -> np.ndarray:
    """(S,) float32; at 1 kHz every period is 16 whole samples, reaching +-amplitude exactly."""
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """Three sentences from espeak-ng at 16 kHz, int16: words with pauses between them."""
    root = tmp_path_factory.mktemp("measures")
    text = "Measure every segment. Then store the numbers, and pause between the phrases."
    return read_pcm(synth_speech(root / "speech.wav", text, sample_rate=RATE))


def test_full_scale_sine_is_minus_3_dbfs_with_a_peak_of_one():
    m = measure(sine(1.0))
    assert m.rms_db == pytest.approx(-3.0103, abs=1e-3)
    assert m.peak == pytest.approx(1.0, abs=1e-6)
    assert m.silent_fraction == 0.0
    assert m.loudness_lufs is None  # not asked for


def test_sine_at_minus_20_dbfs_peak_is_minus_23_dbfs_rms_in_both_dtypes():
    tone = sine(0.1)
    pcm = np.round(tone * 32768).astype(np.int16)
    for wav in (tone, pcm):
        m = measure(wav)
        assert m.rms_db == pytest.approx(-23.0103, abs=0.01)
        assert m.peak == pytest.approx(0.1, abs=1e-4)
        assert m.clipped_fraction == 0.0


def test_digital_silence_is_floored_and_all_silent():
    for wav in (np.zeros(RATE, np.int16), np.zeros(RATE, np.float32), np.zeros(0, np.float32)):
        m = measure(wav)
        assert m.rms_db == RMS_FLOOR_DB
        assert m.silent_fraction == 1.0
        assert (m.peak, m.clipped_fraction) == (0.0, 0.0)


def test_clipped_fraction_counts_the_samples_at_full_scale():
    # clipped at 0.5 then scaled to full scale: of each 16-sample period of a 1 kHz sine, the
    # samples at |sin| = 0.71, 0.92, 1, 0.92, 0.71 and their negatives sit on the rail: 10 of 16
    clipped = np.clip(sine(1.0), -0.5, 0.5) * 2
    expected = np.count_nonzero(np.abs(clipped) == 1.0) / len(clipped)
    assert expected == 10 / 16
    assert measure(clipped).clipped_fraction == expected
    # int16 at 32767 (and -32767) is full scale too; so is -32768
    assert measure(np.round(clipped * 32767).astype(np.int16)).clipped_fraction == expected
    rails = np.round(clipped * 32768).clip(-32768, 32767).astype(np.int16)  # 32767 and -32768
    assert measure(rails).clipped_fraction == expected
    assert measure(sine(0.99)).clipped_fraction == 0.0  # loud, but 0.09 dB under the rail


def test_half_silence_half_tone_is_half_silent():
    wav = np.concatenate([np.zeros(RATE, np.float32), sine(0.1)])
    assert measure(wav).silent_fraction == 0.5
    # off the frame grid: the frame holding the tone's onset is not silent
    wav = np.concatenate([np.zeros(RATE + FRAME // 2, np.float32), sine(0.1)])
    assert measure(wav).silent_fraction == pytest.approx(RATE / len(wav))


def test_partial_last_frame_counts_by_its_length():
    tone = sine(0.1)  # 50 whole frames
    m = measure(np.concatenate([tone, np.zeros(100, np.float32)]))
    assert m.silent_fraction == pytest.approx(100 / (RATE + 100))  # the tail alone is silent
    m = measure(np.concatenate([np.zeros(RATE, np.float32), tone[:100]]))
    assert m.silent_fraction == pytest.approx(RATE / (RATE + 100))


def test_int16_and_the_same_float32_give_equal_measures_and_the_documented_hash(speech):
    as_float = speech.astype(np.float32) / 32768
    assert measure(speech) == measure(as_float)
    expected = xxhash.xxh3_128_hexdigest(b"s16le:" + speech.astype("<i2").tobytes())
    assert measure(speech).content_hash == content_hash(as_float) == expected


def test_float_audio_off_the_int16_grid_hashes_as_float32():
    off_grid = sine(0.3)
    expected = xxhash.xxh3_128_hexdigest(b"f32le:" + off_grid.astype("<f4").tobytes())
    assert measure(off_grid).content_hash == expected
    # the same bytes read as int16 are other audio, with another hash
    assert content_hash(off_grid.view(np.int16)) != expected


def test_one_sample_changed_changes_the_hash(speech):
    changed = speech.copy()
    changed[len(changed) // 2] += 1
    assert measure(changed).content_hash != measure(speech).content_hash
    assert measure(speech[:-1]).content_hash != measure(speech).content_hash


def test_real_speech_has_pauses_and_sane_levels(speech):
    m = measure(speech)
    assert 0.0 < m.silent_fraction < 1.0  # words, and the pauses between them
    assert -40.0 < m.rms_db < -3.0
    assert 0.0 < m.peak <= 1.0 and m.clipped_fraction == 0.0


def test_real_music_is_not_silent(tmp_path):
    music = read_pcm(synth_music(tmp_path / "m.wav", seconds=2.0, sample_rate=RATE, channels=1))
    m = measure(music)
    assert m.silent_fraction < 0.1
    assert -40.0 < m.rms_db < -3.0 and m.clipped_fraction == 0.0


def test_as_dict_is_plain_json():
    m = measure(sine(0.5))
    row = json.loads(json.dumps(m.as_dict()))
    assert row == m.as_dict()
    assert AudioMeasures(**row) == m
    assert list(row) == [
        "rms_db", "peak", "clipped_fraction", "silent_fraction", "content_hash", "loudness_lufs"
    ]  # fmt: skip


def test_other_shapes_and_dtypes_are_refused():
    with pytest.raises(ValueError, match=r"\(S,\)"):
        measure(np.zeros((2, RATE), np.float32))
    with pytest.raises(TypeError, match="float64"):
        measure(np.zeros(RATE))


def test_loudness_by_pyloudnorm_when_asked():
    # BS.1770 is calibrated so that a full-scale 1 kHz sine reads -3.01 LUFS
    assert measure(sine(0.1), loudness=True).loudness_lufs == pytest.approx(-23.01, abs=0.1)
    assert measure(sine(0.1, seconds=0.3), loudness=True).loudness_lufs is None  # under 400 ms
    assert measure(np.zeros(RATE, np.int16), loudness=True).loudness_lufs is None  # silence
