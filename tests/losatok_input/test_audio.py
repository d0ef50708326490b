import io
import math
import subprocess

import pytest
import torch

from losatok.audio import collate_waveforms, save_audio
from losatok_input.decoder import AudioError, load_audio
from losatok_input.testing import convert, write_float_wav


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
    from losatok_input.decoder import decode_spans

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
    from losatok_input.testing import convert, synth_music

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

    from losatok_input.testing import synth_music

    path = synth_music(tmp_path / "six.wav", seconds=1.0, sample_rate=16_000, channels=6)
    channels, rate = torchaudio.load(path)
    assert channels.shape[0] == 6
    torch.testing.assert_close(load_audio(path, sample_rate=rate), channels.mean(0))


def test_file_object_decodes_like_the_path(audio_dir):
    with open(audio_dir / "music.ogg", "rb") as handle:
        from_handle = load_audio(handle, start=0.5)
    torch.testing.assert_close(from_handle, load_audio(audio_dir / "music.ogg", start=0.5))


class CountingReader(io.RawIOBase):
    """A file object that counts the bytes read through it."""

    def __init__(self, handle) -> None:
        super().__init__()
        self.handle, self.bytes_read = handle, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.bytes_read += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.handle.seek(offset, whence)

    def tell(self) -> int:
        return self.handle.tell()


@pytest.mark.parametrize(
    "rate, channels, codec",
    [
        (44_100, 2, "pcm_s16le"),
        (48_000, 1, "pcm_s24le"),
        (22_050, 6, "pcm_f32le"),
        (16_000, 1, "pcm_s16le"),
        (16_000, 1, "pcm_f32le"),
    ],
)
def test_a_pcm_wav_span_is_read_by_seeking_and_equals_the_full_decode(tmp_path, rate, channels, codec):
    from losatok_input.decoder import MonoDecoder, decode_spans
    from losatok_input.testing import synth_music

    source = synth_music(tmp_path / "m.wav", seconds=12.0, sample_rate=rate, channels=channels)
    path = tmp_path / "pcm.wav"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(source), "-c:a", codec, str(path)], check=True
    )
    decoder = MonoDecoder(path)
    assert decoder.pcm is not None and (decoder.pcm.sample_rate, decoder.pcm.channels) == (rate, channels)
    full = load_audio(path)
    for start, end in [(3.3, 4.7), (1.23457, 2.0), (0.00003, 0.5), (9.5, None), (11.9, 14.0)]:
        part = load_audio(path, start=start, end=end)
        expected = full[round(start * 16_000) : None if end is None else round(end * 16_000)]
        torch.testing.assert_close(part, expected, rtol=0, atol=0)  # the same samples, not a phase off
    spans = [(8.0, 9.0), (0.5, 1.0), (2.0, 2.5)]  # far apart: three runs, each by seeking
    for got, (start, end) in zip(decode_spans(path.read_bytes(), spans), spans, strict=True):
        torch.testing.assert_close(got, full[round(start * 16_000) : round(end * 16_000)], rtol=0, atol=0)
    with pytest.raises(AudioError, match="holds no samples"):
        load_audio(path, start=30.0)


def test_a_span_late_in_a_long_wav_reads_only_its_own_bytes(tmp_path):
    from losatok_input.testing import synth_music

    path = convert(
        synth_music(tmp_path / "m.wav", seconds=120.0, sample_rate=16_000, channels=2), tmp_path / "long.wav"
    )  # 7.7 MB, 7.4 MB of it before the span
    with open(path, "rb") as handle:
        reader = CountingReader(handle)
        part = load_audio(reader, start=115.0, end=117.0)
    assert part.numel() == 32_000
    # the wav's header (one 64 kB read), then the span with its padding (134 kB), read once:
    # no probe of the file by FFmpeg, and its probe of the window is served from the same read
    assert reader.bytes_read < 220_000, reader.bytes_read
    torch.testing.assert_close(part, load_audio(path)[115 * 16_000 : 117 * 16_000], rtol=0, atol=0)


def test_wavs_that_cannot_be_sought_decode_as_a_whole(tmp_path):
    from losatok_input.decoder import MonoDecoder

    wav = convert(synth_music_file(tmp_path), tmp_path / "plain.wav", sample_rate=16_000)
    data = bytearray(wav.read_bytes())
    streamed = bytearray(data)
    position = streamed.index(b"data")
    streamed[position + 4 : position + 8] = b"\xff\xff\xff\xff"  # a streaming recorder's unknown size
    adpcm = tmp_path / "adpcm.wav"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "adpcm_ms", str(adpcm)], check=True
    )
    full = load_audio(wav)
    unknown = MonoDecoder(bytes(streamed))
    assert unknown.pcm is None
    torch.testing.assert_close(load_audio(bytes(streamed), start=1.0, end=2.0), full[16_000:32_000])
    assert MonoDecoder(adpcm).pcm is None  # compressed: one pass, as flac or mp3


def synth_music_file(tmp_path):
    from losatok_input.testing import synth_music

    return synth_music(tmp_path / "music.wav", seconds=3.0, sample_rate=44_100)


@pytest.mark.parametrize("codec", ["adpcm_ms", "adpcm_ima_wav"])
def test_a_stream_torchcodec_decodes_short_is_decoded_whole_by_the_ffmpeg_command_line(
    tmp_path, codec, monkeypatch, caplog
):
    # torchcodec 0.11 returns about a quarter of an ADPCM wav, silently; the header's duration
    # gives it away, and the ffmpeg command line decodes the whole stream
    from losatok_input.decoder import decode_spans

    source = convert(synth_music_file(tmp_path), tmp_path / "pcm.wav", sample_rate=16_000)
    adpcm = tmp_path / "adpcm.wav"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(source), "-c:a", codec, str(adpcm)], check=True
    )
    reference = load_audio(source)
    from torchcodec.decoders import AudioDecoder

    alone = AudioDecoder(str(adpcm), sample_rate=16_000, num_channels=1).get_all_samples().data
    assert alone.shape[1] < 0.5 * reference.numel()  # torchcodec by itself comes out short
    whole = load_audio(adpcm)
    assert abs(whole.numel() - reference.numel()) < 0.1 * 16_000  # ADPCM pads its last block
    n = min(whole.numel(), reference.numel()) - 2

    def similarity(shift: int) -> float:
        return float(
            torch.nn.functional.cosine_similarity(whole[1 + shift : n + shift], reference[1:n], dim=0)
        )

    assert similarity(0) > 0.98 and similarity(0) > max(similarity(-1), similarity(1))  # lined up
    assert "torchcodec decoded" in caplog.text and "(taken)" in caplog.text
    part = load_audio(adpcm.read_bytes(), start=1.0, end=2.0)  # piped to the command line
    torch.testing.assert_close(part, whole[16_000:32_000], rtol=0, atol=1e-6)
    spans = decode_spans(adpcm, [(0.5, 1.0), (2.0, 2.5)])
    torch.testing.assert_close(spans[1], whole[32_000:40_000], rtol=0, atol=1e-6)

    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg: the shortfall is an error, not a short sample
    with pytest.raises(AudioError, match=r"decoded \d+\.\d+ s of the .* ffmpeg is not on the PATH"):
        load_audio(adpcm)


def test_a_file_object_of_a_pcm_wav_decodes_like_its_path(tmp_path):
    # the file object is shared by the open decoder (which reads on from the position it left)
    # and by the reads that find the data chunk and seek to spans: neither may disturb the other
    from losatok_input.decoder import MonoDecoder, decode_spans
    from losatok_input.testing import synth_music

    path = convert(
        synth_music(tmp_path / "m.wav", seconds=20.0, sample_rate=44_100),
        tmp_path / "m22.wav",
        sample_rate=22_050,
    )
    full = load_audio(path)
    with open(path, "rb") as handle:
        torch.testing.assert_close(load_audio(handle), full, rtol=0, atol=0)
        spans = [(0.0, 0.5), (None, 0.25), (19.0, None), (12.0, 13.5)]  # a run from 0, two sought
        for got, (start, end) in zip(decode_spans(handle, spans), spans, strict=True):
            expected = full[round((start or 0.0) * 16_000) : None if end is None else round(end * 16_000)]
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
        decoder = MonoDecoder(handle)
        torch.testing.assert_close(decoder.span(12.0, 13.0), full[192_000:208_000], rtol=0, atol=0)
        torch.testing.assert_close(decoder.span(None, 1.0), full[:16_000], rtol=0, atol=0)  # after a seek


def test_a_pcm_wav_under_another_name_is_found_by_the_probe_and_read_by_seeking(tmp_path):
    from losatok_input.decoder import MonoDecoder
    from losatok_input.testing import synth_music

    wav = convert(synth_music(tmp_path / "m.wav", seconds=8.0, sample_rate=44_100), tmp_path / "a.wav")
    renamed = tmp_path / "take-3.clip"
    renamed.write_bytes(wav.read_bytes())
    decoder = MonoDecoder(renamed)
    assert decoder.pcm is not None and decoder.pcm.sample_rate == 44_100
    torch.testing.assert_close(decoder.span(6.0, 7.0), load_audio(wav)[96_000:112_000], rtol=0, atol=0)


@pytest.mark.parametrize("codec", ["pcm_s16le", "pcm_f32le"])
def test_a_mono_wav_at_the_output_rate_is_read_without_a_decoder_and_equals_ffmpeg(
    tmp_path, codec, monkeypatch
):
    """16-bit or float mono at 16 kHz needs only a conversion: its samples come from the bytes
    (no FFmpeg open, ~5 ms a file: bench/stage_costs.py), equal to FFmpeg's to the bit."""
    from torchcodec.decoders import AudioDecoder

    from losatok_input.decoder import MonoDecoder
    from losatok_input.testing import synth_music

    source = synth_music(tmp_path / "m.wav", seconds=3.0, sample_rate=44_100, channels=2)
    path = tmp_path / "pcm.wav"
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(source),
            "-ar",
            "16000",
            "-ac",
            "1",
            "-c:a",
            codec,
            str(path),
        ],
        check=True,
    )
    by_ffmpeg = AudioDecoder(str(path), sample_rate=16_000, num_channels=1).get_all_samples().data[0]
    opened = []
    monkeypatch.setattr(
        "torchcodec.decoders.AudioDecoder", lambda *a, **k: opened.append(a) or AudioDecoder(*a, **k)
    )
    decoder = MonoDecoder(path)
    torch.testing.assert_close(decoder.span(), by_ffmpeg, rtol=0, atol=0)
    torch.testing.assert_close(decoder.span(0.51, 1.7), by_ffmpeg[8160:27200], rtol=0, atol=0)
    assert opened == []  # no torchcodec decoder was opened
    MonoDecoder(source).span()  # 44.1 kHz stereo: resampled and mixed by FFmpeg
    assert len(opened) == 1
