"""Input contract: WebDataset audio shards, as public corpora ship them.

A tar whose members are `<key>.<audio extension>` (wav, flac, mp3, ...) with an optional
`<key>.json` sidecar (id, text, caption, language, speaker, split, tags; other scalar fields
kept as `extra`) or `<key>.txt` (the transcript). Keys may contain folders. Both the
tokenization pipeline and tokenizer training read inputs through this module.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from typing import Any, BinaryIO

AUDIO_EXTENSIONS = ("wav", "flac", "mp3", "ogg", "opus", "m4a", "aac", "wma", "aiff", "aif", "webm")
SIDECAR_FIELDS = ("id", "text", "caption", "language", "speaker", "split", "tags")


def iter_tar_samples(stream: BinaryIO) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Samples of a WebDataset tar read front to back: (key, {extension: bytes}) in tar order.

    The tar is streamed (`stream` needs only `read`), so one sample's members are in memory at a
    time; WebDataset writes a sample's members next to each other. A key whose members are
    split by another key's is yielded once per run of members (the caller decides; the
    pipeline keeps the first).
    """
    key: str | None = None
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=stream, mode="r|*") as archive:
        for member in archive:
            if not member.isfile():
                continue
            directory, _, base = member.name.rpartition("/")
            stem, dot, extension = base.partition(".")
            if not dot or not stem:
                continue
            name = f"{directory}/{stem}" if directory else stem
            if name != key:
                if key is not None:
                    yield key, members
                key, members = name, {}
            members[extension.lower()] = archive.extractfile(member).read()
    if key is not None:
        yield key, members


def tar_members(data: bytes) -> dict[str, dict[str, bytes]]:
    """Members of a WebDataset tar held in memory, grouped by key: {key: {extension: bytes}}."""
    groups: dict[str, dict[str, bytes]] = {}
    for key, members in iter_tar_samples(io.BytesIO(data)):
        groups.setdefault(key, {}).update(members)
    return groups


def audio_extension(members: dict[str, bytes]) -> str | None:
    """The extension of the group's audio member, or None for a group without audio."""
    return next((ext for ext in members if ext in AUDIO_EXTENSIONS), None)


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
