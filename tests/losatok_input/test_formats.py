"""Every container and codec a real corpus holds decodes whole: FFmpeg encodes the same 3 s of
music into each, and `load_audio` must return 3 s of it at 16 kHz (within a codec frame or
two of padding), never a part of it. torchcodec 0.11 returns a quarter of an ADPCM wav, which
`losatok.audio` detects by the header's duration and decodes again with the ffmpeg command line.
"""

from __future__ import annotations

import subprocess

import pytest
import torch

from losatok_input.decoder import load_audio
from losatok_input.testing import synth_music

SECONDS = 3.0
# (file extension, FFmpeg encoder, sample rate): what corpora ship, odd ones included
FORMATS = [
    ("wav", "pcm_s16le", 44_100),
    ("wav", "pcm_s24le", 48_000),
    ("wav", "pcm_f32le", 22_050),
    ("wav", "pcm_mulaw", 8_000),
    ("wav", "adpcm_ms", 16_000),
    ("wav", "adpcm_ima_wav", 11_025),
    ("wav", "libmp3lame", 22_050),
    ("w64", "pcm_s16le", 16_000),
    ("flac", "flac", 44_100),
    ("oga", "flac", 48_000),
    ("mp3", "libmp3lame", 44_100),
    ("mp2", "mp2", 32_000),
    ("ogg", "libvorbis", 44_100),
    ("ogg", "libopus", 48_000),
    ("opus", "libopus", 48_000),
    ("webm", "libopus", 48_000),
    ("m4a", "aac", 44_100),
    ("m4a", "alac", 44_100),
    ("aac", "aac", 22_050),
    ("3gp", "aac", 16_000),
    ("aiff", "pcm_s16be", 44_100),
    ("aiff", "adpcm_ima_qt", 22_050),
    ("caf", "pcm_s16le", 48_000),
    ("caf", "alac", 44_100),
    ("au", "pcm_mulaw", 8_000),
    ("voc", "pcm_u8", 22_050),
    ("gsm", "libgsm", 8_000),
    ("spx", "libspeex", 16_000),
    ("tta", "tta", 44_100),
    ("wv", "wavpack", 44_100),
    ("wma", "wmav2", 44_100),
    ("ac3", "ac3", 48_000),
    ("mka", "libmp3lame", 44_100),
]


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    return synth_music(root / "music.wav", seconds=SECONDS, sample_rate=48_000, channels=2)


@pytest.mark.parametrize("extension, encoder, rate", FORMATS, ids=[f"{e}-{c}" for e, c, _ in FORMATS])
def test_every_container_and_codec_decodes_whole(music, tmp_path, extension, encoder, rate):
    path = tmp_path / f"clip.{extension}"
    channels = "1" if encoder in ("libgsm", "libspeex", "pcm_mulaw", "adpcm_ima_qt") else "2"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(music), "-ar", str(rate), "-ac", channels]
        + ["-c:a", encoder, str(path)],
        check=True,
    )
    wav = load_audio(path)
    assert wav.dtype == torch.float32 and wav.dim() == 1
    # padding of a codec frame or two is allowed (AAC's priming in ADTS, a last ADPCM block);
    # losing part of the recording is not
    assert abs(wav.numel() / 16_000 - SECONDS) < 0.2, wav.numel() / 16_000
    assert 0.05 < float(wav.abs().max()) <= 1.5  # audio, not silence
