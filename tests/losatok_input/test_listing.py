"""The one lister of audio folders (`losatok_input.listing`) and the `dir` source on it: whatever
FFmpeg opens is audio, every other file counted by reason; a source without audio is refused
naming where the listing looked and for what."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from losatok_input import listing
from losatok_input.config import SourceConfig
from losatok_input.decoder import load_audio, probe_audio
from losatok_input.listing import iter_audio_files
from losatok_input.rule import SkippedFiles
from losatok_input.sources import EmptySourceError, list_directory, list_inputs
from losatok_input.testing import FORMAT_CORPUS_AUDIO as AUDIO
from losatok_input.testing import FORMAT_CORPUS_SKIPPED as SKIPPED


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


def test_tars_are_listed_as_shards_when_asked(format_corpus, tmp_path):
    (tmp_path / "a.tar").write_bytes(b"")
    (tmp_path / "b.wav").write_bytes((format_corpus / "sub" / "i.wav").read_bytes())
    skipped = SkippedFiles()
    assert [(Path(f.location).name, f.tar) for f in iter_audio_files(str(tmp_path), tars=True)] == [
        ("a.tar", True),
        ("b.wav", False),
    ]
    assert [Path(f.location).name for f in iter_audio_files(str(tmp_path), skipped=skipped)] == ["b.wav"]
    assert dict(skipped.counts) == {"not audio (.tar)": 1}
    with pytest.raises(FileNotFoundError, match="absent"):
        next(iter_audio_files(str(tmp_path / "absent")))


def test_an_s3_folder_is_listed_page_by_page_in_key_order(s3_bucket, s3_endpoint, monkeypatch):
    import s3fs

    options = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    names = ["c/b/2.wav", "c/a/1.wav", "c/a/0.flac", "c/z.txt", "c/b/x/3.wav", "cc/other.wav"]
    for name in names:
        fs.pipe_file(f"{s3_bucket}/{name}", b"RIFF")
    pages = []
    original = listing.iter_files

    def paged(fs, root, page=1000):  # batches of 2: the async listing resumes where it stopped
        for info in original(fs, root, page=2):
            pages.append(info["name"])
            yield info

    monkeypatch.setattr(listing, "iter_files", paged)
    found = [
        i.location for i in list_directory(SourceConfig(path=f"s3://{s3_bucket}/c", storage_options=options))
    ]
    assert found == [f"s3://{s3_bucket}/{n}" for n in ["c/a/0.flac", "c/a/1.wav", "c/b/2.wav", "c/b/x/3.wav"]]
    assert len(pages) == 5  # every object under c/ (the .txt filtered after), nothing of cc/
