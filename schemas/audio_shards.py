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
from typing import Any

AUDIO_EXTENSIONS = ("wav", "flac", "mp3", "ogg", "opus", "m4a", "aac", "wma", "aiff", "aif", "webm")
SIDECAR_FIELDS = ("id", "text", "caption", "language", "speaker", "split", "tags")


def tar_members(data: bytes) -> dict[str, dict[str, bytes]]:
    """Members of a WebDataset tar grouped by key: {key: {extension: bytes}}, in tar order."""
    groups: dict[str, dict[str, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        for member in archive:
            if not member.isfile():
                continue
            directory, _, base = member.name.rpartition("/")
            stem, dot, extension = base.partition(".")
            if not dot or not stem:
                continue
            key = f"{directory}/{stem}" if directory else stem
            groups.setdefault(key, {})[extension.lower()] = archive.extractfile(member).read()
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
