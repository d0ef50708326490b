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
