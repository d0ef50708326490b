"""Listing a folder or prefix of audio files, local or remote: the one lister every reader of
audio folders uses (the pipeline's `dir` source, tokenizer training, evaluation).

What counts as audio is `losatok_input.rule.audio_skip_reason`. On S3 the objects come page by
page (1000 keys a request) in key order; elsewhere the tree is walked one folder listing at a
time, folders and files in name order. Either way the order is the same on every run, and the
listing is streamed: the caller never holds more than a page.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import fsspec

from losatok_input.rule import AUDIO_EXTENSIONS, SkippedFiles, audio_skip_reason, file_extension
from losatok_storage.filesystem import is_local, retrying, unwrap, url_to_fs
from losatok_storage.paths import protocol_prefix


@dataclass(frozen=True)
class ListedFile:
    location: str  # as the caller spelled the root: a local path or a URL
    size: int  # bytes, from the listing
    tar: bool = False  # a WebDataset shard (only when asked for: `tars=True`)


def iter_audio_files(
    path: str,
    storage_options: dict[str, Any] | None = None,
    *,
    extensions: Collection[str] | None = AUDIO_EXTENSIONS,
    probe: bool = True,
    tars: bool = False,
    skipped: SkippedFiles | None = None,
) -> Iterator[ListedFile]:
    """The audio files under `path` (a folder, a prefix, or one file), streamed in a fixed order.

    `extensions` count as audio without opening the file (None or empty: FFmpeg's audio
    extensions); plainly non-audio extensions never do; any other file does when FFmpeg finds an
    audio stream in its header (`probe`). With `tars`, `.tar` files are listed too, marked as
    shards. Each file left out is counted in `skipped` by reason.
    Raises FileNotFoundError when `path` does not exist.
    """
    fs, root = url_to_fs(path, storage_options or {})
    if not fs.exists(root):
        raise FileNotFoundError(f"source directory {path} does not exist")
    protocol = protocol_prefix(path)
    for info in iter_files(fs, root):
        name = info["name"]
        if info.get("type") == "directory":
            continue
        location, size = protocol + name, int(info.get("size") or 0)
        if tars and file_extension(name) == "tar":
            yield ListedFile(location, size, tar=True)
            continue
        reason = audio_skip_reason(
            name, extensions or AUDIO_EXTENSIONS, (lambda p=name: probe_file(fs, p)) if probe else None
        )
        if reason is None:
            yield ListedFile(location, size)
        elif skipped is not None:
            skipped.add(reason, location)


def iter_files(fs: Any, root: str, page: int = 1000) -> Iterator[dict[str, Any]]:
    """Info dicts of the files under `root`, streamed (see the module's docstring)."""
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


def probe_file(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    """None if FFmpeg finds an audio stream in the file's header, else why not (`probe_audio`)."""
    from losatok_input.decoder import probe_audio  # torch: only when a file's extension does not decide

    if is_local(fs):
        return probe_audio(path)
    # small blocks: FFmpeg reads a few hundred kB of header, not the object
    with fs.open(path, "rb", block_size=256 * 1024) as handle:
        return probe_audio(handle)
