import math

import pytest
import torch

from losatok.audio import AudioError, collate_waveforms, load_audio, save_audio
from losatok.testing import write_float_wav


@pytest.mark.parametrize(
    "name",
    ["speech.wav", "speech.mp3", "speech.m4a", "speech.opus", "speech_8k.wav", "music.flac", "music.ogg"],
)
def test_common_formats_decode_to_16k_mono(audio_dir, name):
    wav = load_audio(audio_dir / name)
    assert wav.dim() == 1 and wav.dtype == torch.float32
    assert wav.abs().max() > 0.05  # real signal, not silence
    seconds = 2.0 if name.startswith("music") else None
    if seconds:
        assert wav.numel() == pytest.approx(16_000 * seconds, rel=0.02)


def test_resampling_keeps_duration(audio_dir):
    at_22k = load_audio(audio_dir / "speech.wav")
    at_8k = load_audio(audio_dir / "speech_8k.wav")
    assert abs(at_22k.numel() - at_8k.numel()) <= 8


def test_stereo_is_downmixed(audio_dir):
    import torchaudio

    stereo, rate = torchaudio.load(audio_dir / "music.flac")
    assert stereo.shape[0] == 2
    mono = load_audio(audio_dir / "music.flac", sample_rate=rate)
    torch.testing.assert_close(mono, stereo.mean(0))


def test_span_is_cut_in_source_seconds(audio_dir):
    part = load_audio(audio_dir / "music.flac", start=0.5, end=1.5)
    assert part.numel() == 16_000


def test_empty_file_is_named(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav: empty file"):
        load_audio(tmp_path / "empty.wav")


def test_non_audio_bytes_are_named(tmp_path):
    (tmp_path / "notes.mp3").write_bytes(b"these are shopping notes, not audio\n" * 50)
    with pytest.raises(AudioError, match=r"notes\.mp3: cannot decode as audio"):
        load_audio(tmp_path / "notes.mp3")
    with pytest.raises(AudioError, match=r"s3://bucket/x\.flac: cannot decode"):
        load_audio(b"\x00\x01garbage" * 100, name="s3://bucket/x.flac")


def test_nan_samples_are_named(tmp_path):
    write_float_wav(tmp_path / "nan.wav", [0.1] * 1000 + [math.nan, math.inf] + [0.1] * 1000)
    with pytest.raises(AudioError, match=r"nan\.wav: 2 samples are NaN or infinite"):
        load_audio(tmp_path / "nan.wav")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(AudioError, match="does not exist"):
        load_audio(tmp_path / "absent.wav")


def test_bytes_input_decodes_like_the_file(audio_dir):
    data = (audio_dir / "speech.mp3").read_bytes()
    torch.testing.assert_close(load_audio(data), load_audio(audio_dir / "speech.mp3"))


def test_save_and_reload(tmp_path):
    tone = 0.5 * torch.sin(torch.arange(16_000) / 16_000 * 2 * math.pi * 440)
    save_audio(tmp_path / "tone.wav", tone)
    back = load_audio(tmp_path / "tone.wav")
    assert back.numel() == 16_000 and torch.allclose(back, tone, atol=1e-3)


def test_collate_pads_with_zeros_and_reports_lengths():
    batch, lengths = collate_waveforms([torch.ones(3), torch.ones(5)])
    assert batch.shape == (2, 5) and lengths.tolist() == [3, 5]
    assert batch[0, 3:].abs().sum() == 0
    with pytest.raises(ValueError):
        collate_waveforms([])
