"""The decode stage's reading: one open per file, spans by seeking, range reads, streamed tars."""

import io
import tarfile
from dataclasses import replace

import numpy as np
import pytest

import losatok_input.decoder
from losatok_input import reading
from losatok_input.decoder import load_audio
from losatok_input.rule import iter_shard_samples, tar_members
from losatok_input.sources import InputItem
from losatok_input.sources.manifest import group_by_file
from losatok_input.testing import convert, synth_music
from pipelines.config import SegmentConfig
from pipelines.decode import decode_items
from pipelines.records import compact_pcm, pcm_to_float


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory):
    """120 s of 16 kHz mono 16-bit PCM (3.8 MB): long enough that a span is a small part of it."""
    root = tmp_path_factory.mktemp("long")
    tone = synth_music(root / "tone.wav", seconds=120.0, sample_rate=16_000, channels=1)
    return convert(tone, root / "long.wav", sample_rate=16_000)


def count_opens(monkeypatch) -> list[str]:
    opened: list[str] = []

    class Counting(losatok_input.decoder.MonoDecoder):
        def __init__(self, source, sample_rate=16_000, name=None):
            opened.append(name)
            super().__init__(source, sample_rate, name)

    monkeypatch.setattr(losatok_input.decoder, "MonoDecoder", Counting)
    return opened


def test_spans_of_one_file_come_from_one_open(long_wav, audio_dir, monkeypatch):
    opened = count_opens(monkeypatch)
    spans = [(90.0, 95.0), (1.0, 3.0), (3.0, 4.5), (40.0, 41.0)]
    items = [InputItem(f"s{i}", str(long_wav), start=a, end=b) for i, (a, b) in enumerate(spans)]
    items.insert(2, InputItem("other", str(audio_dir / "speech.mp3")))
    segments, failures = decode_items(items, SegmentConfig(max_seconds=30), 16_000, {}, retries=1)
    assert not failures
    assert sorted(opened) == sorted([str(long_wav), str(audio_dir / "speech.mp3")])
    assert [s.input_key for s in segments] == ["s0", "s1", "other", "s2", "s3"]  # input order kept
    full = load_audio(long_wav).numpy()
    for segment, (start, end) in zip([s for s in segments if s.input_key != "other"], spans):
        assert segment.offset == start
        np.testing.assert_array_equal(segment.float_wav(), full[round(start * 16_000) : round(end * 16_000)])


def test_lossless_int16_payload_only_when_exact(long_wav, audio_dir):
    pcm, _ = decode_items([InputItem("pcm", str(long_wav), end=2.0)], SegmentConfig(), 16_000, {}, 1)
    assert pcm[0].wav.dtype == np.int16  # 16-bit mono at 16 kHz: nothing to mix or resample
    np.testing.assert_array_equal(pcm[0].float_wav(), load_audio(long_wav, end=2.0).numpy())
    mp3, _ = decode_items([InputItem("mp3", str(audio_dir / "speech.mp3"))], SegmentConfig(), 16_000, {}, 1)
    assert mp3[0].wav.dtype == np.float32
    wave = np.array([0.5, -1.0, 3 / 32768, 1.0], np.float32)
    assert compact_pcm(wave).dtype == np.float32  # +1.0 does not fit in int16
    assert compact_pcm(wave[:3]).dtype == np.int16
    np.testing.assert_array_equal(pcm_to_float(compact_pcm(wave[:3])), wave[:3])
    assert compact_pcm(np.array([0.5, 1e-6], np.float32)).dtype == np.float32


def test_manifest_spans_of_one_file_are_listed_together():
    items = [
        InputItem("a2", "a.wav", 5.0, 6.0),
        InputItem("b1", "b.wav", 0.0, 1.0),
        InputItem("a1", "a.wav", 1.0, 2.0),
        InputItem("c", "c.wav"),
        InputItem("b2", "b.wav", 3.0, 4.0),
    ]
    assert [i.key for i in group_by_file(items)] == ["a1", "a2", "b1", "b2", "c"]


def test_tar_is_read_as_a_stream(audio_dir):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in [
            ("a/x.flac", (audio_dir / "music.flac").read_bytes()),
            ("a/x.json", b'{"text": "hi"}'),
            ("y.mp3", (audio_dir / "speech.mp3").read_bytes()),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

    class ReadOnly:  # a pipe: no seek, no tell
        def __init__(self, data):
            self.inner = io.BytesIO(data)

        def read(self, size=-1):
            return self.inner.read(size)

    streamed = list(iter_shard_samples(ReadOnly(buffer.getvalue())))
    assert [k for k, _ in streamed] == ["a/x", "y"]
    assert dict(streamed) == tar_members(buffer.getvalue())


def test_remote_span_is_read_by_range_requests(long_wav, s3_endpoint, s3_bucket, monkeypatch):
    import s3fs

    options = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    fs.put(str(long_wav), f"{s3_bucket}/long.wav")
    handles = []
    real_open = reading.open_remote

    def remember(location, storage_options, cache_type="readahead"):
        handle = real_open(location, storage_options, cache_type)
        handles.append(handle.cache)  # dropped when the file closes
        return handle

    monkeypatch.setattr(reading, "open_remote", remember)
    url = f"s3://{s3_bucket}/long.wav"
    items = [InputItem("early", url, 5.0, 6.0), InputItem("gone", f"s3://{s3_bucket}/absent.wav")]
    segments, failures = decode_items(items, SegmentConfig(), 16_000, options, retries=2)
    np.testing.assert_array_equal(segments[0].float_wav(), load_audio(long_wav, start=5.0, end=6.0).numpy())
    fetched = sum(cache.total_requested_bytes for cache in handles)
    assert (
        fetched < 0.5 * long_wav.stat().st_size
    )  # up to the span's end (torchcodec 0.11 reads from the start) plus one read-ahead block, not 120 s
    (failure,) = failures
    assert (failure.key, failure.stage, failure.error_type) == ("gone", "read", "FileNotFoundError")


def test_transient_read_error_part_way_is_retried(long_wav, s3_endpoint, s3_bucket, monkeypatch):
    import s3fs

    options = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    s3fs.S3FileSystem(skip_instance_cache=True, **options).put(str(long_wav), f"{s3_bucket}/long.wav")
    real_open = reading.open_remote
    failed = []

    class Flaky:  # the real S3 file, whose connection drops once in the middle of the stream
        def __init__(self, handle):
            self.handle = handle

        def read(self, size=-1):  # a read that would pass the first MB drops the connection
            if not failed and self.handle.tell() + (size if size >= 0 else 1 << 40) > 1_000_000:
                failed.append(1)
                raise ConnectionError("connection reset by peer")
            return self.handle.read(size)

        def seek(self, offset, whence=0):
            return self.handle.seek(offset, whence)

        def tell(self):
            return self.handle.tell()

        def close(self):
            self.handle.close()

    monkeypatch.setattr(reading, "open_remote", lambda *a, **k: Flaky(real_open(*a, **k)))
    monkeypatch.setattr("time.sleep", lambda seconds: None)  # the retry backoff
    url = f"s3://{s3_bucket}/long.wav"
    segments, failures = decode_items([InputItem("all", url, end=60.0)], SegmentConfig(), 16_000, options, 3)
    assert failed and not failures  # the drop happened, and the reopened read is whole
    got = np.concatenate([s.float_wav() for s in segments])
    np.testing.assert_array_equal(got, load_audio(long_wav, end=60.0).numpy())
    monkeypatch.setattr(reading, "open_remote", lambda *a, **k: Flaky(real_open(*a, **k)))
    failed.clear()
    _, failures = decode_items([InputItem("all", url, end=60.0)], SegmentConfig(), 16_000, options, 1)
    assert failures[0].stage == "read" and "connection reset" in failures[0].message


def test_payload_round_trip_keeps_arrays_and_records(long_wav):
    from pipelines.records import pack_payload, unpack_payload

    segments, failures = decode_items(
        [InputItem("pcm", str(long_wav), end=40.0), InputItem("gone", "/nowhere.wav")],
        SegmentConfig(),
        16_000,
        {},
        1,
    )
    segments.append(replace(segments[0], key="float", wav=segments[0].float_wav()))
    back_segments, back_failures, stats = unpack_payload(pack_payload((segments, failures, {"n": 1})))
    assert stats == {"n": 1} and back_failures == failures
    for before, after in zip(segments, back_segments, strict=True):
        assert (before.key, before.offset, after.wav.dtype) == (after.key, after.offset, before.wav.dtype)
        np.testing.assert_array_equal(before.wav, after.wav)
    assert back_segments[-1].float_wav().flags.writeable  # torch.from_numpy needs writable memory


def test_a_tar_cut_part_way_is_reopened_and_each_sample_decoded_once(audio_dir, tmp_path, monkeypatch):
    """The shard's connection drops after its first sample: the tar is opened again, the sample
    already decoded is skipped, and the stray member is counted once, not once per pass."""
    from losatok_input.rule import SkippedFiles

    path = tmp_path / "part.tar"
    with tarfile.open(path, "w") as archive:
        for name, data in [
            ("a.flac", (audio_dir / "music.flac").read_bytes()),
            ("README", b"not a sample"),
            ("b.mp3", (audio_dir / "speech.mp3").read_bytes()),
            ("c.json", b"{}"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    first_size = (audio_dir / "music.flac").stat().st_size
    opened = []

    class DropsOnce(io.RawIOBase):  # the real file, whose first connection drops past sample a
        def __init__(self):
            super().__init__()
            self.inner = open(path, "rb")  # noqa: SIM115
            opened.append(self)

        def readable(self):
            return True

        def readinto(self, buffer):
            if len(opened) == 1 and self.inner.tell() > first_size + 2048:
                raise ConnectionResetError("connection reset by peer")
            return self.inner.readinto(buffer)

        def close(self):
            self.inner.close()
            super().close()

    monkeypatch.setattr(reading, "open_tar", lambda *args: DropsOnce())
    monkeypatch.setattr("time.sleep", lambda seconds: None)  # the retry backoff
    skipped = SkippedFiles()
    item = InputItem("shard", str(path), container="tar")
    segments, failures = decode_items([item], SegmentConfig(), 16_000, {}, 3, skipped)
    assert len(opened) == 2 and not failures
    assert sorted({s.location.rsplit("#", 1)[1] for s in segments}) == ["a.flac", "b.mp3"]
    assert len({s.input_key for s in segments}) == 2 and len(segments) == 2  # a once, not twice
    assert dict(skipped.counts) == {
        "tar member without an extension": 1,
        "tar sample without audio (.json)": 1,
    }
