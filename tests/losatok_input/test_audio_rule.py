"""What counts as audio: FFmpeg's audio extensions, plainly non-audio ones, a probe for the rest."""

import pytest

from losatok_input.rule import (
    AUDIO_EXTENSIONS,
    NOT_AUDIO_EXTENSIONS,
    SkippedFiles,
    audio_member,
    audio_skip_reason,
    file_extension,
    iter_shard_samples,
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
    assert audio_member({"json": b"", "mic1.oga": b"x"}) == ("mic1.oga", None)
    assert audio_member({"txt": b"", "json": b""}) == (None, "tar sample without audio (.json, .txt)")


def test_a_tar_member_of_unknown_extension_is_probed_and_sidecars_never_are():
    probed = []

    def probe(data: bytes) -> str | None:
        probed.append(data)
        return None if data == b"audio" else "not a format FFmpeg opens"

    assert audio_member({"json": b"{}", "clip": b"audio"}, probe) == ("clip", None)
    assert audio_member({"json": b"{}", "blob": b"junk"}, probe) == (
        None,
        "tar sample without audio (.blob, .json)",
    )
    assert probed == [b"audio", b"junk"]  # the json sidecars were never handed to FFmpeg


def test_stray_tar_members_are_counted_by_reason():
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in ("a.flac", "._a.flac", "README", "sub/b.json"):
            info = tarfile.TarInfo(name)
            info.size = 1
            archive.addfile(info, io.BytesIO(b"x"))
    buffer.seek(0)
    skipped = SkippedFiles()
    keys = [key for key, _ in iter_shard_samples(buffer, skipped, "s3://b/part.tar")]
    assert keys == ["a", "sub/b"]
    assert dict(skipped.counts) == {"hidden file": 1, "tar member without an extension": 1}
    assert skipped.examples["hidden file"] == ["s3://b/part.tar#._a.flac"]


def test_skipped_tallies_merge_from_their_dicts():
    first, second = SkippedFiles(examples_per_reason=2), SkippedFiles(examples_per_reason=2)
    first.add("not audio (.txt)", "a.txt")
    for name in ("b.txt", "c.txt"):
        second.add("not audio (.txt)", name)
    second.add("hidden file", ".x")
    first.update(second.to_dict())
    assert first.counts == {"not audio (.txt)": 3, "hidden file": 1}
    assert first.examples == {"not audio (.txt)": ["a.txt", "b.txt"], "hidden file": [".x"]}


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
