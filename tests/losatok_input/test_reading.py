"""Reading inputs without the pipeline: a waveform or a ReadFailure per file, span, tar sample
and (for a whole container that cannot be read) the container itself."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import torch

from losatok_input.decoder import load_audio
from losatok_input.items import InputItem
from losatok_input.reading import ReadFailure, read_items
from losatok_input.rule import SkippedFiles


def write_tar(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_files_and_spans_each_give_a_wave_or_why_not(audio_dir, tmp_path):
    wav = str(audio_dir / "speech.wav")
    (tmp_path / "broken.mp3").write_bytes(b"ID3" + b"\x00" * 200)
    items = [
        InputItem("late", wav, 1.0, 1.5),
        InputItem("whole", str(audio_dir / "music.flac")),
        InputItem("early", wav, 0.0, 0.5),
        InputItem("missing", str(tmp_path / "absent.wav")),
        InputItem("broken", str(tmp_path / "broken.mp3")),
        InputItem("past the end", wav, 100.0, 101.0),
    ]
    reads = read_items(items, 16_000, {}, retries=1)
    # in the given order
    assert [[item.key for item, _ in r] for r in reads] == [[item.key] for item in items]
    waves = {item.key: wave for ((item, wave),) in reads}
    torch.testing.assert_close(waves["early"], load_audio(wav, start=0.0, end=0.5))
    torch.testing.assert_close(waves["late"], load_audio(wav, start=1.0, end=1.5))
    assert waves["whole"].shape == (32_000,)  # 2 s of stereo 44.1 kHz, mono at 16 kHz
    # a local file FFmpeg cannot open is the input's fault (a missing object on a store is a `read`)
    assert (waves["missing"].stage, waves["missing"].error_type) == ("decode", "AudioError")
    assert not waves["missing"].transient
    assert waves["broken"].stage == "decode" and waves["broken"].message.startswith("cannot decode")
    assert isinstance(waves["past the end"], ReadFailure) and waves["past the end"].stage == "decode"


def test_a_tar_gives_its_audio_samples_with_their_sidecars(audio_dir, tmp_path):
    flac = (audio_dir / "music.flac").read_bytes()
    shard = tmp_path / "shard.tar"
    write_tar(
        shard,
        {
            "a.flac": flac,
            "a.json": json.dumps({"text": "la la", "speaker": "s1", "mood": "calm"}).encode(),
            "b.flac": flac,
            "b.json": b"{not json",
            "c.txt": b"no audio here",
            "._a.flac": b"\0\5\26\7",
        },
    )
    skipped = SkippedFiles()
    item = InputItem("shard", str(shard), container="tar", metadata={"corpus": "x"})
    (reads,) = read_items([item], 16_000, {}, retries=1, skipped=skipped)
    (a_item, a_wave), (b_item, b_wave) = reads
    assert a_item.location == f"{shard}#a.flac"
    assert a_item.metadata == {"corpus": "x", "text": "la la", "speaker": "s1", "extra": {"mood": "calm"}}
    np.testing.assert_allclose(a_wave.numpy(), load_audio(flac).numpy())
    assert (b_wave.stage, b_wave.error_type) == ("decode", "JSONDecodeError")
    assert b_wave.message.startswith("bad sidecar")
    assert skipped.counts == {"tar sample without audio (.txt)": 1, "hidden file": 1}


def test_an_unreadable_tar_is_one_failure_of_the_shard(tmp_path):
    shard = tmp_path / "cut.tar"
    shard.write_bytes(b"not a tar at all" * 100)
    item = InputItem("cut", str(shard), container="tar")
    ((failed, failure),) = read_items([item], 16_000, {}, retries=1)[0]
    assert failed is item and failure.stage == "read"


def test_a_small_remote_object_costs_one_get_and_a_large_one_ranges(
    audio_dir, s3_endpoint, s3_bucket, monkeypatch
):
    """Counted on the wire (a proxy in front of the loopback S3 server): a file whose size the
    listing gave and that is at most WHOLE_OBJECT_BYTES is one GET, no HEAD; one of unknown size
    or above the limit is opened (a HEAD) and read by ranges. Every way gives the same wave."""
    import s3fs

    from losatok_input import opening
    from losatok_storage.testing import FaultProxy

    direct = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": s3_endpoint})
    names = ["speech.wav", "music.flac", "speech.mp3", "music.ogg"]
    for name in names:
        direct.put(str(audio_dir / name), f"{s3_bucket}/c/{name}")
    sizes = {name: (audio_dir / name).stat().st_size for name in names}
    port = int(s3_endpoint.rsplit(":", 1)[1])
    with FaultProxy("127.0.0.1", port) as proxy:
        options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": proxy.url}}

        def read(name: str, size: int) -> torch.Tensor:
            proxy.requests.clear()
            ((_, wave),) = read_items([InputItem(name, f"s3://{s3_bucket}/c/{name}", size_bytes=size)],
                                      16_000, options, retries=1)[0]  # fmt: skip
            torch.testing.assert_close(wave, load_audio(audio_dir / name))
            return [r for r in proxy.requests if f"/{s3_bucket}/c/" in r]

        for name in names:
            assert read(name, sizes[name]) == [f"GET /{s3_bucket}/c/{name}"]
        unknown = read("speech.mp3", 0)  # a manifest without sizes
        assert unknown[0] == f"HEAD /{s3_bucket}/c/speech.mp3" and len(unknown) >= 2
        monkeypatch.setattr(opening, "WHOLE_OBJECT_BYTES", 1000)
        monkeypatch.setattr("losatok_input.reading.WHOLE_OBJECT_BYTES", 1000)
        large = read("music.flac", sizes["music.flac"])
        assert large[0] == f"HEAD /{s3_bucket}/c/music.flac" and len(large) >= 2
