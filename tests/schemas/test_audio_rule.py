"""What counts as audio: FFmpeg's audio extensions, plainly non-audio ones, a probe for the rest."""

import pytest

from schemas.audio_shards import (
    AUDIO_EXTENSIONS,
    NOT_AUDIO_EXTENSIONS,
    SkippedFiles,
    audio_extension,
    audio_skip_reason,
    file_extension,
)


def never_probe():
    raise AssertionError("the extension decides: no file may be opened")


@pytest.mark.parametrize(
    "extension",
    [
        "wav",
        "flac",
        "mp3",
        "ogg",
        "oga",
        "opus",
        "m4a",
        "aac",
        "aiff",
        "aif",
        "webm",
        "mka",
        "wv",
        "ape",
        "ac3",
        "amr",
        "caf",
        "au",
        "spx",
        "wma",
        "w64",
        "tta",
        "mp2",
    ],
)
def test_ffmpeg_audio_extensions_count_without_opening_the_file(extension):
    assert extension in AUDIO_EXTENSIONS
    assert audio_skip_reason(f"/corpus/a/utt.{extension}", probe=never_probe) is None
    assert audio_skip_reason(f"s3://b/utt.{extension.upper()}", probe=never_probe) is None


def test_lists_do_not_overlap():
    assert not set(AUDIO_EXTENSIONS) & set(NOT_AUDIO_EXTENSIONS)


@pytest.mark.parametrize("name", ["/c/utt.txt", "/c/utt.json", "/c/a.TextGrid", "/c/cover.jpg", "/c/x.tar"])
def test_plainly_other_files_are_skipped_without_opening_them(name):
    assert audio_skip_reason(name, probe=never_probe) == f"not audio (.{file_extension(name)})"


@pytest.mark.parametrize("name", ["/c/.DS_Store", "/c/._utt.wav", "/c/.utt.wav.tmp-1234"])
def test_hidden_files_are_skipped(name):
    assert audio_skip_reason(name, probe=never_probe) == "hidden file"


def test_unknown_extensions_are_probed():
    calls = []

    def probe(answer):
        def run():
            calls.append(answer)
            return answer

        return run

    assert audio_skip_reason("/c/utt.audio", probe=probe(None)) is None
    assert (
        audio_skip_reason("/c/clip.mkv", probe=probe("no audio stream")) == "no audio stream (.mkv, probed)"
    )
    assert audio_skip_reason("/c/README", probe=probe("not a format FFmpeg opens")) == (
        "not a format FFmpeg opens (no extension, probed)"
    )
    assert calls == [None, "no audio stream", "not a format FFmpeg opens"]
    assert audio_skip_reason("/c/utt.audio") == "unknown extension, not probed (.audio)"


def test_a_narrower_extension_list_excludes_the_other_audio_extensions():
    assert audio_skip_reason("/c/a.WAV", extensions=(".wav",), probe=never_probe) is None
    assert audio_skip_reason("/c/a.oga", extensions=("wav",), probe=never_probe) == (
        "audio extension not selected (.oga)"
    )


def test_file_extension():
    assert file_extension("s3://b/dir.v2/utt.01.FLAC") == "flac"
    assert file_extension("/c/README") == file_extension("/c/.bashrc") == ""


def test_tar_audio_member_by_its_last_suffix():
    assert audio_extension({"json": b"", "mic1.oga": b"x"}) == "mic1.oga"
    assert audio_extension({"json": b"", "txt": b""}) is None


def test_skipped_files_count_by_reason_with_a_few_examples():
    skipped = SkippedFiles(examples_per_reason=2)
    for i in range(5):
        skipped.add("not audio (.txt)", f"/c/{i}.txt")
    skipped.add("hidden file", "/c/.DS_Store")
    assert skipped.total == 6
    assert skipped.to_dict() == {
        "total": 6,
        "by_reason": {
            "not audio (.txt)": {"count": 5, "examples": ["/c/0.txt", "/c/1.txt"]},
            "hidden file": {"count": 1, "examples": ["/c/.DS_Store"]},
        },
    }
    assert skipped.describe() == (
        "skipped 6 files: 5 not audio (.txt), e.g. /c/0.txt, /c/1.txt; 1 hidden file, e.g. /c/.DS_Store"
    )
    assert SkippedFiles().describe() == "skipped no files"
