"""Long inputs spooled to a local file (`SpooledWave`): the same samples as the in-memory path,
read back by slices, the file gone after close or a failure, memory bounded by the piece size.
Files are a few seconds long; a small `long_seconds` makes them "long"."""

from __future__ import annotations

import gc
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import tracemalloc

import numpy as np
import pytest
import torch

from losatok_input import spool
from losatok_input.decoder import MonoDecoder
from losatok_input.items import InputItem
from losatok_input.reading import ReadFailure, iter_reads, read_items
from losatok_input.spool import SpooledWave, spool_file
from losatok_input.testing import convert, synth_music, write_float_wav

RATE = 16_000


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    """Three seconds of music in every format the spool must agree on, by name."""
    root = tmp_path_factory.mktemp("spool_formats")
    stereo = synth_music(root / "stereo_48k.flac", seconds=3.0, sample_rate=48_000, channels=2)
    files = {
        "16k mono wav": convert(stereo, root / "mono_16k.wav", sample_rate=RATE, channels=1),
        "16k mono float wav": convert(stereo, root / "float_16k.wav", RATE, 1, codec="pcm_f32le"),
        "48k stereo flac": stereo,
        "44.1k stereo wav": convert(stereo, root / "stereo_44k.wav", sample_rate=44_100),
        "22.05k mono 24-bit wav": convert(stereo, root / "mono_22k.wav", 22_050, 1, codec="pcm_s24le"),
        "mp3": convert(stereo, root / "stereo.mp3"),
        "mono mp3": convert(stereo, root / "mono.mp3", sample_rate=22_050, channels=1),
        "ogg/opus": convert(stereo, root / "stereo.opus"),
        "ogg/vorbis": convert(stereo, root / "stereo.ogg"),
        "m4a (aac)": convert(stereo, root / "stereo.m4a"),
        "6-channel wav": synth_music(root / "six.wav", seconds=3.0, sample_rate=44_100, channels=6),
    }
    # Matroska written to a pipe states no duration: spooled by its size
    webm = root / "headerless.webm"
    args = ["ffmpeg", "-loglevel", "error", "-i", str(stereo), "-c:a", "libopus", "-f", "webm", "pipe:1"]
    webm.write_bytes(subprocess.run(args, capture_output=True, check=True).stdout)
    files["webm without a duration"] = webm
    return files


@pytest.fixture
def spool_dir(tmp_path, monkeypatch):
    """TMPDIR for this test alone, to see every temporary file the spool makes or leaves."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def leftovers(folder) -> list[str]:
    """The spool's files (spools and copies) still in `folder`; other libraries' are not counted."""
    return sorted(path.name for path in folder.glob("losatok-*"))


def read_one(location: str, long_seconds: float | None, **options):
    """The wave of one whole-file input, read like the decode stage reads it."""
    ((_, wave),) = read_items([InputItem("k", location, **options)], RATE, {}, 1, long_seconds=long_seconds)[
        0
    ]
    return wave


# bit for bit: bytes that are the samples, or one or two channels, which FFmpeg downmixes before
# resampling exactly as torchcodec's decoder does; more channels are resampled each and averaged
CLOSE = {"6-channel wav"}


@pytest.mark.parametrize(
    "name",
    [
        "16k mono wav",
        "16k mono float wav",
        "48k stereo flac",
        "44.1k stereo wav",
        "22.05k mono 24-bit wav",
        "mp3",
        "mono mp3",
        "ogg/opus",
        "ogg/vorbis",
        "m4a (aac)",
        "6-channel wav",
        "webm without a duration",
    ],
)
def test_spooled_samples_are_the_in_memory_ones(formats, spool_dir, monkeypatch, name):
    # pieces of ~1000 samples, so three seconds cross many piece edges (and a 6-channel piece
    # is rounded down to whole frames)
    monkeypatch.setattr(spool, "READ_BYTES", 4000)
    location = str(formats[name])
    in_memory = read_one(location, long_seconds=None)
    assert isinstance(in_memory, torch.Tensor)
    with read_one(location, long_seconds=1.0) as spooled:
        assert isinstance(spooled, SpooledWave)
        assert spooled.shape == tuple(in_memory.shape) and spooled.sample_rate == RATE
        samples = spooled[:]
        assert samples.dtype == np.float32
        if name in CLOSE:
            np.testing.assert_allclose(samples, in_memory.numpy(), rtol=0, atol=1e-5)
        else:
            np.testing.assert_array_equal(samples, in_memory.numpy())
    assert leftovers(spool_dir) == []


def test_a_file_under_long_seconds_stays_a_tensor(formats, spool_dir):
    assert isinstance(read_one(str(formats["48k stereo flac"]), long_seconds=3.5), torch.Tensor)
    # no duration stated: long only if its size could hold more than long_seconds at 64 kbit/s
    webm = formats["webm without a duration"]
    assert isinstance(read_one(str(webm), long_seconds=webm.stat().st_size / 8000 + 1), torch.Tensor)
    assert leftovers(spool_dir) == []


def test_spans_stay_in_memory(formats):
    flac = str(formats["48k stereo flac"])
    reads = read_items(
        [InputItem("a", flac, 0.0, 2.0), InputItem("b", flac, 1.0, None)], RATE, {}, 1, long_seconds=0.5
    )
    assert all(isinstance(wave, torch.Tensor) for ((_, wave),) in reads)


def test_iter_reads_gives_each_location_whole_before_the_next(formats):
    flac, mp3 = str(formats["48k stereo flac"]), str(formats["mp3"])
    items = [InputItem("a", flac, 1.0, 2.0), InputItem("b", mp3), InputItem("c", flac, 0.0, 1.0)]
    order = [index for index, _ in iter_reads(items, RATE, {}, 1, long_seconds=1.0)]
    assert order == [0, 2, 1]
    ((_, wave),) = read_items(items, RATE, {}, 1, long_seconds=1.0)[1]
    assert isinstance(wave, SpooledWave)
    wave.close()


def test_broken_files_are_decode_failures_and_leave_no_file(tmp_path, spool_dir):
    random_bytes = tmp_path / "noise.flac"
    random_bytes.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00")
    # decoded past the open: a NaN in the bytes read directly, and one spread by the resampler
    nan_16k = write_float_wav(tmp_path / "nan_16k.wav", [0.1] * 30_000 + [float("nan")] + [0.1] * 10, RATE)
    nan_22k = write_float_wav(tmp_path / "nan_22k.wav", [0.1] * 40_000 + [float("inf")] * 3, 22_050)
    for path in (random_bytes, truncated, nan_16k, nan_22k):
        failure = read_one(str(path), long_seconds=0.5)
        assert isinstance(failure, ReadFailure) and failure.stage == "decode", (path, failure)
        assert not failure.transient
    assert "NaN or infinite" in read_one(str(nan_22k), long_seconds=0.5).message
    assert leftovers(spool_dir) == []


def test_slices_read_like_numpy(formats, spool_dir):
    path = str(formats["16k mono wav"])
    wave = spool_file(path, RATE)
    whole = wave[:]
    n = len(whole)
    assert wave.ndim == 1 and wave.dtype == np.float32 and len(wave) == n == 3 * RATE
    for bounds in [
        (None, None),
        (10, 20),
        (-5, None),
        (None, -5),
        (-n - 99, 5),
        (n - 3, n + 99),
        (5, 2),
        (n, None),
    ]:
        got = wave[slice(*bounds)]
        np.testing.assert_array_equal(got, whole[slice(*bounds)])
        assert got.dtype == np.float32 and got.flags.writeable
    np.testing.assert_array_equal(wave[3:9:1], whole[3:9])
    for bad in (slice(None, None, 2), slice(None, None, -1), 5):
        with pytest.raises(TypeError):
            wave[bad]
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(wave)
    assert os.path.exists(wave.path)
    wave.close()
    wave.close()  # again: nothing
    assert not os.path.exists(wave.path)
    with pytest.raises(ValueError, match="closed"):
        wave[0:1]
    forgotten = spool_file(path, RATE)
    leftover = forgotten.path
    del forgotten
    gc.collect()
    assert not os.path.exists(leftover)
    assert leftovers(spool_dir) == []


def test_a_remote_object_spools_from_a_local_copy(formats, s3_endpoint, s3_bucket, spool_dir, monkeypatch):
    """Read whole (the listing gave a small size) or by ranges (no size): copied to local disk in
    ranges (three here), spooled, the copy deleted."""
    import s3fs

    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}}
    fs = s3fs.S3FileSystem(**options)
    flac = formats["48k stereo flac"]
    fs.put(str(flac), f"{s3_bucket}/long/music.flac")
    monkeypatch.setattr(spool, "COPY_BYTES", flac.stat().st_size // 3 + 1)
    expected = read_one(str(flac), long_seconds=None).numpy()
    location = f"s3://{s3_bucket}/long/music.flac"
    for size in (flac.stat().st_size, 0):
        item = InputItem("k", location, size_bytes=size)
        ((_, wave),) = read_items([item], RATE, options, 1, long_seconds=1.0)[0]
        with wave:
            assert isinstance(wave, SpooledWave)
            np.testing.assert_array_equal(wave[:], expected)
        assert leftovers(spool_dir) == []
    ((_, missing),) = read_items([InputItem("k", location + ".gone")], RATE, options, 1, long_seconds=1.0)[0]
    assert missing.stage == "read"


def test_spooling_ten_minutes_holds_a_few_megabytes(tmp_path, spool_dir):
    """10 min of 48 kHz stereo is 38 MB as 16 kHz float32; the spool's Python and numpy
    allocations (the pieces, their channel mean) stay under 16 MB, whatever the length."""
    flac = tmp_path / "ten_minutes.flac"
    args = [
        "sox",
        "-n",
        "-r",
        "48000",
        "-c",
        "2",
        "-C",
        "0",
        str(flac),
        "synth",
        "600",
        "sine",
        "440",
        "gain",
        "-6",
    ]
    subprocess.run(args, check=True)
    decoder = MonoDecoder(str(flac), RATE)  # opened first: torchcodec's first import is no spool's
    tracemalloc.start()
    try:
        with spool_file(str(flac), RATE, decoder=decoder) as wave:
            _, peak = tracemalloc.get_traced_memory()
            assert len(wave) == 600 * RATE
            assert os.path.getsize(wave.path) == 600 * RATE * 4
            assert 0.2 < float(np.abs(wave[-RATE:]).max()) < 1.0  # the tone, to the end
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MB"
    assert leftovers(spool_dir) == []


def test_spools_of_a_killed_process_are_swept_by_the_next_one(tmp_path, monkeypatch):
    # a process SIGKILLed while it holds a spool leaves the file: nothing of it runs to delete it
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sys; from losatok_input.spool import SpooledWave;"
            f"w = SpooledWave(16_000, {str(tmp_path)!r}); w._append(__import__('numpy').ones(10, 'f4'));"
            "print(w.path, flush=True); os.kill(os.getpid(), signal.SIGKILL)",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    left = killed.stdout.strip()
    assert killed.returncode == -signal.SIGKILL and os.path.exists(left)
    mine = SpooledWave(16_000, str(tmp_path))  # a live process's spool: never swept
    elsewhere = tmp_path / "losatok-spool-another-host-999999-x.f32"
    elsewhere.write_bytes(b"")  # another host's: its process ids are not this host's to judge
    monkeypatch.setattr(spool, "_swept", False)  # as in a process that has not swept yet
    fresh = SpooledWave(16_000, str(tmp_path))  # the first spool of a process sweeps
    assert not os.path.exists(left)
    assert os.path.exists(mine.path) and os.path.exists(fresh.path) and elsewhere.exists()
    assert spool.sweep_orphans(str(tmp_path)) == []  # nothing more to sweep
    mine.close()
    fresh.close()
