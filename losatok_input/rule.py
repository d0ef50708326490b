"""Input contract: what counts as audio, and WebDataset audio shards as public corpora ship them.

What counts as audio is what FFmpeg can open. One rule, `audio_skip_reason`, serves every
reader of audio folders (the tokenization pipeline, tokenizer training, evaluation):
- a hidden file (`.DS_Store`, macOS `._x.wav` resource forks, our own temporary files) is not;
- a file whose extension is one of FFmpeg's audio containers (AUDIO_EXTENSIONS) is, without
  being opened (a broken one then fails to decode and lands in the failure ledger);
- a file whose extension is plainly something else (NOT_AUDIO_EXTENSIONS: text, sidecars,
  images, archives, arrays) is not, without being opened;
- any other file (an unknown extension, a video container, no extension) is opened by FFmpeg
  (`losatok_input.decoder.probe_audio`, a header read): audio if it holds an audio stream.
Every file left out is counted by reason in `SkippedFiles`, with a few examples named.

A WebDataset audio shard is a tar whose members are `<key>.<audio extension>` with an
optional `<key>.json` sidecar (id, text, caption, language, speaker, split, tags; other scalar
fields kept as `extra`) or `<key>.txt` (the transcript). Keys may contain folders.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from losatok_storage import tario

# FFmpeg demuxers for audio, by their usual extensions (`ffmpeg -h demuxer=NAME`, and the
# formats FFmpeg detects by content: wav, aiff, caf, au, amr, w64, voc, wv, ...).
AUDIO_EXTENSIONS = (
    # PCM and lossless
    "wav", "wave", "bwf", "rf64", "w64", "flac", "aiff", "aif", "aifc", "afc", "caf", "au",
    "snd", "voc", "sph", "nist", "sf", "ircam", "wv", "ape", "tta", "tak", "shn", "ofr", "ofs",
    "mlp", "thd", "dsf", "dff", "al", "ul",
    # MPEG audio and MP4/3GPP
    "mp3", "mp2", "mp1", "mpa", "m2a", "mpga", "aac", "adts", "m4a", "m4b", "mp4", "3gp",
    "3g2", "loas", "latm",
    # Ogg, Matroska/WebM
    "ogg", "oga", "opus", "spx", "mka", "webm",
    # speech codecs and telephony
    "amr", "awb", "gsm", "g722", "g729", "sln", "qcp", "sbc", "msbc", "c2",
    # other lossy and broadcast
    "ac3", "eac3", "ec3", "dts", "dtshd", "wma", "asf", "xwma", "ra", "rm", "mpc", "vqf",
    "oma", "omg", "aa3", "aptx", "aptxhd", "dfpwm", "hca", "adx", "ast", "brstm", "bcstm",
    "bfstm", "xa", "vag",
)  # fmt: skip
# Plainly not audio: skipped without opening them (sidecars, text, images, arrays, archives,
# code). MIDI is here because FFmpeg does not synthesise it.
NOT_AUDIO_EXTENSIONS = (
    "txt", "json", "jsonl", "ndjson", "csv", "tsv", "lab", "textgrid", "srt", "vtt", "ass",
    "ssa", "lrc", "trn", "stm", "ctm", "rttm", "uem", "scp", "ark", "lst", "list", "md",
    "rst", "html", "htm", "xml", "yaml", "yml", "toml", "ini", "cfg", "conf", "log", "pdf",
    "doc", "docx", "jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp", "svg", "ico",
    "heic", "npy", "npz", "pt", "pth", "ckpt", "safetensors", "bin", "pkl", "pickle", "h5",
    "hdf5", "parquet", "arrow", "feather", "tar", "zip", "gz", "tgz", "bz2", "xz", "zst",
    "7z", "rar", "py", "sh", "ipynb", "mid", "midi", "sha256", "md5", "sha1", "license",
    "pem", "db", "sqlite", "lock", "tmp", "part", "crdownload",
)  # fmt: skip
SIDECAR_FIELDS = ("id", "text", "caption", "language", "speaker", "split", "tags")
HIDDEN = "hidden file"


def file_extension(name: str) -> str:
    """Lower-case extension after the last dot of the base name (`""` when it has none)."""
    base = name.rstrip("/").rsplit("/", 1)[-1].lstrip(".")
    stem, dot, extension = base.rpartition(".")
    return extension.lower() if dot and stem else ""


def audio_skip_reason(
    name: str,
    extensions: Collection[str] = AUDIO_EXTENSIONS,
    probe: Callable[[], str | None] | None = None,
) -> str | None:
    """None if the file named `name` (a path or URL) counts as audio, else why it does not.

    `extensions` are accepted without opening the file (a narrower list excludes the other
    audio extensions by choice); `probe` opens the file and returns None when FFmpeg finds an
    audio stream, else its reason (see `losatok.audio.probe_audio`). Without a probe, a file
    of unknown extension is skipped. Reasons are short and name the extension, so that they
    can be counted: "not audio (.txt)", "no audio stream (.mkv, probed)".
    """
    if name.rstrip("/").rsplit("/", 1)[-1].startswith("."):
        return HIDDEN
    extension = file_extension(name)
    shown = f".{extension}" if extension else "no extension"
    wanted = {e.lower().lstrip(".") for e in extensions}
    if extension in wanted:
        return None
    if extension in AUDIO_EXTENSIONS:
        return f"audio extension not selected ({shown})"
    if extension in NOT_AUDIO_EXTENSIONS:
        return f"not audio ({shown})"
    if probe is None:
        return f"unknown extension, not probed ({shown})"
    why = probe()
    return None if why is None else f"{why} ({shown}, probed)"


@dataclass
class SkippedFiles:
    """Files left out of a listing, counted by reason, with the first few of each named."""

    examples_per_reason: int = 3
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, location: str, count: int = 1) -> None:
        self.counts[reason] += count
        named = self.examples.setdefault(reason, [])
        if len(named) < self.examples_per_reason:
            named.append(location)

    def update(self, other: SkippedFiles | dict[str, Any]) -> None:
        """Add another tally's counts and examples (a `SkippedFiles` or its `to_dict()`)."""
        tally = other.to_dict() if isinstance(other, SkippedFiles) else other
        for reason, entry in tally.get("by_reason", {}).items():
            self.counts[reason] += entry["count"]
            named = self.examples.setdefault(reason, [])
            named.extend(entry["examples"][: max(0, self.examples_per_reason - len(named))])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        """`{"total": n, "by_reason": {reason: {"count": c, "examples": [...]}}}`, most first."""
        return {
            "total": self.total,
            "by_reason": {
                reason: {"count": count, "examples": list(self.examples[reason])}
                for reason, count in self.counts.most_common()
            },
        }

    def describe(self) -> str:
        """One line: "skipped 3 files: 2 not audio (.txt), e.g. a.txt; 1 hidden file, e.g. .x"."""
        if not self.total:
            return "skipped no files"
        parts = [
            f"{count} {reason}, e.g. {', '.join(self.examples[reason])}"
            for reason, count in self.counts.most_common()
        ]
        return f"skipped {self.total} files: " + "; ".join(parts)


def iter_shard_samples(
    stream: BinaryIO, skipped: SkippedFiles | None = None, where: str = ""
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Samples of a WebDataset audio shard read front to back: (key, {extension: bytes}) in tar
    order, through the storage layer's lenient reader (`losatok_storage.tario.iter_tar_samples`
    with `strict=False`; see there). A file member that cannot belong to a sample is counted in
    `skipped` by reason, named `<where>#<member>`.
    """

    def stray(member: str) -> None:
        if skipped is not None:
            base = member.rpartition("/")[2]
            reason = HIDDEN if base.startswith(".") else "tar member without an extension"
            skipped.add(reason, f"{where}#{member}")

    for sample in tario.iter_tar_samples(stream, where or "tar", strict=False, on_stray=stray):
        key = sample.pop("__key__")
        yield key, sample  # type: ignore[misc]


def tar_members(data: bytes) -> dict[str, dict[str, bytes]]:
    """Members of a WebDataset tar held in memory, grouped by key: {key: {extension: bytes}}."""
    groups: dict[str, dict[str, bytes]] = {}
    for key, members in iter_shard_samples(io.BytesIO(data)):
        groups.setdefault(key, {}).update(members)
    return groups


def audio_member(
    members: dict[str, bytes], probe: Callable[[bytes], str | None] | None = None
) -> tuple[str | None, str | None]:
    """(extension of the sample's audio member, None), or (None, why the sample has none).

    The rule of `audio_skip_reason`, applied to a tar sample's members: a member whose last
    extension is one of FFmpeg's audio containers is the audio (`"flac"`, `"mic1.flac"`);
    failing that, a member of unknown extension is taken when `probe` (its bytes -> None if
    FFmpeg finds an audio stream, e.g. `losatok_input.decoder.probe_audio` over a BytesIO) says so.
    The reason names the extensions the sample had: "tar sample without audio (.json, .txt)".
    """
    found = next((ext for ext in members if ext.rsplit(".", 1)[-1] in AUDIO_EXTENSIONS), None)
    if found is not None:
        return found, None
    if probe is not None:
        for ext in members:
            if ext.rsplit(".", 1)[-1] not in NOT_AUDIO_EXTENSIONS and probe(members[ext]) is None:
                return ext, None
    shown = ", ".join(f".{ext}" for ext in sorted(members)) or "no members"
    return None, f"tar sample without audio ({shown})"


def audio_samples(
    samples: Iterable[tuple[str, dict[str, bytes]]],
    where: str,
    skipped: SkippedFiles | None = None,
    probe: Callable[[bytes], str | None] | None = None,
) -> Iterator[tuple[str, str, dict[str, bytes]]]:
    """(key, audio extension, members) of each sample of a tar that holds audio (`audio_member`),
    the first run of a key that repeats; a sample without audio is counted in `skipped`, named
    `<where>#<key>`. The one rule every reader of WebDataset audio shards applies."""
    seen: set[str] = set()
    for key, members in samples:
        if key in seen:
            continue
        seen.add(key)
        extension, why = audio_member(members, probe)
        if extension is not None:
            yield key, extension, members
        elif skipped is not None:
            skipped.add(why, f"{where}#{key}")


def sidecar_metadata(members: dict[str, bytes]) -> dict[str, Any]:
    """Metadata of a sample from its json sidecar (known fields, the rest as extra) or txt.

    Raises ValueError (or UnicodeDecodeError) for a sidecar that is not valid JSON or UTF-8.
    """
    meta: dict[str, Any] = {}
    if "json" in members:
        values = json.loads(members["json"])
        meta = {k: values[k] for k in SIDECAR_FIELDS if values.get(k) is not None}
        extra = {
            k: v
            for k, v in values.items()
            if k not in SIDECAR_FIELDS and isinstance(v, (str, int, float, bool))
        }
        if extra:
            meta["extra"] = extra
    elif "txt" in members:
        meta["text"] = members["txt"].decode("utf-8").strip()
    return meta


def __getattr__(name: str) -> Any:
    if name == "iter_tar_samples":  # its name in `schemas.audio_shards`, kept for one release
        import warnings

        warnings.warn(
            "iter_tar_samples of the audio rule is now losatok_input.rule.iter_shard_samples; "
            "the old name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return iter_shard_samples
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
