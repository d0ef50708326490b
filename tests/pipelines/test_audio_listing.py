"""What the pipeline takes as audio: whatever FFmpeg opens, every skipped file counted by
reason (in the run summary and runs/*.json), and a source without audio refused before the
sink is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from losatok_input.decoder import load_audio, probe_audio
from losatok_input.rule import SkippedFiles
from losatok_input.sources import EmptySourceError, list_directory, list_inputs
from losatok_input.testing import convert, synth_speech
from pipelines.config import SourceConfig
from pipelines.run import tokenize
from pipelines.testing import tiny_run

AUDIO = ["a.oga", "b.opus", "c.m4a", "d.aiff", "e.caf", "f.wv", "g.mka", "h.au", "sub/i.wav", "sub/j.clip"]
SKIPPED = {
    "not audio (.txt)": 1,
    "not audio (.json)": 1,
    "hidden file": 2,
    "no audio stream (.mkv, probed)": 1,
    "not a format FFmpeg opens (.dat, probed)": 1,
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def format_corpus(tmp_path_factory) -> Path:
    """Ten real recordings in ten containers (one with an extension no list knows), and six
    files that are not audio: sidecars, macOS litter, a video without sound, a text file."""
    root = tmp_path_factory.mktemp("formats")
    (root / "sub").mkdir()
    speech = synth_speech(tmp_path_factory.mktemp("src") / "speech.wav", "one two three", sample_rate=16_000)
    for name in AUDIO:
        if name.endswith(".clip"):
            ffmpeg("-i", str(speech), "-c:a", "libvorbis", "-f", "ogg", str(root / name))
        else:
            convert(speech, root / name)
    (root / "notes.txt").write_text("one two three")
    (root / "meta.json").write_text("{}")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "._a.oga").write_bytes(b"\0\5\26\7" + b"\0" * 60)  # a macOS resource fork
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=1:size=32x32:rate=5", str(root / "video.mkv"))
    (root / "mystery.dat").write_text("not audio at all")
    return root


def test_every_file_ffmpeg_opens_is_listed_and_the_rest_counted(format_corpus):
    skipped = SkippedFiles()
    items = list_directory(SourceConfig(path=str(format_corpus)), skipped)
    assert sorted(os.path.relpath(i.location, format_corpus) for i in items) == sorted(AUDIO)
    assert dict(skipped.counts) == SKIPPED
    assert skipped.examples["not audio (.txt)"] == [str(format_corpus / "notes.txt")]
    for item in items:  # each one really decodes
        assert load_audio(item.location, 16_000).numel() > 16_000 // 2, item.location


def test_probe_reads_real_files(format_corpus):
    assert probe_audio(format_corpus / "sub" / "j.clip") is None
    with open(format_corpus / "a.oga", "rb") as handle:  # a file object, as fsspec gives for s3://
        assert probe_audio(handle) is None
    assert probe_audio(format_corpus / "video.mkv") == "no audio stream"
    assert probe_audio(format_corpus / "notes.txt") == "not a format FFmpeg opens"


def test_a_narrower_list_without_probing(format_corpus):
    skipped = SkippedFiles()
    items = list_directory(
        SourceConfig(path=str(format_corpus), extensions=("oga", "wav"), probe=False), skipped
    )
    assert sorted(Path(i.location).name for i in items) == ["a.oga", "i.wav"]
    assert skipped.counts["audio extension not selected (.opus)"] == 1
    assert skipped.counts["unknown extension, not probed (.clip)"] == 1


def test_an_empty_or_audio_less_source_is_refused_naming_where_and_what(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptySourceError) as info:
        list_inputs(SourceConfig(path=str(tmp_path / "empty")))
    message = str(info.value)
    assert str(tmp_path / "empty") in message and "wav, flac, mp3" in message and "\n" not in message
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    with pytest.raises(EmptySourceError, match=r"skipped 1 files: 1 not audio \(\.txt\), e\.g\. .*a\.txt"):
        list_inputs(SourceConfig(path=str(tmp_path / "text")))
    with pytest.raises(EmptySourceError, match="no WebDataset shards"):
        list_inputs(SourceConfig(kind="wds", path=str(tmp_path / "text")))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(EmptySourceError, match=r"the manifest source .*empty\.jsonl lists no inputs"):
        list_inputs(SourceConfig(kind="manifest", path=str(tmp_path / "empty.jsonl")))


@pytest.mark.slow  # a fresh interpreter imports torch and hydra
def test_the_cli_exits_2_with_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "readme.txt").write_text("x")
    sink = tmp_path / "sink"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.tokenize",
            f"source.path={tmp_path / 'corpus'}",
            f"sink.path={sink}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no audio source: found no audio file under")
    assert str(tmp_path / "corpus") in lines[0] and "1 not audio (.txt)" in lines[0]
    assert not sink.exists()


@pytest.mark.slow  # a real run on Ray
def test_skipped_files_reach_the_summary_and_the_run_log(ray_address, format_corpus, tmp_path):
    summary = tokenize(tiny_run(format_corpus, tmp_path / "ds"))
    assert summary.ok and summary.inputs == len(AUDIO)
    assert {r: v["count"] for r, v in summary.skipped["by_reason"].items()} == SKIPPED
    assert "skipped 6 files" in summary.describe() and "2 hidden file" in summary.describe()
    [log] = (tmp_path / "ds" / "runs").glob("run-*.json")
    record = json.loads(log.read_text())
    assert record["skipped"]["total"] == 6
    assert record["skipped"]["by_reason"]["no audio stream (.mkv, probed)"]["examples"] == [
        str(format_corpus / "video.mkv")
    ]


def test_an_s3_listing_probes_through_the_object_store(format_corpus, s3_endpoint, s3_bucket):
    import s3fs

    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}}
    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    for name in ("a.oga", "sub/j.clip", "notes.txt", "mystery.dat"):
        fs.put(str(format_corpus / name), f"{s3_bucket}/corpus/{name}")
    skipped = SkippedFiles()
    items = list_directory(SourceConfig(path=f"s3://{s3_bucket}/corpus", storage_options=options), skipped)
    assert [i.location for i in items] == [
        f"s3://{s3_bucket}/corpus/a.oga",
        f"s3://{s3_bucket}/corpus/sub/j.clip",
    ]
    assert dict(skipped.counts) == {"not audio (.txt)": 1, "not a format FFmpeg opens (.dat, probed)": 1}
