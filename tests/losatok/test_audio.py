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


def test_spans_from_one_open_are_cut_from_one_decode(audio_dir):
    from losatok.audio import decode_spans

    spans = [(1.0, 1.5), (0.2, 0.7), (None, None), (3.0, 4.0)]
    results = decode_spans(audio_dir / "music.flac", spans)
    full = load_audio(audio_dir / "music.flac")
    torch.testing.assert_close(results[0], full[16_000:24_000], rtol=0, atol=0)
    torch.testing.assert_close(results[1], full[3_200:11_200], rtol=0, atol=0)
    torch.testing.assert_close(results[2], full, rtol=0, atol=0)
    assert isinstance(results[3], AudioError) and "holds no samples" in results[3].reason  # past the end
    # a span alone is read by seeking: the same audio, up to the resampler's sub-sample phase
    alone = load_audio(audio_dir / "music.flac", start=1.0, end=1.5)
    assert alone.numel() == 8_000
    similarity = torch.nn.functional.cosine_similarity(alone[200:-200], results[0][200:-200], dim=0)
    assert float(similarity) > 0.99


def test_span_read_by_seeking_lines_up_with_the_full_decode(tmp_path):
    from losatok.testing import convert, synth_music

    wav16 = convert(
        synth_music(tmp_path / "m.wav", seconds=20.0, sample_rate=16_000, channels=1), tmp_path / "m16.wav"
    )
    full = load_audio(wav16)
    torch.testing.assert_close(
        load_audio(wav16, start=12.5, end=14.0), full[200_000:224_000]
    )  # no resampling: exact
    flac = convert(wav16, tmp_path / "m.flac", sample_rate=44_100)
    full, part = load_audio(flac), load_audio(flac, start=12.5, end=14.0)
    assert part.numel() == 24_000
    # no whole-sample shift (torchcodec 0.11 shifts later ranges of a reused decoder by ~16
    # samples; every span gets a fresh decoder), up to the resampler's sub-sample phase
    similarity = {
        k: float(
            torch.nn.functional.cosine_similarity(part[1000:-1000], full[201_000 + k : 223_000 + k], dim=0)
        )
        for k in range(-32, 33)
    }
    assert max(similarity, key=similarity.get) == 0 and similarity[0] > 0.99


def test_more_than_two_channels_are_averaged(tmp_path):
    import torchaudio

    from losatok.testing import synth_music

    path = synth_music(tmp_path / "six.wav", seconds=1.0, sample_rate=16_000, channels=6)
    channels, rate = torchaudio.load(path)
    assert channels.shape[0] == 6
    torch.testing.assert_close(load_audio(path, sample_rate=rate), channels.mean(0))


def test_file_object_decodes_like_the_path(audio_dir):
    with open(audio_dir / "music.ogg", "rb") as handle:
        from_handle = load_audio(handle, start=0.5)
    torch.testing.assert_close(from_handle, load_audio(audio_dir / "music.ogg", start=0.5))
