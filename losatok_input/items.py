"""One input of a corpus (`InputItem`) and its key, the same on every run (`input_key`)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any


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
