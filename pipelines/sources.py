"""Listing a corpus into input items with deterministic keys."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec

from pipelines.config import SourceConfig
from schemas.audio_shards import AUDIO_EXTENSIONS, SkippedFiles, audio_skip_reason
from schemas.storage import is_local, retrying, unwrap, url_to_fs


@dataclass(frozen=True)
class InputItem:
    """One audio input: a file, or a span of one (manifest start/end, seconds)."""

    key: str  # deterministic and WebDataset-safe: letters, digits, '-' and '_' only
    location: str  # local path or s3:// URI
    start: float | None = None
    end: float | None = None
    size_bytes: int = 0  # file size, for balancing work units
    metadata: dict[str, Any] = field(default_factory=dict)  # carried through to the samples
    container: str | None = None  # "tar": a WebDataset shard whose audio members are the inputs


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def input_key(
    location: str, start: float | None = None, end: float | None = None, given_id: str | None = None
) -> str:
    """A key that is the same on every run for the same input.

    A readable slug of the id or file name, plus a hash of the full location and span so two
    inputs never collide (two `a.wav` in different folders, two spans of one file).
    """
    stem = given_id or location.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    slug = _UNSAFE.sub("_", stem).strip("_")[:48] or "input"
    digest = hashlib.sha1(f"{given_id}|{location}|{start}|{end}".encode()).hexdigest()[:12]
    return f"{slug}-{digest}"


def list_directory(config: SourceConfig, skipped: SkippedFiles | None = None) -> list[InputItem]:
    """Every audio file under `config.path` (see iter_directory)."""
    return list(iter_directory(config, skipped))


def iter_directory(config: SourceConfig, skipped: SkippedFiles | None = None) -> Iterator[InputItem]:
    """Audio files under `config.path`, streamed: the driver never holds the whole listing.

    On S3 the objects come page by page (1000 keys a request) in key order; elsewhere the tree
    is walked one folder listing at a time, folders and files in name order. Either way the
    order is the same on every run. What counts as audio is
    `schemas.audio_shards.audio_skip_reason`: `config.extensions` without opening the file,
    plainly non-audio extensions never, any other file when FFmpeg finds an audio stream in its
    header (`config.probe`). Each file left out is counted in `skipped` by reason.
    """
    fs, root = url_to_fs(config.path, config.storage_options)
    if not fs.exists(root):
        raise FileNotFoundError(f"source directory {config.path} does not exist")
    protocol = config.path.split("://", 1)[0] + "://" if "://" in config.path else ""
    for info in _iter_files(fs, root):
        path = info["name"]
        if info.get("type") == "directory":
            continue
        location = protocol + path if protocol else path
        reason = audio_skip_reason(
            path,
            config.extensions or AUDIO_EXTENSIONS,
            (lambda p=path: _probe(fs, p)) if config.probe else None,
        )
        if reason is not None:
            if skipped is not None:
                skipped.add(reason, location)
            continue
        yield InputItem(input_key(location), location, size_bytes=int(info.get("size") or 0))


def _iter_files(fs: Any, root: str, page: int = 1000) -> Iterator[dict[str, Any]]:
    """Info dicts of the files under `root`, streamed (see iter_directory)."""
    raw = unwrap(fs)
    if hasattr(raw, "_call_s3") and hasattr(raw, "split_path"):  # s3fs: list_objects_v2 pages, flat
        bucket, prefix, _ = raw.split_path(root)
        prefix = f"{prefix.rstrip('/')}/" if prefix else ""
        after = ""  # each page asks for the keys after the last one seen, so a retried page resumes
        while True:
            request = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page}
            if after:
                request["StartAfter"] = after
            reply = retrying(fs).call_s3_page(request)
            contents = reply.get("Contents") or []
            for entry in contents:
                yield {"name": f"{bucket}/{entry['Key']}", "size": entry.get("Size", 0), "type": "file"}
            if not reply.get("IsTruncated") or not contents:
                return
            after = contents[-1]["Key"]
    for _, folders, files in fs.walk(root, detail=True):
        ordered = sorted(folders.items())  # walk recurses into `folders` in its order: make it sorted
        folders.clear()
        folders.update(ordered)
        for _, info in sorted(files.items()):
            yield info


def _probe(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    from losatok.audio import probe_audio  # torch: only when a file's extension does not decide

    if is_local(fs):
        return probe_audio(path)
    # small blocks: FFmpeg reads a few hundred kB of header, not the object
    with fs.open(path, "rb", block_size=256 * 1024) as handle:
        return probe_audio(handle)


class EmptySourceError(ValueError):
    """A source that holds no input: the message says where the listing looked and for what."""


def list_tar_shards(config: SourceConfig) -> list[InputItem]:
    """Every `.tar` under `config.path`: each is one input container (and one unit of work)."""
    fs, root = url_to_fs(config.path, config.storage_options)
    if not fs.exists(root):
        raise FileNotFoundError(f"source {config.path} does not exist")
    protocol = config.path.split("://", 1)[0] + "://" if "://" in config.path else ""
    paths = [root] if root.endswith(".tar") else sorted(p for p in fs.find(root) if p.endswith(".tar"))
    return [
        InputItem(
            input_key(protocol + path), protocol + path, size_bytes=int(fs.size(path) or 0), container="tar"
        )
        for path in paths
    ]


def source_label(config: SourceConfig) -> str:
    """The source as the dataset records it: an absolute local path, or the URL; no trailing '/'.

    Two spellings of one folder (`corpus`, `./corpus/`) are one source, so what left it is
    reported as missing rather than the whole folder read as a new source.
    """
    path = config.path
    if "://" in path and not path.startswith("file://"):
        return path.rstrip("/")
    return os.path.abspath(path.removeprefix("file://")).rstrip("/") or "/"


def list_inputs(config: SourceConfig, skipped: SkippedFiles | None = None) -> list[InputItem]:
    """Input items of a source, in a deterministic order; keys are unique (checked). Holds the
    whole list: for tests and small sources; runs stream `iter_inputs` into the plan."""
    skipped = skipped if skipped is not None else SkippedFiles()
    items = list(iter_inputs(config, skipped))
    if not items:
        raise EmptySourceError(nothing_found(config, skipped))
    seen: dict[str, str] = {}
    for item in items:
        if item.key in seen:
            raise ValueError(f"inputs {seen[item.key]} and {item.location} share the key {item.key}")
        seen[item.key] = item.location
    return items


def nothing_found(config: SourceConfig, skipped: SkippedFiles) -> str:
    """One line: where the listing looked, for what, and what it left out."""
    if config.kind == "wds":
        return f"no audio source: no WebDataset shards (*.tar) under {config.path}"
    if config.kind != "dir":  # a manifest of any flavour: it names its inputs
        return f"no audio source: the {config.kind} source {config.path} lists no inputs"
    wanted = [e.lower().lstrip(".") for e in config.extensions or AUDIO_EXTENSIONS]
    if tuple(wanted) == AUDIO_EXTENSIONS:  # the commonest first, not the whole list
        shown = f"{len(wanted)} FFmpeg audio extensions: wav, flac, mp3, ogg, opus, m4a, ..."
    else:
        shown = f"extensions {', '.join(wanted)}"
    probed = ", and other files that FFmpeg opens as audio" if config.probe else ""
    return (
        f"no audio source: found no audio file under {config.path} (looked for {shown}{probed}); "
        f"{skipped.describe()}"
    )


def iter_inputs(config: SourceConfig, skipped: SkippedFiles | None = None) -> Iterator[InputItem]:
    """Input items of a source, streamed in a deterministic order (the plan checks key uniqueness).

    Files a "dir" listing leaves out are counted in `skipped`.
    """
    if config.kind == "dir":
        return iter_directory(config, skipped)
    if config.kind in ("manifest", "nemo"):
        from pipelines.manifest_source import iter_manifest_items

        return iter_manifest_items(config)
    if config.kind == "hf_parquet":
        from pipelines.hf_parquet_source import iter_row_groups

        return iter_row_groups(config)
    if config.kind == "lhotse":
        from pipelines.lhotse_source import iter_cuts

        return iter_cuts(config)
    if config.kind == "wds":
        return iter(list_tar_shards(config))
    raise ValueError(
        f"unknown source kind {config.kind!r}; expected 'dir', 'manifest', 'nemo', 'lhotse', 'wds' or 'hf_parquet'"
    )
